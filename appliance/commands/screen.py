"""`appliance` commands of the screen stage."""

from __future__ import annotations
