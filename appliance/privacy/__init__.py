"""Leakage screen: the keyed index of real notes, detectors in a registry, canaries, the report."""
