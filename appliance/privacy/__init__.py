"""Leakage screen: identifiers, n-gram index, near duplicates, distance to closest record."""
