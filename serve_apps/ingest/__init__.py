"""The `ingest` Serve application: the Central Command protocol over HTTP (seed 004)."""
