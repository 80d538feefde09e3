"""The `trajforge` command: one entry point; each subcommand is a module (`main.COMMANDS`): its own here, or a Ray
job's `python -m` module (pipelines.*, actors.rollout, learner.train)."""
