"""Dataset normalization: records/s of one large JSON-lines release (CommitPackFT's layout) normalized in pieces by
Ray tasks on this node, against the same file in one process, in the same run.

    python -m benchmarks.datasets [--records 300000] [--pieces 4]

The file is made here from the shipped sample's records (each repeated with its own commit), so the adapter does its
real work on every line. Ray is started first (not timed). Expected: the pieces ratio approaches the CPUs given to
the tasks (2 here), less the one pass that numbers the lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "datasets" / "commitpackft" / "data.jsonl"


def release(path: Path, records: int) -> int:
    """A CommitPackFT-layout JSON-lines file of `records` records; its size in bytes."""
    base = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for index in range(records):
            record = dict(base[index % len(base)])
            record["commit"] = f"{index:040x}"
            out.write(json.dumps(record) + "\n")
    return path.stat().st_size


def timed(name: str, spec, source: Path, out: Path, **options) -> tuple[float, dict]:
    from pipelines.datasets.normalize import normalize_source

    started = time.perf_counter()
    counts = normalize_source(name, spec, source, out, 10_000, progress=False, **options)
    return time.perf_counter() - started, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000, help="records in the made release (default 300,000: 142 MB)")
    parser.add_argument("--pieces", type=int, default=4, help="pieces the file is cut into for the Ray run (default 4)")
    args = parser.parse_args()

    import ray

    from pipelines.datasets.readers import jsonl_ranges
    from pipelines.datasets.settings import DatasetSpec

    work = Path(tempfile.mkdtemp(prefix="trajforge-bench-datasets-"))
    try:
        size = release(work / "data.jsonl", args.records)
        spec = DatasetSpec.model_validate({"source": str(work / "data.jsonl"), "adapter": "commitpackft", "license": "MIT", "version": "bench"})
        one_s, one = timed("bench", spec, work / "data.jsonl", work / "one")
        split = -(-size // args.pieces)
        cut = len(jsonl_ranges(work / "data.jsonl", split))
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            ray_s, pieces = timed("bench", spec, work / "data.jsonl", work / "ray", cpus=1.0, split_bytes=split)
        finally:
            ray.shutdown()
        assert one["records"] == pieces["records"] == args.records, (one, pieces)
        print(f"{args.records:,} records, {size / 1e6:.1f} MB of JSON lines")
        print(f"one process     : {args.records / one_s:>10,.0f} records/s ({one_s:.2f} s)")
        print(f"{cut} Ray pieces    : {args.records / ray_s:>10,.0f} records/s ({ray_s:.2f} s, the line-numbering pass included)")
        print(f"pieces / one process: {one_s / ray_s:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
