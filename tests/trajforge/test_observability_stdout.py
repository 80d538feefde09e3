"""A command's stdout is its answer (`trajforge rollout --json | jq`), so what libraries log goes to stderr with the
command's own lines. DeepSpeed's logger writes to stdout: where no GPU is seen, its import says "Setting accelerator to
CPU" there, and transformers imports it when it makes or loads a model, as rollout does on the embedded model's first
use, so `rollout --json` printed that line above its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

COMMAND = """
import json, logging, sys
from trajforge.logs import setup_logging
setup_logging(sys.argv[1], as_json=True)
from deepspeed.accelerator import get_accelerator
get_accelerator()
print(json.dumps({"answer": 1}))
"""


def _run(level: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name not in ("DS_ACCELERATOR", "CUDA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU seen, as on the machines the embedded model runs on
    done = subprocess.run([sys.executable, "-c", COMMAND, level], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert json.loads(done.stdout) == {"answer": 1}
    return done


def test_deepspeeds_accelerator_warning_goes_to_stderr_as_a_line_of_the_command_log():
    done = _run("INFO")
    lines = [json.loads(line) for line in done.stderr.splitlines() if "accelerator" in line.lower()]
    assert [(line["logger"], line["level"]) for line in lines] == [("DeepSpeed", "warning")]
    assert "Setting accelerator to CPU" in lines[0]["msg"]


def test_deepspeeds_records_keep_to_the_commands_log_level():
    assert "accelerator" not in _run("ERROR").stderr.lower()
