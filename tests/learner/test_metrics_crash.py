"""metrics.jsonl after a kill: a torn last line is left out (and dropped by the resume), a damaged earlier one is
named, and the resume's rewrite of the file is all or nothing."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest

from learner.metrics import MetricsWriter, read_metrics
from trajforge.errors import TrajforgeError


def write_lines(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text(text)


def test_a_torn_last_metrics_line_is_left_out_and_a_resume_drops_it(tmp_path):
    lines = [{"event": "train", "step": step, "loss": 1.0 / step} for step in (1, 2, 3)]
    write_lines(tmp_path, "".join(json.dumps(line) + "\n" for line in lines) + '{"event": "train", "st')
    assert read_metrics(tmp_path) == lines
    writer = MetricsWriter(tmp_path, True, resume_step=2)
    writer.write("start", 2)
    writer.close()
    assert [(line["event"], line["step"]) for line in read_metrics(tmp_path)] == [("train", 1), ("train", 2), ("start", 2)]


def test_a_damaged_metrics_line_before_the_end_is_named(tmp_path):
    write_lines(tmp_path, '{"event": "train", "step": 1}\nnot json\n{"event": "train", "step": 2}\n')
    with pytest.raises(TrajforgeError, match=r"metrics\.jsonl:2: not a metrics line"):
        read_metrics(tmp_path)


def test_a_kill_while_a_resumed_run_rewrites_its_metrics_keeps_the_history(tmp_path, monkeypatch):
    history = "".join(json.dumps({"event": "train", "step": step}) + "\n" for step in range(1, 6))
    write_lines(tmp_path, history)

    def killed(self, data, *args, **kwargs):
        with open(self, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(pathlib.Path, "write_text", killed)
    monkeypatch.setattr(pathlib.Path, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        MetricsWriter(tmp_path, True, resume_step=3)
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_text() == history


def test_metric_lines_keep_six_significant_digits_of_small_values(tmp_path):
    """The learning rate is ~1e-5: rounding to decimal places logged 7.75e-6 as 8e-06 and 2.5e-7 as 0.0."""
    writer = MetricsWriter(tmp_path, True)
    writer.write("train", 1, lr=7.75e-6, small=2.5e-7, loss=6.1554251234, mfu=float("nan"))
    writer.close()
    assert read_metrics(tmp_path) == [{"event": "train", "step": 1, "lr": 7.75e-6, "small": 2.5e-7, "loss": 6.15543, "mfu": None}]
