"""Is `learner.model` a folder the workers can train? Checked on the driver, before Ray starts any worker.

A worker that finds the folder wanting fails only after Ray, the workers and DeepSpeed have started
(a minute on a laptop, more on a cluster), so the driver looks first at what every worker will read:
a config.json transformers understands, a tokenizer, a chat template (each sft row is rendered with
it), and weights. It looks only at file names and the config: a weights file that is damaged inside
is still found by the workers' loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from trajforge.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


def has_chat_template(path: Path) -> bool:
    """A template in its own file (`chat_template.jinja`, `chat_template.json`) or in tokenizer_config.json."""
    if any((path / name).is_file() for name in ("chat_template.jinja", "chat_template.json")):
        return True
    try:
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(tokenizer_config, dict) and bool(tokenizer_config.get("chat_template"))


def check_model_dir(path: Path) -> Path:
    """`path` if it holds a trainable Hugging Face causal LM; else a ConfigError naming learner.model and what is missing."""
    from learner.estimate import model_config

    if not path.exists():
        raise ConfigError(f"learner.model: {path} does not exist; it names a local Hugging Face checkpoint folder, which nothing "
                          "downloads: fetch one first, e.g. `hf download Qwen/Qwen3-14B --local-dir /models/Qwen3-14B`, and name "
                          "that folder (`trajforge train --estimate` needs no weights: --set learner.model=qwen3-14b)")
    if not (path / "config.json").is_file() or not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"learner.model: {path} is not a Hugging Face model directory with a tokenizer (config.json, tokenizer.json)")
    model_config(str(path), path)  # one line naming the field when transformers cannot read it
    if not any(any(path.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ConfigError(f"learner.model: {path} has no weights (model.safetensors, or shards with their index); "
                          "copy the whole checkpoint (`trajforge train --estimate` needs only config.json)")
    if not has_chat_template(path):
        raise ConfigError(f"learner.model: {path} has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json), "
                          "which renders the sft rows; use the chat (instruct) checkpoint, or add the template to the folder")
    return path
