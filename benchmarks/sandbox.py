"""Sandbox throughput: ast-grep actions per second on a 50-file workspace, jailed and unjailed.

    python -m benchmarks.sandbox [--actions 40] [--files 50]

Both modes run the same code path (`Sandbox.apply_action`: read the tree, two ast-grep passes, diff);
only `sandbox.jail` differs (nsjail as configured vs none). Target: jailed >= 0.5x unjailed. Also
prints the median start overhead of the jail itself (`/bin/true` jailed minus unjailed).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ACTIONS = [
    {"pattern": "print($$$ARGS)", "rewrite": "log($$$ARGS)", "language": "python"},
    {"pattern": "log($$$ARGS)", "rewrite": "print($$$ARGS)", "language": "python"},
    {"id": "to-attempts", "language": "python", "rule": {"pattern": "fetch($URL, retries=$N)"}, "constraints": {"N": {"regex": "^[0-9]+$"}},
     "fix": "fetch($URL, attempts=$N)"},
    {"id": "to-retries", "language": "python", "rule": {"pattern": "fetch($URL, attempts=$N)"}, "fix": "fetch($URL, retries=$N)"},
]
ORDER = [1, 2, 0, 3]  # after the warm-up (print -> log) every action has something to rewrite


def project(files: int) -> dict[str, str]:
    """`files` Python modules of about 60 lines each."""
    body = []
    for index in range(12):
        body.append(f"def handler_{index}(request, retries=3):\n    print('handling', request.id, {index})\n"
                    f"    data = fetch(request.url, retries={index})\n    if not data:\n        print('empty', request)\n    return data\n")
    return {f"pkg/mod_{i:03d}.py": "import logging\n\n" + "\n".join(body) for i in range(files)}


def measure(box, files: dict[str, str], actions: int) -> float:
    workspace = box.prepare_workspace("bench", files)
    try:
        box.apply_action(workspace, ACTIONS[0])  # warm-up
        started = time.perf_counter()
        for index in range(actions):
            result = box.apply_action(workspace, ACTIONS[ORDER[index % len(ORDER)]])
            assert result.valid and result.files_changed, result.error
        return actions / (time.perf_counter() - started)
    finally:
        box.cleanup(workspace)


def start_overhead(settings, runs: int) -> tuple[float, float]:
    from sandbox.process import run_jailed

    scratch = Path(tempfile.mkdtemp(prefix="trajforge-bench-"))
    try:
        def median(jail: str) -> float:
            chosen = settings.model_copy(update={"jail": jail})
            return statistics.median(run_jailed(chosen, ["/bin/true"], scratch).wall_s for _ in range(runs))

        return median(settings.jail), median("none")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=40, help="actions per mode (default 40)")
    parser.add_argument("--files", type=int, default=50, help="files in the workspace (default 50)")
    args = parser.parse_args(argv)
    logging.getLogger("sandbox").setLevel(logging.ERROR)  # the no-jail warning is expected here

    from sandbox.runner import Sandbox
    from sandbox.settings import load_sandbox_settings

    root = Path(tempfile.mkdtemp(prefix="trajforge-bench-"))
    try:
        settings = load_sandbox_settings().model_copy(update={"workspaces_root": root / "ws", "logs_dir": root / "logs"})
        files = project(args.files)
        jailed = measure(Sandbox(settings), files, args.actions)
        unjailed = measure(Sandbox(settings.model_copy(update={"jail": "none"})), files, args.actions)
        jail_start, bare_start = start_overhead(settings, 30)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nsandbox benchmark: {args.actions} ast-grep actions on a {args.files}-file workspace ({sum(map(len, files.values())) // 1024} KiB)")
    print(f"  unjailed (jail: none)   {unjailed:7.1f} actions/s")
    print(f"  jailed ({settings.jail:<6})         {jailed:7.1f} actions/s   {jailed / unjailed:.2f}x unjailed   (target >= 0.5x)")
    print(f"  jail start overhead     {1000 * (jail_start - bare_start):7.1f} ms median (/bin/true: {1000 * jail_start:.1f} ms jailed, {1000 * bare_start:.1f} ms bare)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
