"""Schema-first synthetic records (seed 001, DataGems) on Ray: one LLM call per record, per-peer ranges, progress,
resume, JSON/CSV export. The command is `cli.py` (`trajforge synth-records`, `python -m pipelines.synth_records`);
the job's files are described in `store.py`."""
