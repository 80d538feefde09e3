"""`--set` on every subcommand and `python -m` entry point: a root the command does not read is refused,
naming it and the roots the command accepts; a verb (`sandbox apply`) takes the common arguments too."""

from __future__ import annotations

import json

import pytest

from trajforge.cli.main import COMMANDS, main
from trajforge.errors import ConfigError
from trajforge.settings import parse_assignments
from trajforge.settings.serve_file import override_roots

CONTRIBUTOR = "0123456789abcdef0123456789abcdef"

# command -> (its arguments, a --set it would otherwise ignore, what the refusal lists)
MISTYPED = {
    "serve": ([], "ingst.num_replicas=2", "http_options.*, ingest.*, embed.*"),
    "embed": (["some text"], "embed.model=x", "reads no config"),
    "sandbox": (["apply", "--workspace", ".", "--action", "{}"], "sandbx.jail=none", "it accepts sandbox.*"),
    "synth-rules": ([], "teacher.sample=1", "it accepts sandbox.*"),
    "synth-records": (["list"], "synth_record.peers=2", "it accepts synth_records.*"),
    "teacher": ([], "techer.sample=1", "it accepts teacher.*, sandbox.*"),
    "rollout": ([], "actor.count=2", "it accepts actors.*, sandbox.*"),
    "queue": (["status", "tasks"], "actors.count=2", "reads no config"),
    "datasets": ([], "dataset.max_input_tokens=1", "it accepts datasets.*"),
    "build": ([], "dedup.threshold=0.5", "it accepts build.*"),
    "lake": (["publish", "latest", "s3://bucket/prefix"], "build.lake=x", "reads no config"),
    "train": ([], "lerner.optim.lr=1", "it accepts learner.*, cluster.*"),
    "forget": ([CONTRIBUTOR], "build.lake=x", "reads no config"),
    "provenance": (["--commit", "abc123"], "build.lake=x", "reads no config"),
    "stats": ([], "build.lake=x", "reads no config"),
    "dashboard": ([], "build.lake=x", "reads no config"),
    "demo": ([], "teacher.sample=1", "http_options.*, ingest.*, embed.*"),
}


def test_every_command_is_checked():
    assert set(MISTYPED) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(MISTYPED))
def test_a_command_refuses_a_set_it_would_ignore(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and nothing is: the refusal comes first
    arguments, assignment, accepted = MISTYPED[command]
    assert main([command, *arguments, "--set", assignment]) == 2
    error = capsys.readouterr().err
    assert f"--set {assignment}" in error and accepted in error
    if "reads no config" not in accepted:
        assert repr(assignment.split(".")[0]) in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module, assignment, accepted", [
    ("learner.train", "lerner.optim.lr=1", "learner.*, cluster.*"),
    ("pipelines.teacher_srl", "sandboxx.jail=none", "teacher.*, sandbox.*"),
    ("pipelines.synth_rules", "teacher.sample=1", "sandbox.*"),
    ("actors.rollout", "teacher.sample=1", "actors.*, sandbox.*"),
    ("pipelines.build", "dedup.threshold=0.5", "build.*"),
    ("pipelines.datasets", "dataset.max_input_tokens=1", "datasets.*"),
])
def test_the_module_entry_points_refuse_it_too(module, assignment, accepted, capsys):
    import importlib

    assert importlib.import_module(module).main(["--set", assignment]) == 2
    error = capsys.readouterr().err
    assert f"python -m {module} reads no config section {assignment.split('.')[0]!r}; it accepts {accepted}" in error


def test_assignments_to_the_roots_a_command_reads_are_parsed():
    assert parse_assignments(["learner.optim.lr=0.5", "cluster.learner.gpus_per_node=1"], ["learner", "cluster"], "train") == [
        ("learner.optim.lr", 0.5), ("cluster.learner.gpus_per_node", 1)]
    with pytest.raises(ConfigError, match=r"--set lerner\.optim\.lr=1: train reads no config section 'lerner'; it accepts learner\.\*, cluster\.\*"):
        parse_assignments(["lerner.optim.lr=1"], ["learner", "cluster"], "train")
    with pytest.raises(ConfigError, match="stats reads no config, so --set has nothing to change"):
        parse_assignments(["a.b=1"], [], "stats")


def test_the_serve_roots_are_its_keys_and_applications_but_not_the_applications_list():
    from pathlib import Path

    roots = override_roots(Path(__file__).resolve().parents[2] / "configs" / "serve.yaml")
    assert {"http_options", "proxy_location", "ingest", "embed"} <= set(roots) and "applications" not in roots


def test_sandbox_apply_takes_set_after_the_verb(tmp_path, capsys):
    workspace = tmp_path / "code"
    workspace.mkdir()
    (workspace / "app.py").write_text("print(1)\n")
    action = json.dumps({"pattern": "print($A)", "rewrite": "log($A)", "language": "python"})
    code = main(["sandbox", "apply", "--workspace", str(workspace), "--action", action, "--log-level", "ERROR",
                 "--set", "sandbox.jail=none", "--set", f"sandbox.workspaces_root={tmp_path / 'ws'}", "--set", f"sandbox.logs_dir={tmp_path / 'logs'}"])
    output = capsys.readouterr().out
    assert code == 0, output
    result = json.loads(output)
    assert result["jail"] == "none" and result["valid"] and "log(1)" in result["diff"]
    assert list((tmp_path / "logs").iterdir())  # the --set values after the verb were applied


def test_sets_before_and_after_the_verb_are_both_applied(capsys):
    # before the verb: a bad value (so nothing runs); after it: another field. Both reach the config.
    code = main(["sandbox", "--set", "sandbox.wall_time_s=-1", "apply", "--workspace", ".", "--action", "{}", "--set", "sandbox.cpus=0"])
    error = capsys.readouterr().err
    assert code == 2 and "sandbox.wall_time_s" in error and "sandbox.cpus" in error


def test_the_demo_deploys_the_serve_config_with_its_set(monkeypatch, tmp_path, capsys):
    """`trajforge demo --set ingest.*` reaches the Serve config it deploys, as `trajforge serve`'s does (it was refused)."""
    from trajforge import serving
    from trajforge.errors import TrajforgeError

    monkeypatch.chdir(tmp_path)
    deployed = []

    def deploy(serve_file, **_):
        deployed.append(serve_file)
        raise TrajforgeError("stop here")

    monkeypatch.setattr(serving, "deploy", deploy)
    monkeypatch.setattr(serving, "shutdown", lambda *names: None)
    assert main(["demo", "--set", "ingest.rate_limits.per_address_per_minute=7", "--set", "ingest.num_replicas=2"]) == 2
    assert "stop here" in capsys.readouterr().err
    ingest = deployed[0].app("ingest").args
    assert ingest["rate_limits"]["per_address_per_minute"] == 7 and ingest["num_replicas"] == 2


def test_the_help_gives_each_command_an_example_of_a_section_it_reads(capsys):
    """A command's `--set` example names a section it accepts; one that reads no config says so instead."""
    import importlib

    from trajforge.cli.common import SET_EXAMPLES
    from trajforge.cli.main import build_parser

    parser = build_parser()
    for command, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(module_name)
        roots = module.config_roots(parser.parse_args([command, *MISTYPED[command][0]])) if hasattr(module, "config_roots") else ()
        if not roots:
            assert command not in SET_EXAMPLES
            continue
        assert parse_assignments([SET_EXAMPLES[command]], roots, command)  # accepted, not refused
        with pytest.raises(SystemExit):
            main([command, "--help"] if command != "sandbox" else [command, "apply", "--help"])
        assert f"--set {SET_EXAMPLES[command]}" in " ".join(capsys.readouterr().out.split())


def test_version_names_the_package_and_the_checkouts_commit(capsys):
    import subprocess

    from trajforge import __version__
    from trajforge.version import CHECKOUT

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    printed = capsys.readouterr().out.strip()
    commit = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert done.value.code == 0 and printed.startswith(f"trajforge {__version__}+{commit}" if commit else f"trajforge {__version__}")
