"""`appliance` commands of the ner stage."""

from __future__ import annotations
