"""`trajforge train`: supervised fine-tuning with DeepSpeed ZeRO-3 on Ray Train (learner/train.py), or `--estimate`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from learner.train import add_arguments as learner_arguments

    learner_arguments(parser)


def config_roots(args: argparse.Namespace) -> tuple[str, ...]:
    from learner.train import config_roots as learner_roots

    return learner_roots(args)


def run(args: argparse.Namespace) -> int:
    from learner.train import run_command

    return run_command(args)
