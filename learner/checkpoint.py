"""Checkpoints: DeepSpeed's sharded format every N steps, the consolidated Hugging Face export at the end.

`<run>/checkpoints/step-000050/` holds every worker's ZeRO shards (parameters, gradients' fp32
master copy, optimizer state), the scheduler, and `trajforge_state.json`: the step, the data cursor,
the tokens seen and the size of every file the save wrote (a start refuses a checkpoint damaged since,
naming the file: `check_resume`). That file is written last, by rank 0, after every worker has saved and fsync'd
its shards, so a folder without it is an interrupted save and is never resumed from; pruning an old
checkpoint removes it first. `<run>/hf/` is a plain Hugging Face model directory (weights gathered
from the shards, the tokenizer, `trajforge_export.json`), what a generation actor loads with
`load_trained`; it is written in a temporary folder beside it (`trajforge.atomic.staged_dir`), fsync'd
and renamed into place, so a kill midway leaves the previous export (or none), never a partial one.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from trajforge.atomic import fsync_dir, fsync_tree, staged_dir, write_atomic
from trajforge.errors import TrajforgeError
from trajforge.storage_full import StorageFull, out_of_space, space_left

log = logging.getLogger(__name__)
STATE_FILE = "trajforge_state.json"
EXPORT_FILE = "trajforge_export.json"


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def tag(step: int) -> str:
    return f"step-{step:06d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders of the run, oldest first."""
    root = checkpoints_dir(run_dir)
    found = [path for path in root.glob("step-*") if (path / STATE_FILE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda path: path.name)


def failure(message: str, exc: BaseException, run_dir: Path) -> TrajforgeError:
    """The error a failed run ends with. On a full disk (torch's checkpoint writer then says only "unexpected pos"), a
    StorageFull that says so and where the same command resumes (the interrupted save has no state file: never resumed)."""
    if not out_of_space(exc, run_dir, below=64 << 20):
        return TrajforgeError(message)
    found = complete_checkpoints(run_dir)
    then = f"resumes the run from its last complete checkpoint, {found[-1]}" if found else "starts the run over (no complete checkpoint yet)"
    return StorageFull(f"{message} ({space_left(run_dir)}: the disk is full); free space, then the same command {then}", run_dir)


def incomplete_checkpoints(run_dir: Path, before: str) -> list[Path]:
    """Checkpoint folders older than `before` (a tag) that never got their state file: a save or a pruning
    that a kill interrupted. Resuming skips them; they only take disk (a 14B model's shards: hundreds of GB)."""
    root = checkpoints_dir(run_dir)
    return sorted(path for path in root.glob("step-*") if path.is_dir() and path.name < before and not (path / STATE_FILE).is_file()) \
        if root.is_dir() else []


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def resume_point(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint a start resumes from: none with `never`, the run's latest complete one with `auto`, else the folder named."""
    if resume == "never":
        return None
    if resume != "auto":
        return Path(resume)
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def damage(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder that has its state file: unreadable, or a file its save wrote now missing or
    of another size (checkpoints saved before the state file listed them: only the state file is checked); None if whole."""
    try:
        state = read_state(folder)
        int(state["step"])
        files = dict(state.get("files") or {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {STATE_FILE} cannot be read ({type(exc).__name__}: {exc})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, its save wrote {size}"
    return None


def check_resume(run_dir: Path, resume: str) -> None:
    """Refuse, before any worker starts, a start whose checkpoint is no complete one (a folder named in `learner.resume`)
    or was damaged since its save (DeepSpeed would fail in the workers on an assertion, or a worker would crash on a
    truncated shard), naming the folder, what is wrong, and the checkpoint before it to go on from."""
    from trajforge.errors import ConfigError

    folder = resume_point(run_dir, resume)
    if folder is None:
        return
    if resume != "auto" and not (folder / STATE_FILE).is_file():
        raise ConfigError(f"learner.resume: {resume} is not a complete learner checkpoint (no readable {STATE_FILE}); name a "
                          "<run>/checkpoints/step-NNNNNN folder, or `auto` (the run's latest) or `never`")
    wrong = damage(folder)
    if wrong is None:
        return
    earlier = [path for path in complete_checkpoints(run_dir) if path.name < folder.name and damage(path) is None]
    instead = (f"go on from the checkpoint before it with learner.resume={earlier[-1]}" + (f" (or remove {folder})" if resume == "auto" else "")
               if earlier else "start the run over with learner.resume=never")
    which = "the run's latest checkpoint" if resume == "auto" else "checkpoint"
    raise TrajforgeError(f"learner.resume={resume}: {which} {folder} is damaged: {wrong}; restore it, or {instead}")


def save(engine, run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Every worker calls this; returns the checkpoint folder."""
    import torch.distributed as dist

    folder = checkpoints_dir(run_dir) / tag(step)
    if dist.get_rank() == 0 and (folder / STATE_FILE).exists():  # saving over an earlier save of this step (resumed from before it)
        (folder / STATE_FILE).unlink()
        fsync_dir(folder)
    dist.barrier()
    engine.save_checkpoint(str(checkpoints_dir(run_dir)), tag=tag(step), client_state={"trajforge": state})
    fsync_tree(folder)  # every worker: the shards are on disk before the state file can say they are complete
    dist.barrier()
    if dist.get_rank() == 0:  # the shards' sizes, so that a start can tell a checkpoint damaged since (`check_resume`)
        files = {path.name: path.stat().st_size for path in sorted(folder.iterdir()) if path.is_file() and path.name != STATE_FILE}
        write_atomic(folder / STATE_FILE, json.dumps({**state, "files": files}, indent=2) + "\n")
        remove(complete_checkpoints(run_dir)[:-keep])
        for torn in incomplete_checkpoints(run_dir, before=folder.name):  # the shards of saves a kill interrupted
            shutil.rmtree(torn, ignore_errors=True)
    dist.barrier()
    return folder


def remove(folders: list[Path]) -> None:
    for old in folders:
        (old / STATE_FILE).unlink(missing_ok=True)  # first, so a kill while the shards go leaves no folder that looks complete
        fsync_dir(old)
        shutil.rmtree(old, ignore_errors=True)


def later_than(run_dir: Path, step: int) -> list[Path]:
    """The run's checkpoint folders after `step`, complete or not."""
    root = checkpoints_dir(run_dir)
    return sorted(path for path in root.glob("step-*") if path.is_dir() and path.name > tag(step)) if root.is_dir() else []


def load(engine, checkpoint: Path) -> dict[str, Any]:
    """Restore the engine (weights, optimizer, scheduler) from a checkpoint folder; returns its trajforge state."""
    if not (checkpoint / STATE_FILE).is_file():
        from trajforge.errors import TrajforgeError

        raise TrajforgeError(f"{checkpoint} is not a complete learner checkpoint (no {STATE_FILE})")
    path, _ = engine.load_checkpoint(str(checkpoint.parent), tag=checkpoint.name, load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        from trajforge.errors import TrajforgeError

        raise TrajforgeError(f"DeepSpeed could not load the checkpoint in {checkpoint}")
    return read_state(checkpoint)


def export_hf(engine, causal_lm, tokenizer, target: Path, info: dict[str, Any]) -> Path | None:
    """Gather the full weights onto rank 0 and write a Hugging Face directory there (every worker calls this)."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()  # the documented way to gather ZeRO-3 weights (HF, accelerate)
    else:
        state = engine.module.state_dict()
    if dist.get_rank() == 0:
        prefix = "causal_lm."
        weights = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
        with staged_dir(target) as staging:
            causal_lm.save_pretrained(str(staging), state_dict=weights, safe_serialization=True)
            tokenizer.save_pretrained(str(staging))
            (staging / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
    dist.barrier()
    return target if dist.get_rank() == 0 else None


def export_step(target: Path) -> int | None:
    """The step an export was made at (its trajforge_export.json); None where there is no export, -1 where its record
    cannot be read (a folder the learner did not write whole)."""
    if not target.is_dir():
        return None
    try:
        return int(json.loads((target / EXPORT_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def remove_export(target: Path) -> None:
    """Remove an export: its config.json and record first, so a kill midway leaves no folder that loads as a model."""
    for name in ("config.json", EXPORT_FILE):
        (target / name).unlink(missing_ok=True)
    fsync_dir(target)
    shutil.rmtree(target, ignore_errors=True)


def load_trained(path: str | Path, dtype: str = "auto", device: str | None = None):
    """(model, tokenizer) from an export (`<run>/hf`), as any Hugging Face causal LM directory is loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        from trajforge.errors import TrajforgeError

        raise TrajforgeError(f"{path} is not a model directory (no config.json); a finished run writes one to <run>/hf")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    if device:
        model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(str(path))
