"""`trajforge teacher`: the teacher SRL loop over synthetic tasks (pipelines/teacher_srl.py)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.teacher_srl import add_arguments as job_arguments

    job_arguments(parser)


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    from pipelines.teacher_srl import config_roots as job_roots

    return job_roots(args)


def run(args: argparse.Namespace) -> int:
    from pipelines.teacher_srl import run_command

    return run_command(args)
