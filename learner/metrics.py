"""Rank 0's metrics: one JSON line per event in `<run>/metrics.jsonl` (the driver echoes them to its stdout), and TensorBoard.

A line is `{"event": "train" | "eval" | "checkpoint" | "export" | "end", "step": N, ...}`. Train lines
carry loss (mean over the step's loss tokens), lr (the one the step's update used), grad_norm (the global norm
before clipping), tokens/s (real tokens, padding not counted, all workers), MFU (model FLOPs / (seconds x workers x
peak); the FLOPs are `learner.model.ModelShape.flops`: 6 x the parameters that multiply (the input embedding left out
unless tied to the output) per token plus causal attention within each example, recomputation not counted), and
memory in GiB (peak allocated on rank 0's GPU since the last line, or peak RSS of rank 0's worker on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import resource
from pathlib import Path
from typing import Any

from trajforge.atomic import write_atomic
from trajforge.errors import TrajforgeError

log = logging.getLogger(__name__)


def memory_gb(on_gpu: bool) -> float:
    if on_gpu:
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        return round(peak, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # Linux reports KiB


def _clean(value: Any) -> Any:
    """Six significant digits (not decimal places: a learning rate of 7.75e-6 stays 7.75e-6, not 8e-06); NaN/inf -> null."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


class MetricsWriter:
    """Writes only on rank 0. A run that resumes at step N first drops what an interrupted run wrote after N."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self._file = None
        self._board = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "metrics.jsonl"
            kept = [line for line in read_metrics(run_dir) if line["step"] <= resume_step] if resume_step else []
            write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept))  # a kill here keeps the whole history
            self._file = path.open("a", encoding="utf-8")
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, event: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        line = json.dumps({"event": event, "step": step, **{key: _clean(value) for key, value in values.items()}})
        self._file.write(line + "\n")
        self._file.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self._board.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._board.close()


def read_metrics(run_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The run's metric lines (of one event kind), in order; a resumed run's lines follow the first run's.

    A last line without its newline (a run killed while writing it) is left out; any other unreadable line
    is a TrajforgeError naming it."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        log.warning("%s: leaving out a torn last line (%d characters; the run was killed while writing it)", path, len(text) - len(complete))
    lines = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError as exc:
            raise TrajforgeError(f"{path}:{number}: not a metrics line ({exc}); remove the line or start a new run_name") from None
    return [line for line in lines if event is None or line["event"] == event]
