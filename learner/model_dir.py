"""Is `learner.model` a folder the workers can train? Checked on the driver, before Ray starts any worker.

A worker that finds the folder wanting fails only after Ray, the workers and DeepSpeed have started
(a minute on a laptop, more on a cluster), so the driver looks first at what every worker will read:
a config.json transformers understands, a tokenizer (tokenizer.json, or tokenizer_config.json with the
vocabulary files a slow tokenizer reads), a chat template (each sft row is rendered with it), and weights.
Of the weights it reads only each safetensors file's header: a truncated or damaged copy (the usual
failed download) is named here; damage past the header is still found by the workers' loading.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from trajforge.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt", "*.tiktoken", "qwen.tiktoken")
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


def check_safetensors(path: Path) -> None:
    """The header (an 8-byte length, then JSON giving each tensor's byte range) agrees with the file's size."""
    size = path.stat().st_size
    problem = None
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8)) if size >= 8 else (None,)
            if length is None or length > size - 8:
                problem = f"its header says {length} bytes of the {size}" if length is not None else f"it has {size} bytes"
            else:
                header = json.loads(handle.read(length))
                end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
                if 8 + length + end != size:
                    problem = f"its tensors end at byte {8 + length + end}, the file has {size}"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        problem = f"its header cannot be read ({exc})"
    if problem:
        raise ConfigError(f"learner.model: {path} is not a complete safetensors file ({problem}): the copy is truncated or "
                          "damaged; copy or download the checkpoint again")


def check_tokenizer_files(path: Path) -> None:
    """tokenizer_config.json is JSON and tokenizer.json a tokenizer `tokenizers` loads (a truncated download of either
    failed in the workers as a bare "JSONDecodeError: Expecting value", naming no file)."""
    from tokenizers import Tokenizer

    problem, name = None, None
    try:
        name = "tokenizer_config.json"
        if (path / name).is_file() and not isinstance(json.loads((path / name).read_text(encoding="utf-8")), dict):
            problem = "not a JSON object"
        name = "tokenizer.json"
        if problem is None and (path / name).is_file():
            Tokenizer.from_file(str(path / name))
    except Exception as exc:  # noqa: BLE001 - json's and the Rust tokenizer's errors alike name the damage
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if problem:
        raise ConfigError(f"learner.model: {path / name} cannot be read ({problem}): the copy is truncated or damaged; "
                          "copy or download the checkpoint's tokenizer files again")


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
    if not any(any(path.glob(pattern)) for pattern in VOCABULARY_FILES):
        raise ConfigError(f"learner.model: {path} has a tokenizer_config.json but no vocabulary (tokenizer.json, or vocab.json with "
                          "merges.txt, tokenizer.model); copy the checkpoint's tokenizer files too")
    check_tokenizer_files(path)
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    if not has_chat_template(path):
        raise ConfigError(f"learner.model: {path} has no chat template (chat_template.jinja, or chat_template in tokenizer_config.json), "
                          "which renders the sft rows; use the chat (instruct) checkpoint, or add the template to the folder")
    return path
