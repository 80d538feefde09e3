"""Counts are read from output that jailed code writes: a hostile test's output costs the host no more than reading it
once, and never an exception (a run of digits made the summary regexes backtrack quadratically, hours for the 1 MB a
stream keeps; a number over 4,300 digits made `int` raise ValueError out of run_tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sandbox.testing import count

READ_A_MEGABYTE_OF_DIGITS = """
import time
from sandbox.testing import COUNTERS, count
started = time.monotonic()
for framework in COUNTERS:
    count(framework, "1" * (1 << 20))
print(round(time.monotonic() - started, 2))
"""


def test_a_megabyte_of_digits_is_read_in_linear_time():
    done = subprocess.run([sys.executable, "-c", READ_A_MEGABYTE_OF_DIGITS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and float(done.stdout) < 30, (done.stdout, done.stderr[-2000:])


@pytest.mark.parametrize("output", ["9" * 5000 + " passed", "ℹ pass " + "9" * 5000, "Ran " + "9" * 5000 + " tests in 0.1s"])
def test_a_count_too_long_to_be_one_is_no_count_and_no_exception(output):
    framework = "node" if output.startswith("ℹ") else "unittest" if output.startswith("Ran") else "pytest"
    assert count(framework, output)["passed"] == 0


def test_real_summaries_still_count():
    assert count("pytest", "== 12 passed, 3 failed, 1 error, 2 skipped in 0.5s ==") == {"passed": 12, "failed": 3, "errors": 1, "skipped": 2}
    assert count("unittest", "Ran 7 tests in 0.01s\n\nFAILED (failures=2, errors=1)")["passed"] == 4
    assert count("java", "[        10 tests successful      ]\n[         1 tests failed          ]")["passed"] == 10
