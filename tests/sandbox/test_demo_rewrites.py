"""The sandbox part of `trajforge demo`: every language's rewrite matches and changes its file, the Python file still
passes its tests after the rewrite, and the three hostile programs are contained."""

from __future__ import annotations

import re

from sandbox.demo import SNIPPETS, show_rewrites


def test_the_demo_rewrites_match_and_the_hostile_programs_are_contained(capsys):
    show_rewrites()
    out = capsys.readouterr().out
    matches = dict(re.findall(r"^-- (\w+): .*\[jail \w+, (\d+) match\(es\)", out, re.MULTILINE))
    assert set(matches) == set(SNIPPETS) and all(int(count) >= 1 for count in matches.values())
    assert out.count("+++ b/") == len(SNIPPETS)
    assert "logging.debug('%s %s', 'summing', len(items))" in out  # what print printed, as a logging call that formats it
    assert re.search(r"tests after the python rewrite: 1 passed, 0 failed", out)
    verdicts = dict(re.findall(r"^-- contained: (.+?)\s+-> (.*)$", out, re.MULTILINE))
    assert verdicts["endless loop"] == "time" and verdicts["memory hog"] == "memory"
    assert "No such file" in verdicts["read /etc/shadow"] or "Permission" in verdicts["read /etc/shadow"]
