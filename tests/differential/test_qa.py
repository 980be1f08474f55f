"""task=qa equals Transformers 4's question-answering pipeline (`oracles.qa`) on token-type models (BERT,
DeBERTa-v2), DistilBERT (no token types), RoBERTa (offset positions): short and long contexts (several
windows), one record at a time and in batches of mixed lengths, from the CLI and the Python API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from differential import oracles
from differential.conftest import Zoo, api, cli_rows, note, words

FAMILIES = ("bert-qa", "deberta-qa", "distilbert-qa", "roberta-qa")
RECORDS = [
    {"id": "short", "question": "what is the capital of france", "context": "paris is the capital of france ."},
    {"id": "mid", "question": "who jumps", "context": words(60, 3)},
    {"id": "long", "question": "which number", "context": words(700, 1)},  # several 384-token windows
    {"id": "tiny", "question": "one", "context": "two three"},
]
TOLERANCE = 1e-4


def load(folder: Path) -> tuple[Any, Any]:
    import transformers

    model = transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def expected(folder: Path, **options: Any) -> dict[str, dict[str, Any] | None]:
    model, tokenizer = load(folder)
    return {r["id"]: oracles.qa(model, tokenizer, r["question"], r["context"], **options) for r in RECORDS}


def check(row: dict[str, Any], want: dict[str, Any] | None, kind: str) -> float:
    """Assert one row equals the oracle's answer; return the score difference."""
    assert want is not None, row
    assert (row["answer"], row["start"], row["end"]) == (want["answer"], want["start"], want["end"]), (row, want)
    assert row["score"] == pytest.approx(want["score"], abs=TOLERANCE)
    return note("qa", kind, abs(row["score"] - want["score"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_qa_api_equals_pipeline(zoo: Zoo, family: str) -> None:

    want = expected(zoo[family])
    with api(zoo[family]) as engine:
        for record in RECORDS:  # one at a time
            check(engine.answer(record["question"], record["context"]), want[record["id"]], family)
        batch = engine.run_task("qa", [{k: r[k] for k in ("question", "context")} for r in RECORDS])
        for record, answer in zip(RECORDS, batch, strict=True):
            check(answer.result, want[record["id"]], family)


@pytest.mark.parametrize("family", ["bert-qa", "roberta-qa"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_qa_cli_equals_pipeline(tmp_path: Path, zoo: Zoo, family: str, batch_size: int) -> None:
    want = expected(zoo[family])
    rows = cli_rows(tmp_path, zoo[family], "qa", RECORDS, f"task.batch_size={batch_size}")
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS]
    for row in rows:
        assert row["error"] is None
        check(row, want[row["id"]], family)


def test_token_types_reach_the_model(zoo: Zoo) -> None:
    """BERT's tokenizer gives the context token type 1: dropping it changes every score (the bug this pins)."""
    import torch

    model, tokenizer = load(zoo["bert-qa"])
    enc = tokenizer("who jumps", words(20), return_tensors="pt")
    assert enc["token_type_ids"].max() == 1
    with torch.inference_mode():
        full = model(**enc).start_logits
        one_segment = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).start_logits
    assert not torch.allclose(full, one_segment)


def test_qa_options_match_the_pipeline_options(zoo: Zoo) -> None:
    """`max_answer_len` and `handle_impossible_answer` (the pipeline's names) decode as the pipeline does."""
    from omnirun.engine.hf.encoders import question_answer

    model, tokenizer = load(zoo["bert-qa"])
    items = [{k: r[k] for k in ("question", "context")} for r in RECORDS]
    for longest, impossible in ((3, False), (30, False), (15, True)):
        answers = question_answer(model, tokenizer, items, 512, max_answer_len=longest, handle_impossible=impossible)
        want = expected(zoo["bert-qa"], max_answer_len=longest, handle_impossible_answer=impossible)
        for record, answer in zip(RECORDS, answers, strict=True):
            check(answer.result, want[record["id"]], "bert-qa (options)")


def test_qa_window_fits_a_short_position_table(tmp_path: Path, zoo: Zoo) -> None:
    """Deliberate difference: with 256 positions the pipeline's 384-token window would index past the table and
    fail on long contexts; omnirun's window is the model's 256 tokens (overlap 128), the pipeline's algorithm
    otherwise."""
    folder = zoo["bert-qa-256"]
    model, tokenizer = load(folder)
    want = {r["id"]: oracles.qa(model, tokenizer, r["question"], r["context"], max_seq_len=256) for r in RECORDS}
    for row in cli_rows(tmp_path, folder, "qa", RECORDS, "task.batch_size=2"):
        assert row["error"] is None
        check(row, want[row["id"]], "bert-qa-256")
