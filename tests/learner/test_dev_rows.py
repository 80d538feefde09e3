"""The evaluation's dev rows: drawn from every build of the mixture, not only from the first one's dev split."""

from __future__ import annotations

from sft_builds import rows, write_build

from learner.chat import ChatEncoder
from learner.sources import open_split, prepare_source
from learner.stream import dev_rows
from trajforge.lake import Lake


def test_the_dev_rows_come_from_every_build(tmp_path, tokenizer):
    lake = tmp_path / "lake"
    write_build(lake, "first", rows(8, dev=4, seed=1))
    write_build(lake, "second", rows(8, dev=4, seed=2))
    sources = [prepare_source(Lake.at(lake), build, 1.0, tmp_path / "cache") for build in ("first", "second")]
    tables = [open_split(source, "dev") for source in sources]
    encoder = ChatEncoder(tokenizer, seq_len=256)  # one example a row
    own = [{example.input_ids.tobytes() for example in encoder.encode(table.column("messages").to_pylist())} for table in tables]
    evaluated = [example.input_ids.tobytes() for row in dev_rows(tables, encoder, limit=4, window=4) for example in row]
    assert len(evaluated) == 4
    assert [sum(example in examples for example in evaluated) for examples in own] == [2, 2]


def test_the_dev_rows_are_not_the_longest_examples_only(tmp_path, tokenizer):
    lake = tmp_path / "lake"
    sft_rows = rows(18, dev=16, seed=3, assistant_turns=1)
    for row in sft_rows[:8]:  # half the dev rows run past seq_len: cut to it, each fills a row alone
        row["messages"][-1]["content"] = " ".join(["patch"] * 400)
    write_build(lake, "mixed", sft_rows)
    table = open_split(prepare_source(Lake.at(lake), "mixed", 1.0, tmp_path / "cache"), "dev")
    encoder = ChatEncoder(tokenizer, seq_len=256)
    evaluated = [len(example) for row in dev_rows([table], encoder, limit=6, window=16) for example in row]
    # packing places the longest examples first: the first 6 rows were 6 of the 8 cut ones, no short example at all
    assert any(length < 256 for length in evaluated), evaluated
