"""An override variable that no config reads is said at the command's start, not ignored without a word."""

from __future__ import annotations

import os
import subprocess
import sys

from trajforge.settings.env_check import stray_variables


def test_a_misspelt_section_or_prefix_is_named_with_the_variable_meant():
    lines = stray_variables({"TRAJFORGE__LERNER__OPTIM__LR": "2e-5", "TRAJFORGE_LEARNER__OPTIM__LR": "2e-5"})
    assert lines == [
        "TRAJFORGE_LEARNER__OPTIM__LR is not read: config overrides start with TRAJFORGE__ (two underscores), e.g. "
        "TRAJFORGE__LEARNER__OPTIM__LR",
        "TRAJFORGE__LERNER__OPTIM__LR is not read: no config has a section 'lerner' (actors, build, cluster, datasets, domains, embed, "
        "generate, http_options, ingest, learner, proxy_location, sandbox, synth_records, teacher): did you mean TRAJFORGE__LEARNER__...?",
    ]


def test_the_variables_the_readme_names_pass_without_a_word():
    assert stray_variables({"TRAJFORGE__INGEST__NUM_REPLICAS": "2", "TRAJFORGE__LEARNER__OPTIM__LR": "2e-5",
                            "TRAJFORGE__HTTP_OPTIONS__PORT": "8001", "TRAJFORGE__SANDBOX__WALL_TIME_S": "10",
                            "TRAJFORGE_HOME": "/srv/trajforge", "TRAJFORGE_LOG_DIR": "/var/log/trajforge", "TRAJFORGE_TOKEN": "sk_x",
                            "TRAJFORGE_SECRET_KEY": "k", "TRAJFORGE_TLS_KEY_PASSWORD": "p", "TRAJFORGE_LOG_KEEP_DAYS": "14"}) == []


def test_every_command_says_it_at_its_start(tmp_path):
    environ = {**os.environ, "TRAJFORGE__LERNER__OPTIM__LR": "2e-5"}
    done = subprocess.run([sys.executable, "-m", "trajforge", "stats", "--lake", str(tmp_path)], capture_output=True, text=True,
                          env=environ, timeout=120)
    assert "WARNING trajforge.settings.env_check: TRAJFORGE__LERNER__OPTIM__LR is not read: no config has a section 'lerner'" in done.stderr
    done = subprocess.run([sys.executable, "-m", "pipelines.build", "--lake", str(tmp_path / "none")], capture_output=True, text=True,
                          env=environ, timeout=120)
    assert "did you mean TRAJFORGE__LEARNER__...?" in done.stderr and done.returncode == 2


def test_a_section_the_commands_own_config_file_has_is_read_not_stray(tmp_path):
    """An application of a `trajforge serve --config` file (`myapp`) is a section its variables may name."""
    import yaml

    data = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "serve.yaml")))
    data["applications"].append({"name": "myapp", "route_prefix": "/mine", "import_path": "serve_apps.ingest.app:build_app", "args": {}})
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(data))
    environ = {**os.environ, "TRAJFORGE__MYAPP__LAKE": "/tmp/x"}
    done = subprocess.run([sys.executable, "-m", "trajforge", "serve", "--config", str(config), "--apps", ""], capture_output=True,
                          text=True, env=environ, timeout=120)
    assert done.returncode == 2 and "names no application" in done.stderr  # refused at load, before any Ray
    assert "TRAJFORGE__MYAPP__LAKE is not read" not in done.stderr
    assert stray_variables({"TRAJFORGE__MYAPP__LAKE": "/tmp/x"}, known=["myapp"]) == []
