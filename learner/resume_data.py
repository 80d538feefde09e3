"""The data settings a checkpoint was made with, and the refusal to resume it with other ones.

The data position a checkpoint records (the stream's cursor) means the same rows only with the same
builds, `seq_len`, `window`, `seed` and rows per optimizer step. Every checkpoint's state file keeps
them (`data`) and their digest (`data_signature`, which the workers compare when they load it). The
driver compares them before Ray starts, reading the state file of the checkpoint the start would
resume from, and names what differs. The rows per step depend on the worker count, which
`learner.workers.device=auto` knows only once Ray is up: that part is compared again then, still
before any worker starts. Checkpoints made before the record have only the digest, which is compared
then too, and cannot name which setting differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from learner import checkpoint
from learner.settings import LearnerSettings
from learner.sources import Source
from trajforge.errors import ConfigError

LABELS = {"builds": "learner.data.builds", "seq_len": "learner.data.seq_len", "window": "learner.data.window", "seed": "learner.data.seed",
          "rows_per_step": "the rows per step (learner.train.micro_batch_size x gradient_accumulation_steps x workers)"}


def data_record(settings: LearnerSettings, sources: list[Source], world_size: int | None) -> dict[str, Any]:
    """What the data position depends on; `world_size` None leaves the rows per step out (not known yet)."""
    data, train = settings.data, settings.train
    record: dict[str, Any] = {"builds": [{"build_id": s.build_id, "weight": s.weight, "train_rows": s.train_rows} for s in sources],
                              "seq_len": data.seq_len, "window": data.window, "seed": data.seed}
    if world_size is not None:
        record["rows_per_step"] = train.micro_batch_size * train.gradient_accumulation_steps * world_size
    return record


def data_signature(record: dict[str, Any]) -> str:
    """The record's digest (the form checkpoints have carried from the start, so older ones still resume)."""
    parts = [[(b["build_id"], b["weight"], b["train_rows"]) for b in record["builds"]], record["seq_len"], record["window"],
             record["seed"], record["rows_per_step"]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _shown(key: str, value: Any) -> str:
    if key == "builds":
        return "[" + ", ".join(f"{b['build_id']} (weight {b['weight']:g}, {b['train_rows']} train rows)" for b in value) + "]"
    return str(value)


def check_resume_data(settings: LearnerSettings, sources: list[Source], world_size: int | None) -> None:
    """Refuse, in one line naming the settings that differ, a start whose checkpoint was made with other data settings."""
    folder = checkpoint.resume_point(settings.run_dir, settings.resume)
    if folder is None:
        return
    try:
        state = checkpoint.read_state(folder)
    except (OSError, ValueError):  # a folder named in learner.resume is checked (and refused) by `prepare`
        return
    current = data_record(settings, sources, world_size)
    recorded = state.get("data")
    if isinstance(recorded, dict):
        differences = [f"{LABELS[key]} was {_shown(key, recorded.get(key))}, is now {_shown(key, value)}"
                       for key, value in current.items() if recorded.get(key) != value]
    elif world_size is None or state.get("data_signature") in (None, data_signature(current)):
        return
    else:
        differences = ["one of learner.data.builds, seq_len, window, seed or the rows per step (learner.train.micro_batch_size x "
                       "gradient_accumulation_steps x workers) differs (this checkpoint records only their digest)"]
    if differences:
        which = "the run's latest checkpoint " if settings.resume == "auto" else ""
        raise ConfigError(f"learner.resume={settings.resume}: {which}{folder} was made with other data settings, so its data position "
                          f"does not continue this stream: {'; '.join(differences)}. Restore them to resume, or start the run over "
                          "with learner.resume=never (or a new learner.run_name)")
