"""`trajforge rollout`: student rollouts, the generation actors running the actor loop (actors/rollout.py)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from actors.rollout import add_arguments as rollout_arguments

    rollout_arguments(parser)


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    from actors.rollout import config_roots as rollout_roots

    return rollout_roots(args)


def run(args: argparse.Namespace) -> int:
    from actors.rollout import run_command

    return run_command(args)
