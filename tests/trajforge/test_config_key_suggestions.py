"""A misspelt or misplaced config key is refused naming the key the user most likely meant, or the keys there are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from learner.settings import load_learner_settings
from pipelines.build.settings import load_build_settings
from serve_apps.ingest.settings import load_settings
from trajforge.errors import ConfigError
from trajforge.settings.serve_file import load_serve_file

REPO = Path(__file__).resolve().parents[2]


def test_a_misspelt_key_names_the_closest_key_beside_it():
    with pytest.raises(ConfigError, match=r"build\.dedup\.treshold \(set by --set build\.dedup\.treshold\): unknown key: "
                                          r"did you mean build\.dedup\.threshold\?"):
        load_build_settings(assignments=[("build.dedup.treshold", 0.9)])
    with pytest.raises(ConfigError, match=r"ingest\.rate_limits\.per_adress_per_minute: unknown key: did you mean "
                                          r"ingest\.rate_limits\.per_address_per_minute\?"):
        load_settings({"rate_limits": {"per_adress_per_minute": 5}}, environ={})


def test_a_key_put_in_the_wrong_section_names_where_it_belongs():
    with pytest.raises(ConfigError, match=r"learner\.train\.lr \(set by --set learner\.train\.lr\): unknown key: did you mean "
                                          r"learner\.optim\.lr\?"):
        load_learner_settings(assignments=[("learner.train.lr", 1e-4)])


def test_a_key_like_none_there_lists_the_keys_the_place_takes():
    with pytest.raises(ConfigError, match=r"learner\.train\.lerning_rate \(set by --set learner\.train\.lerning_rate\): unknown key: "
                                          r"learner\.train takes .*gradient_accumulation_steps, .*max_steps, micro_batch_size"):
        load_learner_settings(assignments=[("learner.train.lerning_rate", 1e-4)])


def test_a_key_inside_a_list_item_and_the_serve_files_top_level(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.data\.builds\.0\.wieght .*unknown key: did you mean learner\.data\.builds\.0\.weight\?"):
        load_learner_settings(assignments=[("learner.data.builds", [{"build": "latest", "wieght": 1}])])
    data = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    data["http_option"] = data.pop("http_options")
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"serve\.yaml: http_option: unknown key: did you mean http_options\?"):
        load_serve_file(path, environ={})


def test_the_cli_says_it_in_one_line_with_exit_status_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "trajforge", "train", "--estimate", "--set", "learner.optim.lerning_rate=1e-4"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "learner.optim.lerning_rate (set by --set learner.optim.lerning_rate): unknown key: learner.optim takes " in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_key_an_override_made_blames_the_override_not_the_file(monkeypatch):
    """`--set learner.trian.max_steps=1` makes the unknown `learner.trian`: the error named configs/learner.yaml."""
    with pytest.raises(ConfigError, match=r"learner\.trian \(set by --set learner\.trian\.max_steps\): unknown key: did you mean "
                                          r"learner\.train\?"):
        load_learner_settings(assignments=[("learner.trian.max_steps", 1)])
    monkeypatch.setenv("TRAJFORGE__BUILD__DEDUPE__THRESHOLD", "0.9")
    with pytest.raises(ConfigError, match=r"build\.dedupe \(set by TRAJFORGE__BUILD__DEDUPE__THRESHOLD\): unknown key: did you mean "
                                          r"build\.dedup\?"):
        load_build_settings()
