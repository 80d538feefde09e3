"""The build's embedding stages: the kernel's `embed_dataset`, with domain tagging on the model's worker.

Tagging needs the domain prototypes embedded by the same model, so it runs in the embedding actor,
which embeds them once when it starts. Tags travel on as JSON (`domain_tags_json`) next to the
`embedding` tensor column.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.build.settings import EmbeddingSettings
from trajforge.embedding import EmbedTokensBatch, embed_dataset


class EmbedAndTagBatch(EmbedTokensBatch):
    def __init__(self, **kwargs: Any):
        from trajforge.domains import DomainTagger

        super().__init__(**kwargs)
        self.tagger = DomainTagger(embed=self.embedder.embed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = super().__call__(batch)
        tags = self.tagger.tag_vectors(batch[self.output_column])
        batch["domain"] = [tag["primary"]["domain"] for tag in tags]
        batch["domain_tags_json"] = [json.dumps(tag) for tag in tags]
        batch.pop("embed_text", None)
        return batch


def embed_and_tag(dataset, settings: EmbeddingSettings):
    return embed_dataset(dataset, text_column="embed_text", model=settings.model, batch_size=settings.batch_size, embedders=settings.actors,
                         num_gpus=settings.num_gpus, tokenizers=1, cpus_per_worker=settings.cpus, stage=EmbedAndTagBatch)
