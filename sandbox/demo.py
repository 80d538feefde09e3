"""The sandbox part of `trajforge demo`: a few ast-grep rewrites in the jail, their diffs, tests, containment."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SNIPPETS = {
    "python": ({"billing/invoice.py": "import logging\n\n\ndef total(items):\n    print('summing', len(items))\n    return sum([item.price for item in items])\n",
                "billing/test_invoice.py": "from invoice import total\n\nclass Item:\n    price = 2\n\ndef test_total():\n    assert total([Item(), Item()]) == 4\n"},
               {"pattern": "print($LABEL, $VALUE)", "rewrite": "logging.debug('%s %s', $LABEL, $VALUE)", "language": "python"}),
    "javascript": ({"web/cart.js": "var items = [];\nfunction add(item) { items.push(item); console.log('added', item.id); }\n"},
                   {"id": "no-console", "language": "javascript", "rule": {"pattern": "console.log($$$ARGS)"}, "fix": "logger.info($$$ARGS)"}),
    "typescript": ({"api/client.ts": "export async function get(url: string) {\n  const body = (await fetch(url)).json() as any;\n  return body as any;\n}\n"},
                   {"pattern": "$E as any", "rewrite": "$E as unknown", "language": "typescript"}),
    "java": ({"src/Report.java": "class Report {\n  void print(int n) {\n    System.out.println(\"rows: \" + n);\n  }\n}\n"},
             {"id": "use-logger", "language": "java", "rule": {"pattern": "System.out.println($A)"}, "fix": "LOG.info($A)"}),
}


def show_rewrites() -> None:
    from sandbox.pool import SandboxPool
    from sandbox.runner import Sandbox
    from sandbox.settings import load_sandbox_settings

    root = Path(tempfile.mkdtemp(prefix="trajforge-demo-sandbox-"))
    settings = load_sandbox_settings().model_copy(update={"workspaces_root": root / "workspaces"})
    box = Sandbox(settings)
    workspaces = {language: box.prepare_workspace(f"demo-{language}", files) for language, (files, _) in SNIPPETS.items()}
    try:
        with SandboxPool(workers=2, sandbox=box) as pool:
            results = pool.apply_many((workspaces[language], action) for language, (_, action) in SNIPPETS.items())
        for (language, (_, action)), result in zip(SNIPPETS.items(), results):
            how = action.get("id") or f"{action['pattern']} -> {action['rewrite']}"
            print(f"-- {language}: {how}  [jail {result.jail}, {result.matches} match(es), {1000 * result.wall_s:.0f} ms]")
            print(result.diff.rstrip() or "(no change)")
        tests = box.run_tests(workspaces["python"], {"command": ["python", "-m", "pytest", "-q", "billing"]})
        print(f"-- tests after the python rewrite: {tests.passed} passed, {tests.failed} failed in the jail ({tests.wall_s:.2f} s)")
        tight = Sandbox(settings.model_copy(update={"wall_time_s": 2, "memory_mb": 128, "disk_mb": 32, "tmp_mb": 16, "shm_mb": 16}))
        for label, code in (("endless loop", "while True: pass"), ("memory hog", "x = [bytearray(1 << 24) for _ in range(64)]"),
                            ("read /etc/shadow", "print(open('/etc/shadow').read())")):
            outcome = tight.run_tests(workspaces["python"], {"command": ["python", "-c", code], "framework": "pytest"})
            verdict = ", ".join(outcome.limits_hit) or (outcome.stderr.text.strip().splitlines() or ["exit 0"])[-1][:60]
            print(f"-- contained: {label:<17} -> {verdict}")
    finally:
        for workspace in workspaces.values():
            box.cleanup(workspace)
        shutil.rmtree(root, ignore_errors=True)
