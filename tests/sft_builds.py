"""Small curated builds for the learner's tests: sft Parquet files written with the contract's schema, and a manifest."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trajforge.contracts.curated import SFT

WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega parse render commit branch index "
         "cache token query table column value merge patch build test module import error fixed").split()


def conversation(index: int, rng: random.Random, assistant_turns: int = 2) -> list[dict[str, Any]]:
    """system, user, then (assistant, tool) pairs; the assistant turns are marked for loss."""
    messages = [{"role": "system", "content": "You are a coding agent.", "loss": False},
                {"role": "user", "content": f"Task {index}: " + " ".join(rng.choices(WORDS, k=12)), "loss": False}]
    for turn in range(assistant_turns):
        messages.append({"role": "assistant", "content": f"<think>\nstep {turn} of task {index}\n</think>\n" + " ".join(rng.choices(WORDS, k=10)), "loss": True})
        messages.append({"role": "tool", "content": "output: " + " ".join(rng.choices(WORDS, k=8)), "loss": False})
    messages.append({"role": "assistant", "content": f"done with task {index}", "loss": True})
    return messages


def sft_row(index: int, messages: list[dict[str, Any]], split: str) -> dict[str, Any]:
    session = f"sess_{index:05d}"
    return {"example_id": f"ex_{index:05d}", "source": "ingest", "session_id": session, "step": None, "split": split, "tier": "TIER_A",
            "score": 80.0, "messages": messages, "num_tokens": 0, "loss_tokens": 0,
            "provenance": {"source": "ingest", "session_id": session, "contributor_id": "c" * 32, "raw_ids": [], "repos": [], "commits": [], "files": []}}


def rows(count: int, dev: int = 0, seed: int = 0, assistant_turns: int = 2) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [sft_row(index, conversation(index, rng, assistant_turns), "dev" if index < dev else "train") for index in range(count)]


def write_build(lake: Path, build_id: str, sft_rows: list[dict[str, Any]], files: int = 1) -> Path:
    """`<lake>/curated/<build_id>/` with sft/part-*.parquet, manifest.json (sha256 of each file) and LATEST."""
    folder = lake / "curated" / build_id
    (folder / "sft").mkdir(parents=True, exist_ok=True)
    entries = []
    per_file = -(-len(sft_rows) // files)
    for number in range(files):
        chunk = sft_rows[number * per_file : (number + 1) * per_file]
        path = folder / "sft" / f"part-{number:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=SFT), path)
        entries.append({"path": f"sft/{path.name}", "rows": len(chunk), "bytes": path.stat().st_size,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {"build_id": build_id, "rows": {"sft": len(sft_rows)}, "tokenizer": "packaged", "files": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (lake / "curated" / "LATEST").write_text(build_id + "\n")
    return folder
