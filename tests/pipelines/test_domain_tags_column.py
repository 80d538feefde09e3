"""The trajectories table's `domain_tags` column holds seed 004's `domain_tags` object, whichever method tagged."""

from __future__ import annotations

import pyarrow as pa

from pipelines.build.process import _tags
from pipelines.build.staging import STAGE_SCHEMAS
from trajforge.contracts.curated import TRAJECTORIES
from trajforge.domains import DomainTagger


def test_the_column_is_the_seeds_object_with_its_rank_names():
    column = TRAJECTORIES.field("domain_tags").type
    assert [field.name for field in column] == ["primary", "secondary", "tertiary", "method"]
    for rank in ("primary", "secondary", "tertiary"):
        assert [field.name for field in column.field(rank).type] == ["domain", "confidence"]
    assert STAGE_SCHEMAS["embeddings"].field("domain_tags").type == column


def test_keyword_tags_keep_their_ranks_and_method_and_no_keyword_is_null():
    tagger = DomainTagger()
    domain, tags = _tags(tagger, "kubectl apply the helm chart, then terraform apply; the pandas dataframe")
    stored = pa.array([tags], TRAJECTORIES.field("domain_tags").type).to_pylist()[0]
    assert domain == "infra_devops" == stored["primary"]["domain"] and stored["method"] == "keywords"
    assert stored["secondary"]["domain"] == "data_engineering" and stored["tertiary"] is None
    assert 0 < stored["secondary"]["confidence"] < stored["primary"]["confidence"] <= 1
    assert _tags(tagger, "hello there, how was your weekend?") == (None, None)
