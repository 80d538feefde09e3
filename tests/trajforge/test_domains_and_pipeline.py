"""Domain tagging (embedding and keyword methods) and the Ray Data embedding path."""

from __future__ import annotations

import numpy as np
import pytest

from trajforge.contracts.envelope import DomainTags
from trajforge.domains import DomainTagger, load_domains
from trajforge.errors import ConfigError


@pytest.fixture(scope="module")
def tagger(embedder):
    return DomainTagger(embed=lambda texts: embedder.embed(texts).tolist())


@pytest.mark.parametrize("text, domain", [
    ("frontend\nScaffold a Vite React app with a useState hook in App.tsx", "react_frontend"),
    ("Fix the Vue single-file component and its Pinia store", "vue_frontend"),
    ("terraform plan shows the EKS node group will be replaced; check the helm release", "infra_devops"),
    ("The DuckDB SQL join double counts orders; compare the pandas dataframe totals", "data_engineering"),
    ("Spring Boot service: mvn test fails in the JPA repository", "java_backend"),
])
def test_embedding_method_ranks_the_right_domain_first(tagger, text, domain):
    tags = tagger.tag(text)
    assert tags["method"] == "embedding" and tags["primary"]["domain"] == domain
    assert tags["primary"]["confidence"] >= tags["secondary"]["confidence"] >= tags["tertiary"]["confidence"]
    DomainTags.model_validate({rank: tags[rank] for rank in ("primary", "secondary", "tertiary")})


def test_keyword_fallback_when_no_model():
    tags = DomainTagger().tag("kubectl apply the helm chart, then terraform apply")
    assert tags["method"] == "keywords" and tags["primary"]["domain"] == "infra_devops"
    assert sum(tags[rank]["confidence"] for rank in ("primary", "secondary", "tertiary") if rank in tags) <= 1.0 + 1e-9
    assert all(tags[rank]["confidence"] > 0 for rank in ("primary", "secondary", "tertiary") if rank in tags)


def test_keyword_fallback_names_no_domain_for_a_text_without_any_keyword():
    assert DomainTagger().tag("hello there, how was your weekend?") == {"method": "keywords"}


@pytest.mark.parametrize("text, domain", [
    ("Writing JavaScript with React hooks", "react_frontend"),  # `java` is not in "javascript"
    ("fix the precision of the decision logic", None),  # nor `ci` in "precision"
    ("the expression parser in the data pipeline", None),  # nor `express` in "expression", `pip` in "pipeline"
    ("we meet in two weeks about the new laws", None),  # nor `eks` in "weeks", `aws` in "laws"
    ("DuckDB joins over two dataframes", "data_engineering"),  # plurals count
    ("rename main.py", "python_backend"),  # a keyword that starts with a dot
])
def test_keywords_count_as_whole_words_not_inside_other_words(text, domain):
    tags = DomainTagger().tag_keywords(text)
    assert tags.get("primary", {}).get("domain") == domain, tags


def test_an_embedder_that_fails_falls_back_to_keywords(embedder):
    def unavailable(texts):
        raise RuntimeError("HTTP 503: the model is loading")

    assert DomainTagger(embed=unavailable).tag("terraform apply on the EKS cluster")["method"] == "keywords"
    calls = []

    def fails_later(texts):
        calls.append(len(texts))
        if len(calls) > 1:
            raise RuntimeError("connection refused")
        return embedder.embed(texts).tolist()

    tags = DomainTagger(embed=fails_later).tag("kubectl apply the helm chart")  # worked at start, gone when tagging
    assert tags["method"] == "keywords" and tags["primary"]["domain"] == "infra_devops"


def test_a_service_that_is_not_there_is_a_runtime_error_the_tagger_falls_back_on(capsys):
    from helpers import free_port

    from trajforge import embedding
    from trajforge.cli.main import main

    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match="unreachable"):
        embedding.remote(down)(["hello"])
    assert DomainTagger(embed=embedding.remote(down)).tag("kubectl apply the helm chart")["method"] == "keywords"
    assert main(["embed", "hello", "--url", down]) != 0  # the CLI says so, no traceback
    assert "unreachable" in capsys.readouterr().err


def test_domains_file_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "domains.yaml"
    bad.write_text("domains:\n  a: {description: x}\n  b: {description: y}\n  c: {description: z, keyword: [oops]}\n")
    with pytest.raises(ConfigError, match="domains.c.keyword: unknown key"):
        load_domains(bad)
    assert {"react_frontend", "vue_frontend", "typescript_node", "python_backend", "java_backend", "infra_devops", "data_engineering"} <= set(load_domains().domains)


def test_ray_data_path_gives_the_same_vectors(serve_url, embedder):
    import ray

    from trajforge.embedding import embed_dataset

    texts = [f"{word} the {topic} module" * (1 + i % 5) for i, (word, topic) in enumerate(
        [(w, t) for w in ("refactor", "test", "document", "profile") for t in ("billing", "auth", "search", "ui", "etl")] * 3)]
    dataset = ray.data.from_items([{"id": i, "text": text} for i, text in enumerate(texts)])
    rows = sorted(embed_dataset(dataset, batch_size=16, tokenizers=1, embedders=1, threads=1, cpus_per_worker=0.05).take_all(), key=lambda row: row["id"])
    got = np.array([row["embedding"] for row in rows])
    assert got.shape == (len(texts), 384)
    assert np.allclose(got, embedder.embed(texts), atol=1e-5)


def test_light_tokenizer_matches_the_models_own(embedder):
    from trajforge.embedding import TextTokenizer

    texts = ["  leading and trailing  ", "", "Ünïcödé café naïve 日本語のテキスト 🚀", "x" * 2000, "word " * 400,
             "tabs\tand\nnewlines\r\n", "Straße ΣΊΣΥΦΟΣ ǅ", "def handler(request):\n    return Response(status=200)"]
    expected, got = embedder.tokenize(texts), TextTokenizer()(texts)
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert got[name].shape == expected[name].shape
        assert np.array_equal(got[name], expected[name]), name


def test_light_tokenizer_falls_back_to_the_model_without_tokenizer_json(tmp_path, embedder):
    import shutil

    from trajforge.embedding import TextTokenizer, resolve_model

    model = tmp_path / "model"
    shutil.copytree(resolve_model("packaged"), model)
    (model / "tokenizer.json").unlink()
    texts = ["refactor the billing module", "add a pytest fixture"]
    assert np.array_equal(TextTokenizer(str(model))(texts)["input_ids"], embedder.tokenize(texts)["input_ids"])
