"""`trajforge synth-rules`: synthetic ast-grep tasks verified in the sandbox (pipelines/synth_rules.py)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.synth_rules import add_arguments as job_arguments

    job_arguments(parser)


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    from pipelines.synth_rules import config_roots as job_roots

    return job_roots(args)


def run(args: argparse.Namespace) -> int:
    from pipelines.synth_rules import run_command

    return run_command(args)
