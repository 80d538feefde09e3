"""The embedded default model: a small Qwen3-architecture causal LM with random weights, saved once.

It is created from a config, saved to disk and from then on loaded exactly like a real checkpoint
(`AutoModelForCausalLM.from_pretrained(path)`), so the learner and the generation engines run their
real loading code on a machine with no hub. Its tokenizer is a byte-level BPE trained with the
`tokenizers` library on local text (the example sessions and the repository's code by default),
with Qwen's ChatML special tokens and chat template. The real setup names a local Qwen3-14B
directory instead.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trajforge.atomic import staged_dir

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path("models/small-qwen3")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_corpus() -> Iterator[str]:
    """Local text to train the tokenizer on: the recorded sessions, then the repository's code and configs."""
    for path in sorted((REPO / "examples" / "sessions").glob("*.json")):
        yield path.read_text(encoding="utf-8")
    for pattern in ("trajforge/**/*.py", "sandbox/**/*.py", "configs/*.yaml", "README.md"):
        for path in sorted(REPO.glob(pattern)):
            yield path.read_text(encoding="utf-8", errors="replace")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A byte-level BPE (any text encodes, nothing is unknown) wrapped as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token=None, unk_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def small_config(vocab_size: int = 4096, *, hidden_size: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 eos_token_id: int | None = None, pad_token_id: int | None = None):
    """The small model's Qwen3Config: its shape, with the tokenizer's special ids once it has one."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 3, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=hidden_size // heads, max_position_embeddings=4096,
        tie_word_embeddings=True, eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None,
    )


def _complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "tokenizer.json").is_file()


@contextmanager
def _creating(directory: Path) -> Iterator[None]:
    """Held while one process creates the model: another one waits, then finds it made."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_small_model(directory: str | Path = DEFAULT_DIR, texts: Iterable[str] | None = None, *, vocab_size: int = 4096,
                       hidden_size: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0) -> Path:
    """The model directory, created on first use: by one process at a time, filled under a temporary name,
    fsync'd and renamed into place, so a kill leaves no half-made model and two processes never replace
    each other's (the second one uses the first one's)."""
    directory = Path(directory)
    if _complete(directory):
        return directory
    with _creating(directory):
        if _complete(directory):
            return directory
        _create(directory, texts, vocab_size=vocab_size, hidden_size=hidden_size, layers=layers, heads=heads, kv_heads=kv_heads, seed=seed)
    return directory


def _create(directory: Path, texts: Iterable[str] | None, *, vocab_size: int, hidden_size: int, layers: int, heads: int, kv_heads: int,
            seed: int) -> None:
    import torch
    from transformers import Qwen3ForCausalLM

    log.info("creating the small Qwen3-shaped model in %s (first use)", directory)
    tokenizer = train_tokenizer(texts if texts is not None else default_corpus(), vocab_size)
    config = small_config(len(tokenizer), hidden_size=hidden_size, layers=layers, heads=heads, kv_heads=kv_heads,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with staged_dir(directory) as staging:  # an incomplete directory there (made by hand, or by older code) is replaced
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "trajforge_model.json").write_text(json.dumps({"created_by": "trajforge.small_model", "seed": seed}) + "\n")
