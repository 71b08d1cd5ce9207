"""Security: keys, authenticated encryption, the audit log and the egress guard."""
