"""`appliance` commands of the annotate stage."""

from __future__ import annotations
