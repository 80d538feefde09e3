"""How a run that did not finish ends: one line saying why, and where the same command goes on from.

`fit_run` calls Ray Train's `fit`. A worker's exception (Ray wraps it) becomes its own message; a worker
whose process died (killed, out of memory, crashed) is named as such, not by the connection error the
surviving workers then fail with; Ctrl-C, which Ray Train turns into an abort of the run and a
SystemExit(1) out of `fit`, becomes a KeyboardInterrupt (status 130). Both say which checkpoint the same
command resumes from, and how to export that checkpoint as a Hugging Face model instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("learner.train")


def resume_hint(run_dir: Path) -> str:
    """Where the same command goes on from, and how that checkpoint becomes a Hugging Face model without training on."""
    from learner.checkpoint import complete_checkpoints, read_state

    found = complete_checkpoints(run_dir)
    if not found:
        return "the run has no checkpoint yet, so the same command starts it over"
    try:
        step = int(read_state(found[-1])["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the same command resumes the run from its last checkpoint, {found[-1]}"
    return (f"the same command resumes the run from its last checkpoint, {found[-1]} (with --set learner.train.max_steps={step} it "
            f"exports that checkpoint to {run_dir / 'hf'} instead of training on)")


def dead_workers(exc: BaseException) -> list[int]:
    """The ranks of the workers whose process died (Ray Train's WorkerGroupError names each worker's failure)."""
    from ray.exceptions import RayActorError

    failures = getattr(exc, "worker_failures", None) or {}
    # a failed health check (Ray Train's poll of a worker whose actor is gone) carries the actor's error
    return sorted(rank for rank, error in failures.items()
                  if isinstance(error, RayActorError) or isinstance(getattr(error, "health_check_failure", None), RayActorError))


def root_message(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("TrajforgeError: ", "LakeCorruption: ", "ConfigError: "):
        if marker in text:
            return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def fit_run(trainer, run_dir: Path) -> None:
    """`trainer.fit()`, its failures one line (see the module's docstring)."""
    from learner.checkpoint import failure

    try:
        trainer.fit()
    except Exception as exc:
        died = dead_workers(exc)
        if died:
            ranks = ", ".join(str(rank) for rank in died)
            raise failure(f"training failed: the process of worker rank {ranks} died (killed, out of memory, or crashed: Ray's log of "
                          f"that worker says which), and the run stopped with it; {resume_hint(run_dir)}. learner.workers.max_failures "
                          "lets Ray Train restart the workers from the last checkpoint by itself", exc, run_dir) from exc
        raise failure(f"training failed: {root_message(exc)}", exc, run_dir) from exc
    except SystemExit as exc:
        log.warning("training interrupted; %s", resume_hint(run_dir))
        raise KeyboardInterrupt from exc
