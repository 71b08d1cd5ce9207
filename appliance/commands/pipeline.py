"""`appliance` commands of the pipeline stage."""

from __future__ import annotations
