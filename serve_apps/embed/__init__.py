"""The `embed` Serve application: 384-dim sentence embeddings over HTTP (seed 004, POST /v1/embed)."""
