"""The build's embedding stage on a CPU: a session's vector and tags do not depend on the batch it is embedded in,
so an incremental build (which embeds only its new sessions) writes a full build's bytes."""

from __future__ import annotations

import json

import numpy as np

from pipelines.build.embed_stage import EmbedAndTagBatch
from trajforge.embedding import TextTokenizer

TEXTS = [
    "frontend\nScaffold a Vite React app with a useState hook in App.tsx",
    "backend\n" + "terraform plan shows the EKS node group will be replaced; check the helm release and the IAM role " * 4,
    "Fix the Vue single-file component and its Pinia store",
]


def _embedded(stage: EmbedAndTagBatch, texts: list[str]) -> dict:
    return stage({"session_id": np.array(texts, dtype=object), "embed_text": np.array(texts, dtype=object), **TextTokenizer()(texts)})


def test_a_sessions_vector_and_tags_do_not_depend_on_its_batch():
    stage = EmbedAndTagBatch(device="cpu", threads=1)
    together = _embedded(stage, TEXTS)
    assert together["embedding"].shape == (3, 384) and "embed_text" not in together
    for row, text in enumerate(TEXTS):
        alone = _embedded(stage, [text])
        assert np.array_equal(alone["embedding"][0], together["embedding"][row]), text
        assert alone["domain_tags_json"][0] == together["domain_tags_json"][row]
    assert json.loads(together["domain_tags_json"][0])["primary"]["domain"] == "react_frontend"
    assert _embedded(stage, [])["embedding"].shape == (0, 384)
