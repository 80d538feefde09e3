"""`trajforge embed`: a bad model, text, URL or domains file is one line on stderr and exit status 2, never a traceback;
and the Ray Data model stage takes Ray's read-only arrays without a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from trajforge.cli.main import main


def error_line(capsys) -> str:
    """The command's one error line on stderr (log lines of the model's loading aside), with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("trajforge embed: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def test_a_model_folder_that_does_not_exist_is_named(capsys, tmp_path):
    missing = tmp_path / "nope"
    assert main(["embed", "--model", str(missing), "some text"]) == 2
    err = error_line(capsys)
    assert f"model folder {missing} does not exist" in err and "pass an existing model folder, `packaged`" in err


def test_a_model_id_not_in_the_cache_is_one_line_naming_it(capsys):
    assert main(["embed", "--model", "no-such-org/no-such-model", "some text"]) == 2
    assert "cannot load model 'no-such-org/no-such-model'" in error_line(capsys)


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_an_empty_text_is_refused_as_the_embed_service_refuses_it(capsys, text):
    from serve_apps.embed.service import HTTPError, _inputs

    with pytest.raises(HTTPError):  # the service's 400 missing_input, for the empty string
        _inputs({"input": ""}, limit=8)
    assert main(["embed", text]) == 2
    assert "the text to embed is empty" in error_line(capsys)
    assert main(["embed", "--url", "http://127.0.0.1:9", text]) == 2  # refused before any request
    assert "the text to embed is empty" in error_line(capsys)


def test_text_that_is_not_utf8_is_one_line_not_a_traceback(capsys):
    # argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): the tokenizer raised TypeError in-process,
    # and the request's encoding UnicodeEncodeError with --url
    text = b"bad \xff bytes".decode("utf-8", "surrogateescape")
    assert main(["embed", text]) == 2
    assert "the text to embed is not valid UTF-8 (at character 4)" in error_line(capsys)
    assert main(["embed", "--url", "http://127.0.0.1:9", text]) == 2  # refused before any request
    assert "not valid UTF-8" in error_line(capsys)


def test_a_url_without_scheme_says_to_add_http(capsys):
    assert main(["embed", "--url", "localhost:8000", "some text"]) == 2
    err = error_line(capsys)
    assert "'localhost:8000' needs http:// or https://" in err and "http://localhost:8000" in err and "unreachable" not in err


def test_a_missing_domains_file_is_named_as_given_with_domains(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["embed", "--domains", "missing.yaml", "some text"]) == 2
    err = error_line(capsys)
    assert "domains file missing.yaml given with --domains not found" in err and "--config" not in err


def test_the_model_stage_takes_read_only_arrays_without_a_warning(embedder):
    """Ray Data hands `map_batches` stages read-only views of its object store; torch.from_numpy warns on them."""
    texts = ["refactor the billing module", "add a pytest fixture for the auth client"]
    tokens = embedder.tokenize(texts)
    for values in tokens.values():
        values.flags.writeable = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = embedder.embed_tokens(tokens["input_ids"], tokens["token_type_ids"], tokens["attention_mask"])
    assert [str(warning.message) for warning in caught] == []
    assert np.allclose(vectors, embedder.embed(texts), atol=1e-5)


def test_values_is_at_least_one_and_all_of_them_end_without_an_ellipsis(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["embed", "--values", "0", "some text"])
    assert refused.value.code == 2 and "--values: 0 is not at least 1" in capsys.readouterr().err
    assert main(["embed", "--values", "384", "some text"]) == 0
    first = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("first:"))
    assert first.count(",") == 383 and first.endswith("]") and "..." not in first
