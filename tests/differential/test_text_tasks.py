"""classify, token_classify, fill_mask, embed and rerank equal Transformers' own answers (the pipeline where one
exists, `model(**inputs)` otherwise) across BERT, DeBERTa-v2, DistilBERT and RoBERTa, batch and single, CLI and
Python API; texts beyond RoBERTa's 512 tokens; rerank's refusal of a classifier that is not a cross-encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from differential import oracles
from differential.conftest import Zoo, api, cli_rows, note, words

TEXTS = [words(3), words(40, 2), "paris is the capital of france", words(11, 5), words(120, 9)]
TOLERANCE = 1e-4


def pipeline(task: str, folder: Path, **kwargs: Any) -> Any:
    import transformers

    build: Any = transformers.pipeline
    return build(task, model=str(folder), **kwargs)


def unnest(out: Any) -> Any:
    """The pipeline's ranked labels for one text (a text given alone may come back wrapped in a list)."""
    return out[0] if out and isinstance(out[0], list) else out


def scores_close(got: dict[str, float], want: list[dict[str, Any]], task: str, kind: str) -> float:
    assert set(got) == {w["label"] for w in want}
    diff = note(task, kind, max(abs(got[w["label"]] - w["score"]) for w in want))
    assert diff < TOLERANCE
    return diff


@pytest.mark.parametrize("family", ["bert", "deberta", "distilbert", "roberta"])
def test_classify(tmp_path: Path, zoo: Zoo, family: str) -> None:

    folder = zoo[f"{family}-classifier"]
    pipe = pipeline("text-classification", folder, top_k=3)
    want = [unnest(pipe(t)) for t in TEXTS]
    with api(folder) as engine:
        got = engine.classify(TEXTS, top_k=3)
        assert [g["label"] for g in got] == [w[0]["label"] for w in want]
        for g, w in zip(got, want, strict=True):
            scores_close(g["scores"], w, "classify", family)
    rows = cli_rows(tmp_path, folder, "classify", [{"id": str(i), "prompt": t} for i, t in enumerate(TEXTS)],
                    "task.batch_size=3", "task.top_k=3")  # fmt: skip
    for row, w in zip(rows, want, strict=True):
        assert row["label"] == w[0]["label"]
        scores_close(row["scores"], w, "classify", family)


@pytest.mark.parametrize("family", ["bert", "deberta", "distilbert", "roberta"])
def test_token_classify_and_tag_strategy_per_call(zoo: Zoo, family: str) -> None:
    """Each call's aggregation strategy is the pipeline's with that strategy (not the first call's)."""

    folder = zoo[f"{family}-ner"]
    with api(folder) as engine:
        for strategy in ("simple", "none", "first", "max", "simple"):
            want = pipeline("token-classification", folder, aggregation_strategy=strategy)(TEXTS[:4])
            got = engine.tag(TEXTS[:4], aggregation=strategy)
            for g, w in zip(got, want, strict=True):
                assert [(e["entity"], e["word"], e["start"], e["end"]) for e in g] == [
                    (str(x.get("entity_group", x.get("entity"))), x["word"], x["start"], x["end"]) for x in w
                ], strategy
                diffs = [abs(e["score"] - float(x["score"])) for e, x in zip(g, w, strict=True)]
                assert note("token_classify", family, max(diffs, default=0.0)) < TOLERANCE


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_fill_mask(tmp_path: Path, zoo: Zoo, family: str) -> None:

    folder = zoo[f"{family}-mlm"]
    pipe = pipeline("fill-mask", folder, top_k=4)
    mask = pipe.tokenizer.mask_token
    texts = [f"paris is the {mask} of france", f"{words(30)} {mask} {words(5, 3)}"]
    want = [pipe(t) for t in texts]
    with api(folder) as engine:
        got = engine.fill_mask(texts, top_k=4)
    rows = cli_rows(tmp_path, folder, "fill_mask", [{"prompt": t} for t in texts], "task.batch_size=2", "task.top_k=4")
    for g, row, w in zip(got, rows, want, strict=True):
        for predictions in (g, row["predictions"]):
            assert [p["token"] for p in predictions] == [x["token_str"] for x in w]
            diffs = [abs(p["score"] - x["score"]) for p, x in zip(predictions, w, strict=True)]
            assert note("fill_mask", family, max(diffs)) < TOLERANCE


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_embed_mixed_lengths_and_beyond_the_context(tmp_path: Path, zoo: Zoo, family: str) -> None:
    """Mean-pooled, normalized embeddings equal one text at a time through the model; a text longer than 512
    tokens is cut to 512 (RoBERTa's 513-entry table with its padding offset included) and says so."""
    import transformers

    folder = zoo[f"{family}-base"]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    texts = [*TEXTS, words(700, 4)]
    assert len(tokenizer(texts[-1])["input_ids"]) > 512
    want = [oracles.embed(model, tokenizer, t, 512) for t in texts]
    with api(folder) as engine:
        got = engine.embed(texts)
    rows = cli_rows(tmp_path, folder, "embed", [{"prompt": t} for t in texts], "task.batch_size=4")
    for vectors in (got, [r["embedding"] for r in rows]):
        for g, w in zip(vectors, want, strict=True):
            assert note("embed", family, max(abs(a - b) for a, b in zip(g, w, strict=True))) < TOLERANCE
    assert rows[-1]["truncated"] is True and rows[-1]["input_tokens"] == 512


@pytest.mark.parametrize("kind", ["bert-cross-encoder", "bert-cross-encoder-2"])
def test_rerank_cross_encoder(tmp_path: Path, zoo: Zoo, kind: str) -> None:
    import transformers

    folder = zoo[kind]
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    query, docs = "capital of france", [TEXTS[2], TEXTS[1], TEXTS[0], words(600)]
    want = [oracles.cross_score(model, tokenizer, query, d) for d in docs]
    with api(folder) as engine:
        got = engine.rerank(query, docs)
    (row,) = cli_rows(tmp_path, folder, "rerank", [{"query": query, "documents": docs}])
    for result in (got, row):
        diff = max(abs(a - b) for a, b in zip(result["scores"], want, strict=True))
        assert note("rerank", kind, diff) < TOLERANCE
        assert result["ranking"] == sorted(range(len(docs)), key=lambda i: -want[i])


def test_rerank_refuses_a_three_label_classifier(tmp_path: Path, zoo: Zoo) -> None:
    """A sentiment model's P(positive) is not relevance: refused before loading, naming its labels."""
    from omnirun.engine import TransformersEngine
    from omnirun.errors import ConfigError

    engine = TransformersEngine(str(zoo["bert-classifier"]))
    with pytest.raises(ConfigError, match=r"task=rerank needs a cross-encoder.*3 labels \(negative, neutral"):
        engine.rerank("q", ["a", "b"])
    root = tmp_path / "out"
    records = tmp_path / "r.jsonl"
    records.write_text('{"query": "q", "documents": ["a", "b"]}\n')
    from clirun import omnirun

    code = omnirun(root, "task=rerank", f"model.name={zoo['bert-classifier']}", f"input.path={records}")
    assert code == 2
