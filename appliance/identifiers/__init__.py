"""Identifiers of real patients: national ID checksums, the offline presidio recognizers, phone and date forms.

Shared by the record readers, the generator's pseudonymizer, the leakage
screen and the demo export, so that each finds and forms identifiers the same
way.
"""
