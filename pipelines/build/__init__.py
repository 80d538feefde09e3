"""The build pipeline: Ray Data from the raw lake to curated Parquet (`lake/curated/<build id>/`).

    trajforge build [--lake ./lake] [--full] [--org ORG]
    ray job submit --working-dir . -- python -m pipelines.build --lake /shared/lake

`job.py` runs it; `sources.py` indexes the raw lake; `process.py` is the Ray Data stage (with
`derive.py`, `field_rows.py`, `loop_rows.py` for what rows say, the kernel's stitcher, scorer and
redactor); `event_rows.py` makes the telemetry events' rows and `dataset_stage.py` (with `dataset_rows.py`) the
public code-edit datasets' (`lake/processed/datasets/`), whose test task ids
`held_out.py` reads so that teacher and actor runs of them become split test; `embed_stage.py` embeds and tags; `dedup.py` finds duplicates; `output.py` writes the
tables; `manifest.py` describes and publishes the build. The tables' schemas are the contract in
`trajforge/contracts/curated.py`.
"""

from pipelines.build.job import run_build
from pipelines.build.settings import BuildSettings, load_build_settings

__all__ = ["BuildSettings", "load_build_settings", "main", "run_build"]


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.build`: the options of `trajforge build`, its errors named after the module."""
    from trajforge.cli import build_cmd
    from trajforge.cli.common import module_main
    from trajforge.cli.main import COMMANDS

    return module_main("pipelines.build", COMMANDS["build"][1], build_cmd.add_arguments, build_cmd.config_roots, build_cmd.run_command, argv)
