"""Config loading: unknown keys, bad values, environment variables and --set, in that precedence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from serve_apps.ingest.settings import load_settings
from trajforge.errors import ConfigError
from trajforge.settings import env_assignments, parse_assignment
from trajforge.settings.serve_file import load_serve_file

REPO = Path(__file__).resolve().parents[2]
SERVE_YAML = REPO / "configs" / "serve.yaml"


def test_the_shipped_serve_config_is_valid():
    serve_file = load_serve_file(SERVE_YAML, environ={})
    ingest = load_settings(serve_file.app("ingest").args, environ={})
    assert ingest.rate_limits.per_address_per_minute == 100
    assert ingest.rate_limits.per_address_per_hour == 1000
    assert ingest.rate_limits.sessions_per_machine_per_hour == 20
    assert ingest.rate_limits.envelopes_per_session == 200


def test_set_overrides_environment_which_overrides_the_file():
    environ = {"TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE": "7", "TRAJFORGE__INGEST__NUM_REPLICAS": "3"}
    serve_file = load_serve_file(SERVE_YAML, [parse_assignment("ingest.rate_limits.per_address_per_minute=0")], environ=environ)
    ingest = load_settings(serve_file.app("ingest").args, environ={})
    assert ingest.rate_limits.per_address_per_minute == 0
    assert ingest.num_replicas == 3


def test_builder_args_take_environment_variables():
    ingest = load_settings({"lake": "/tmp/x"}, environ={"TRAJFORGE__INGEST__TRUSTED_PROXIES": "[10.0.0.0/8]", "TRAJFORGE__LEARNER__LR": "1"})
    assert ingest.trusted_proxies == ["10.0.0.0/8"]


def test_unknown_key_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"ingest\.rate_limits\.per_adress_per_minute: unknown key"):
        load_settings({"rate_limits": {"per_adress_per_minute": 5}}, environ={})


def test_an_unknown_top_level_key_of_the_serve_file_is_refused_naming_it(tmp_path):
    """A misspelt `http_options` (or a Serve key trajforge does not apply) was dropped in silence: port 8000 was served."""
    import yaml

    data = yaml.safe_load(SERVE_YAML.read_text())
    data["http_option"] = data.pop("http_options") | {"port": 9000}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"serve\.yaml: http_option: unknown key"):
        load_serve_file(path, environ={})


def test_bad_value_names_the_field_the_value_and_where_it_was_set():
    with pytest.raises(ConfigError, match=r"ingest\.rate_limits\.per_address_per_minute \(set by "
                                          r"TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE\): .*integer.*'many'"):
        load_settings({}, environ={"TRAJFORGE__INGEST__RATE_LIMITS__PER_ADDRESS_PER_MINUTE": "many"})
    with pytest.raises(ConfigError, match=r"http_options\.port \(set by --set http_options\.port\): .*65535"):
        load_serve_file(SERVE_YAML, [parse_assignment("http_options.port=70000")], environ={})


def test_a_bad_value_in_the_file_names_the_file(tmp_path, monkeypatch):
    from sandbox.settings import load_sandbox_settings

    monkeypatch.delenv("TRAJFORGE__SANDBOX__MEMORY_MB", raising=False)
    config = tmp_path / "sandbox.yaml"
    config.write_text("sandbox:\n  memory_mb: lots\n")
    with pytest.raises(ConfigError, match=rf"{config}: sandbox\.memory_mb: .*'lots'"):
        load_sandbox_settings(config)
    with pytest.raises(ConfigError, match=r"sandbox\.memory_mb \(set by --set sandbox\.memory_mb\): .*'abc'"):
        load_sandbox_settings(config, [("sandbox.memory_mb", "abc")])


def test_assignment_values_are_typed_as_yaml():
    assert parse_assignment("a.b=0") == ("a.b", 0)
    assert parse_assignment("a.b=true") == ("a.b", True)
    assert parse_assignment("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_assignment("a.b=./lake") == ("a.b", "./lake")
    with pytest.raises(ConfigError, match="dotted.path=value"):
        parse_assignment("no-equals-sign")
    assert env_assignments({"TRAJFORGE__A__B_C": "2", "OTHER": "1"}) == [("a.b_c", 2)]


def test_cli_refuses_a_bad_config_before_starting_anything():
    result = subprocess.run(
        [sys.executable, "-m", "trajforge", "serve", "--set", "ingest.rate_limits.per_address_per_minute=-1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "ingest.rate_limits.per_address_per_minute" in result.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["demo"]])
def test_help_explains_every_command(command):
    result = subprocess.run([sys.executable, "-m", "trajforge", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--set" in result.stdout or "serve" in result.stdout


def test_an_environment_override_is_blamed_on_the_variable_as_it_is_spelled():
    with pytest.raises(ConfigError, match=r"http_options\.port \(set by TRAJFORGE__HTTP_OPTIONS__port\): .*65535"):
        load_serve_file(SERVE_YAML, environ={"TRAJFORGE__HTTP_OPTIONS__port": "80000"})
    with pytest.raises(ConfigError, match=r"cannot set http_options\.port\.x \(set by TRAJFORGE__HTTP_OPTIONS__PORT__X\)"):
        load_serve_file(SERVE_YAML, environ={"TRAJFORGE__HTTP_OPTIONS__PORT__X": "1"})


def test_a_commands_flag_is_blamed_on_the_flag_not_on_set():
    from trajforge.settings import Assignment

    with pytest.raises(ConfigError, match=r"http_options\.port \(set by --port\): .*65535") as refused:
        load_serve_file(SERVE_YAML, [Assignment("http_options.port", 80000, "--port")], environ={})
    assert "--set" not in str(refused.value)


def test_the_last_override_of_a_field_is_blamed():
    """An environment variable set a.b.c; a later --set replaced all of a.b: the value validated is the --set's."""
    from pydantic import BaseModel

    from trajforge.settings import origins, validate

    class Inner(BaseModel):
        c: int = 0

    class Middle(BaseModel):
        b: Inner = Inner()

    overrides = origins([("a.b.c", 1)], [("a.b", {"c": "many"})])
    with pytest.raises(ConfigError, match=r"a\.b\.c \(set by --set a\.b\)"):
        validate(Middle, {"b": {"c": "many"}}, "a.yaml", prefix="a", overrides=overrides)


def test_assignments_keep_their_origin_through_pickle():
    import pickle

    from trajforge.settings import Assignment, origin_of

    copied = pickle.loads(pickle.dumps(Assignment("a.b", [1], "--lake")))
    assert copied == ("a.b", [1]) and origin_of(copied) == "--lake" and origin_of(("a.b", 1)) == "--set a.b"


def test_a_missing_config_file_is_named_without_telling_to_pass_config(tmp_path, monkeypatch):
    from trajforge.settings import SHIPPED_CONFIGS, read_yaml

    monkeypatch.chdir(tmp_path)
    folder = re.escape(str(tmp_path))
    with pytest.raises(ConfigError, match=rf"config file nope\.yaml not found \(no such file in {folder}\): check the path") as refused:
        read_yaml("nope.yaml")
    assert "--config" not in str(refused.value)
    with pytest.raises(ConfigError, match=r"config file nope\.yaml given with --config not found"):
        read_yaml("nope.yaml", given_by="--config")
    with pytest.raises(ConfigError, match=r"default config file .*gone\.yaml is missing from this checkout: restore it"):
        read_yaml(SHIPPED_CONFIGS / "gone.yaml")


def test_a_config_that_is_a_folder_or_not_text_is_a_config_error_naming_it(tmp_path):
    """A folder or binary bytes where the YAML file is wanted is one line naming the path and the flag (it was an
    IsADirectoryError / UnicodeDecodeError traceback)."""
    from trajforge.settings import read_yaml

    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes([0xA1, 0xFF, 0x00, 0x80]) * 10)
    with pytest.raises(ConfigError, match=r"domains file .* \(given with --domains\) is a folder: give the YAML file"):
        read_yaml(tmp_path, given_by="--domains", kind="domains file")
    with pytest.raises(ConfigError, match=r"config file .*garbage\.yaml \(given with --config\) is not UTF-8 text"):
        read_yaml(garbage, given_by="--config")


def test_a_missing_config_given_relative_to_the_checkout_is_the_users_path_not_a_missing_default(monkeypatch, capsys):
    """`--config configs/nope.yaml` run in the checkout (as in a submitted job's copy of it) names the path as given and
    the folder; it is no shipped default to restore with git."""
    from trajforge.cli.main import main
    from trajforge.settings import SHIPPED_CONFIGS

    monkeypatch.chdir(SHIPPED_CONFIGS.parent)
    for command in ("build", "teacher", "train"):
        assert main([command, "--config", "configs/nope.yaml"]) == 2
        err = capsys.readouterr().err
        assert f"config file configs/nope.yaml not found (no such file in {SHIPPED_CONFIGS.parent}): check the path" in err, err
        assert "default" not in err and "git checkout" not in err


def test_serve_with_a_missing_config_names_it(capsys, tmp_path):
    from trajforge.cli.main import main

    missing = tmp_path / "nope.yaml"
    assert main(["serve", "--config", str(missing)]) == 2  # refused before Ray starts
    err = capsys.readouterr().err
    assert f"config file {missing} not found: check the path" in err and "pass --config" not in err


def test_an_applications_bad_arg_is_blamed_on_what_set_it_while_serve_builds_it(tmp_path):
    """`trajforge serve` folds the variables and --set into the apps' args before their builders validate them: within
    `args_source` a builder's error names the override (or the file actually read), not configs/serve.yaml."""
    environ = {"TRAJFORGE__INGEST__NUM_REPLICAS": "bad"}
    serve_file = load_serve_file(SERVE_YAML, [parse_assignment("ingest.rate_limits.per_address_per_minute=many")], environ=environ)
    with serve_file.args_source(), pytest.raises(ConfigError) as refused:
        load_settings(serve_file.app("ingest").args, environ={})
    assert "ingest.num_replicas (set by TRAJFORGE__INGEST__NUM_REPLICAS)" in str(refused.value)
    assert "ingest.rate_limits.per_address_per_minute (set by --set ingest.rate_limits.per_address_per_minute)" in str(refused.value)
    copied = tmp_path / "serve.yaml"
    copied.write_text(SERVE_YAML.read_text().replace("num_replicas: 1", "num_replicas: bad", 1))
    assert "num_replicas: bad" in copied.read_text()
    own_file = load_serve_file(copied, environ={}).only(["ingest"])
    with own_file.args_source(), pytest.raises(ConfigError, match=re.escape(f"{copied}: ingest.num_replicas")):
        load_settings(own_file.app("ingest").args, environ={})


def test_yaml_1_1_boolean_words_stay_text_and_still_set_a_boolean_field():
    """PyYAML reads `off`/`on`/`yes`/`no` as booleans: `--set learner.run_name=off` was refused as not a string."""
    from learner.settings import load_learner_settings

    assert parse_assignment("learner.run_name=off") == ("learner.run_name", "off")
    assert parse_assignment("learner.zero.offload_optimizer=true") == ("learner.zero.offload_optimizer", True)
    settings = load_learner_settings(assignments=[parse_assignment("learner.run_name=off"),
                                                  parse_assignment("learner.zero.offload_optimizer=Yes")])
    assert settings.run_name == "off" and settings.zero.offload_optimizer is True
    assert env_assignments({"TRAJFORGE__LEARNER__RUN_NAME": "ON"}) == [("learner.run_name", "ON")]


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soft: int = 1
    hard: int = 2

    @model_validator(mode="after")
    def _soft_within_hard(self) -> _Limits:
        if self.soft > self.hard:
            raise ValueError("soft must not exceed hard")
        return self


class _Demo(BaseModel):
    """A section with both kinds of check across fields: a model's own (limits) and a field's that reads another (kill)."""

    model_config = ConfigDict(extra="forbid")

    limits: _Limits = _Limits()
    cap: int = 10
    kill: int = 20
    name: str = "demo"

    @field_validator("kill")
    @classmethod
    def _kill_from_cap(cls, kill: int, info: ValidationInfo) -> int:
        if kill < info.data.get("cap", 0):
            raise ValueError(f"must be at least cap ({info.data['cap']})")
        return kill


def test_a_check_across_fields_names_the_overrides_that_took_part(tmp_path, monkeypatch):
    """It was blamed on the file alone, though a --set or a variable of the other field made it fail."""
    from trajforge.settings import load_section

    for name in [name for name in os.environ if name.startswith("TRAJFORGE__DEMO__")]:
        monkeypatch.delenv(name)
    config = tmp_path / "demo.yaml"
    config.write_text("demo:\n  cap: 10\n  kill: 20\n  limits: {soft: 1, hard: 2}\n")
    with pytest.raises(ConfigError) as refused:
        load_section(_Demo, config, "demo", [("demo.cap", 50)])
    assert f"demo.kill (from {config}) and demo.cap (set by --set demo.cap): Value error, must be at least cap (50)" in str(refused.value)
    monkeypatch.setenv("TRAJFORGE__DEMO__LIMITS__SOFT", "5")
    with pytest.raises(ConfigError) as refused:
        load_section(_Demo, config, "demo", [("demo.kill", 5), ("demo.name", "other")])
    message = str(refused.value)
    assert f"demo.limits (from {config}) and demo.limits.soft (set by TRAJFORGE__DEMO__LIMITS__SOFT): Value error, soft must not exceed hard" in message
    assert "demo.kill (set by --set demo.kill): Value error, must be at least cap (10)" in message  # its own override only
    assert "demo.name" not in message  # an override that changes nothing of the error is not named
    monkeypatch.delenv("TRAJFORGE__DEMO__LIMITS__SOFT")
    monkeypatch.setenv("TRAJFORGE__DEMO__CAP", "30")
    with pytest.raises(ConfigError, match=r"demo\.kill \(set by --set demo\.kill\) and demo\.cap \(set by TRAJFORGE__DEMO__CAP\): "
                                          r"Value error, must be at least cap \(30\)"):
        load_section(_Demo, config, "demo", [("demo.kill", 25)])


def test_a_check_across_fields_of_a_file_alone_still_names_the_file(tmp_path, monkeypatch):
    from trajforge.settings import load_section

    monkeypatch.delenv("TRAJFORGE__DEMO__NAME", raising=False)
    config = tmp_path / "demo.yaml"
    config.write_text("demo:\n  cap: 30\n  kill: 20\n")
    with pytest.raises(ConfigError) as refused:
        load_section(_Demo, config, "demo", [("demo.name", "other")])
    assert str(refused.value) == f"invalid configuration:\n  {config}: demo.kill: Value error, must be at least cap (30) (got 20)"


def test_an_applications_check_across_fields_names_the_override_while_serve_builds_it(tmp_path):
    from trajforge.settings.serve_file import load_app_args

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [{"name": "demo", "route_prefix": "/", "import_path": "demo:app",
                                                        "args": {"cap": 10, "kill": 20}}]}))
    serve_file = load_serve_file(config, [parse_assignment("demo.cap=40")], environ={})
    with serve_file.args_source(), pytest.raises(ConfigError) as refused:
        load_app_args(_Demo, "demo", serve_file.app("demo").args, environ={})
    assert f"demo.kill (from {config}) and demo.cap (set by --set demo.cap): Value error, must be at least cap (40)" in str(refused.value)


def test_a_sections_settings_at_the_top_level_of_its_file_or_a_file_without_the_section_are_refused_not_ignored(tmp_path):
    from trajforge.settings import load_section

    config = tmp_path / "demo.yaml"
    config.write_text("cap: 10\nkill: 20\nnotes: mine\n")
    with pytest.raises(ConfigError, match=r"cap, kill are settings of demo at the top level of the file.*put them under `demo:`"):
        load_section(_Demo, config, "demo")
    config.write_text("other:\n  cap: 1\n")  # another component's file given as its --config: the defaults would run
    with pytest.raises(ConfigError, match=r"demo\.yaml: no `demo:` section \(the file has other\).*put the demo settings under `demo:`"):
        load_section(_Demo, config, "demo")
    config.write_text("")  # an empty file is the defaults
    assert load_section(_Demo, config, "demo").cap == _Demo().cap
