"""Records: export readers (a registry), the encrypted record store, ingest, stats, the held-out split."""
