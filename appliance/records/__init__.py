"""Records: export readers, the encrypted record store, ingest and the demo export."""
