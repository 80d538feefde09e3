"""Ctrl-C during a run: Ray Train aborts it and raises SystemExit(1) out of `fit`, which left the command silent with status 1."""

from __future__ import annotations

import logging

import pytest

from learner.checkpoint import STATE_FILE, checkpoints_dir
from learner.train import fit_run
from trajforge.errors import TrajforgeError


class Trainer:
    def __init__(self, error: BaseException):
        self.error = error

    def fit(self):
        raise self.error


def test_an_interrupted_run_says_where_it_resumes_how_to_export_it_and_ends_as_an_interrupt(tmp_path, caplog):
    folder = checkpoints_dir(tmp_path) / "step-000002"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text('{"step": 2}')
    with caplog.at_level(logging.WARNING, logger="learner.train"), pytest.raises(KeyboardInterrupt):
        fit_run(Trainer(SystemExit(1)), tmp_path)
    assert "training interrupted; the same command resumes the run from its last checkpoint" in caplog.text and "step-000002" in caplog.text
    assert f"with --set learner.train.max_steps=2 it exports that checkpoint to {tmp_path / 'hf'}" in caplog.text


def test_an_interrupt_before_the_first_checkpoint_says_the_run_starts_over(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="learner.train"), pytest.raises(KeyboardInterrupt):
        fit_run(Trainer(SystemExit(1)), tmp_path)
    assert "no checkpoint yet, so the same command starts it over" in caplog.text


def test_a_workers_failure_is_one_line_with_its_message(tmp_path):
    with pytest.raises(TrajforgeError, match="^training failed: RuntimeError: boom$"):
        fit_run(Trainer(RuntimeError("Ray wrapped it\nRuntimeError: boom")), tmp_path)


@pytest.mark.parametrize("polled", [False, True], ids=["actor-error", "health-check"])
def test_a_worker_whose_process_died_is_named_with_where_the_run_resumes_and_how_to_export(tmp_path, polled):
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

    folder = checkpoints_dir(tmp_path) / "step-000002"
    folder.mkdir(parents=True)
    (folder / STATE_FILE).write_text('{"step": 2}')
    # `kill -9` of rank 1: rank 0 then fails on the closed connection, and Ray's message ends with that line
    died = WorkerGroupError("[Rank 1]: the actor is dead\n[Rank 0]: RuntimeError: gloo: Connection reset by peer",
                            {1: WorkerHealthCheckFailedError("A worker health check failed.", failure=ActorDiedError()) if polled
                             else ActorDiedError(), 0: RuntimeError("gloo: Connection reset by peer")})
    with pytest.raises(TrajforgeError) as raised:
        fit_run(Trainer(died), tmp_path)
    message = str(raised.value)
    assert message.startswith("training failed: the process of worker rank 1 died") and "Connection reset" not in message
    assert f"resumes the run from its last checkpoint, {folder}" in message and "learner.workers.max_failures" in message
    assert "--set learner.train.max_steps=2 it exports that checkpoint" in message
