"""The build's embedding stages: the kernel's `embed_dataset`, with domain tagging on the model's worker.

Tagging needs the domain prototypes embedded by the same model, so it runs in the embedding actor,
which embeds them once when it starts. Tags travel on as JSON (`domain_tags_json`) next to the
`embedding` tensor column.

On a CPU each session is embedded alone: a batched forward pass pads to the batch's longest text and
its sums then depend on what else is in the batch (about 1e-7), so an incremental build, which embeds
only its new sessions, would not give a full build's bytes. Alone, a text always gives the same vector,
and on a CPU it is no slower (no padding: 7.1 s against 11.1 s for 256 texts of 10-130 words, one
thread). A GPU keeps its batches; its kernels are not bit-reproducible anyway.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipelines.build.settings import EmbeddingSettings
from trajforge.constants import EMBEDDING_DIM
from trajforge.embedding import TOKEN_COLUMNS, EmbedTokensBatch, embed_dataset


class EmbedAndTagBatch(EmbedTokensBatch):
    def __init__(self, **kwargs: Any):
        from trajforge.domains import DomainTagger

        super().__init__(**kwargs)
        self.tagger = DomainTagger(embed=self.embedder.embed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if str(self.embedder.device).startswith("cpu"):
            tokens = [batch.pop(name) for name in TOKEN_COLUMNS]
            rows = [self.embedder.embed_tokens(*(column[row : row + 1] for column in tokens)) for row in range(len(tokens[0]))]
            batch[self.output_column] = np.concatenate(rows) if rows else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        else:
            batch = super().__call__(batch)
        tags = self.tagger.tag_vectors(batch[self.output_column])
        batch["domain"] = [tag["primary"]["domain"] for tag in tags]
        batch["domain_tags_json"] = [json.dumps(tag) for tag in tags]
        batch.pop("embed_text", None)
        return batch


def embed_and_tag(dataset, settings: EmbeddingSettings):
    return embed_dataset(dataset, text_column="embed_text", model=settings.model, batch_size=settings.batch_size, embedders=settings.actors,
                         num_gpus=settings.num_gpus, tokenizers=1, cpus_per_worker=settings.cpus, stage=EmbedAndTagBatch)
