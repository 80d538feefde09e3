"""A config file that is not YAML is one line naming the file, the line and the column (as editors count them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.build.settings import load_build_settings
from trajforge.errors import ConfigError


@pytest.mark.parametrize(("text", "said"), [
    ("build:\n  dedup:\n    threshold: 0.9\n   bad: [1\n",
     "not valid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>' (while parsing a block "
     "mapping at line 2, column 3)"),
    ("build:\n  lake: \"abc\n", "not valid YAML at line 3, column 1: found unexpected end of stream (while scanning a quoted "
                                "scalar at line 2, column 9)"),
    ("build:\n  dedup:\n\tthreshold: 0.9\n", "not valid YAML at line 3, column 1: found character '\\t' that cannot start any token"),
])
def test_a_yaml_syntax_error_names_the_file_line_and_column_in_one_line(tmp_path, text, said):
    config = tmp_path / "pipeline.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_build_settings(config)
    assert str(refused.value).startswith(f"{config}: {said}") and "\n" not in str(refused.value) and "<unicode string>" not in str(refused.value)


def test_the_command_says_it_in_one_line_with_exit_status_2(tmp_path):
    (tmp_path / "pipeline.yaml").write_text("build:\n  dedup: [0.9\n")
    done = subprocess.run([sys.executable, "-m", "trajforge", "build", "--config", "pipeline.yaml"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["trajforge build: pipeline.yaml: not valid YAML at line 3, column 1: expected ',' or ']', but got "
                                        "'<stream end>' (while parsing a flow sequence at line 2, column 10)"]


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path):
    """PyYAML kept the second `dedup:` and dropped the first one's threshold without a word."""
    config = tmp_path / "pipeline.yaml"
    config.write_text("build:\n  dedup:\n    threshold: 0.9\n  lake: ./lake\n  dedup: {shingle_size: 5}\n")
    with pytest.raises(ConfigError) as refused:
        load_build_settings(config)
    assert str(refused.value) == (f"{config}: not valid YAML at line 5, column 3: found the key 'dedup' twice (first at line 2) "
                                  "(while constructing a mapping at line 2, column 3)")


def test_every_shipped_config_has_each_key_once_and_merge_keys_still_override(tmp_path):
    from trajforge.settings import SHIPPED_CONFIGS, read_yaml

    for path in sorted(SHIPPED_CONFIGS.glob("*.yaml")):
        read_yaml(path)
    config = tmp_path / "anchors.yaml"
    config.write_text("base: &base {a: 1, b: 2}\nbuild:\n  <<: *base\n  b: 3\n")
    assert read_yaml(config)["build"] == {"a": 1, "b": 3}
