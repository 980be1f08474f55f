"""Every non-generation task from the CLI on a tiny random model of its head: the row fields, error rows for
bad records (missing fields, unreadable images and audio, a text without a mask token), metrics, resume,
OpenAI batch files in and out, and refusals of a model that cannot serve the task."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_heads import LABELS, MASK, build_head, write_png, write_wav

from clirun import omnirun, only_run_dir


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("heads")
    kinds: tuple[str, ...]
    kinds = ("bert-classifier", "bert-ner", "bert-qa", "bert-mlm", "bert-base", "cross-encoder", "vit-classifier")
    kinds += ("yolos", "segformer", "vit-gpt2", "wav2vec2-classifier", "wav2vec2-ctc", "whisper", "tiny-sd")
    return {kind: build_head(kind, root / kind) for kind in kinds}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    corrupt = root / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return {
        "png": write_png(root / "a.png"),
        "png2": write_png(root / "b.png", width=20, height=30, seed=1),
        "wav": write_wav(root / "a.wav"),
        "wav8k": write_wav(root / "b.wav", seconds=2.0, rate=8000),
        "corrupt": corrupt,
        "missing": root / "missing.png",
    }


def jsonl(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(tmp_path: Path, model: Path, task: str, records: Path, *extra: str) -> tuple[list[dict[str, Any]], dict, Path]:
    """One CLI run; its rows, metrics and run directory."""
    root = tmp_path / f"out-{task}-{len(list(tmp_path.iterdir()))}"
    assert omnirun(root, f"task={task}", f"model.name={model}", f"input.path={records}", *extra) == 0
    run_dir = only_run_dir(root)
    rows = [json.loads(line) for line in (run_dir / "outputs.jsonl").read_text().splitlines()]
    return rows, json.loads((run_dir / "metrics.json").read_text()), run_dir


TEXTS: list[dict[str, Any]] = [
    {"id": "a", "text": "the quick brown fox jumps over a lazy dog"},
    {"id": "b", "prompt": "paris is the capital of france", "text_pair": "berlin"},
    {"id": "c", "prompt": 5},
    {"id": "d"},
]


def test_classify(tmp_path: Path, heads: dict[str, Path]) -> None:
    rows, metrics, _ = run(
        tmp_path, heads["bert-classifier"], "classify", jsonl(tmp_path / "t.jsonl", *TEXTS), "task.top_k=2"
    )
    a, b, c, d = rows
    assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
    assert a["label"] in LABELS.values() and a["score"] == max(a["scores"].values())
    assert len(a["scores"]) == 2 and all(0 < p < 1 for p in a["scores"].values())
    assert b["text_pair"] == "berlin" and b["input_tokens"] > 0 and a["input_tokens"] > 0
    assert "'prompt' must be a string" in c["error"] and "missing 'prompt'" in d["error"]
    assert metrics["num_errors"] == 2 and metrics["samples_per_s"] > 0 and metrics["input_tokens_per_s"] > 0


@pytest.mark.parametrize("aggregation", ["simple", "none"])
def test_token_classify(tmp_path: Path, heads: dict[str, Path], aggregation: str) -> None:
    records = jsonl(tmp_path / "t.jsonl", *TEXTS[:2])
    rows, _, _ = run(tmp_path, heads["bert-ner"], "token_classify", records, f"task.aggregation={aggregation}")
    for row in rows:
        assert row["entities"], row
        for e in row["entities"]:
            text = row["prompt"]
            assert 0 <= e["start"] < e["end"] <= len(text) and 0 < e["score"] <= 1
            tags = {"PER", "LOC"} if aggregation == "simple" else {"B-PER", "I-PER", "B-LOC", "I-LOC"}
            assert e["entity"] in tags


def test_qa(tmp_path: Path, heads: dict[str, Path]) -> None:
    context = "paris is the capital of france and berlin is the capital of germany. " * 30  # past one window
    records = jsonl(
        tmp_path / "q.jsonl",
        {"id": "q1", "question": "what is the capital of france", "context": context},
        {"id": "q2", "question": "who?"},
        {"id": "q3", "question": "", "context": "x"},
    )
    rows, _, _ = run(tmp_path, heads["bert-qa"], "qa", records)
    q1, q2, q3 = rows
    assert q1["answer"] == context[q1["start"] : q1["end"]] and q1["answer"] and 0 < q1["score"] <= 1
    assert q1["input_tokens"] > 256  # the long context was read in several strided windows
    assert "missing 'context'" in q2["error"] and "'question' is empty" in q3["error"]


def test_fill_mask(tmp_path: Path, heads: dict[str, Path]) -> None:
    records = jsonl(tmp_path / "m.jsonl", {"id": "m1", "text": f"hello {MASK} world"}, {"id": "m2", "text": "no mask"})
    rows, _, _ = run(tmp_path, heads["bert-mlm"], "fill_mask", records, "task.top_k=3")
    m1, m2 = rows
    assert len(m1["predictions"]) == 3
    for p in m1["predictions"]:
        assert p["sequence"] == f"hello {p['token']} world" or p["token"] in p["sequence"]
    scores = [p["score"] for p in m1["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert "record m2" in m2["error"] and "mask" in m2["error"]


def test_embed_npy_pooling_and_resume(tmp_path: Path, heads: dict[str, Path]) -> None:
    texts = [{"id": f"r{i}", "text": f"sentence number {i} about the lazy dog"} for i in range(20)]
    texts[5] = {"id": "r5", "text": ""}
    texts[7]["text"] = texts[3]["text"]
    records = jsonl(tmp_path / "e.jsonl", *texts)
    args = ("output.embeddings=npy", "task.batch_size=2")
    rows, metrics, run_dir = run(tmp_path, heads["bert-base"], "embed", records, *args)
    assert rows[3]["embedding"] == rows[7]["embedding"] and rows[0]["dim"] == 32
    assert math.isclose(sum(x * x for x in rows[0]["embedding"]), 1.0, rel_tol=1e-5)
    matrix = np.load(run_dir / "embeddings.npy")
    assert matrix.shape == (20, 32) and np.isnan(matrix[5]).all() and np.allclose(matrix[0], rows[0]["embedding"])
    assert metrics["num_errors"] == 1 and metrics["output_tokens"] == 0

    cls_rows, _, _ = run(tmp_path, heads["bert-base"], "embed", records, "task.pooling=cls", "task.normalize=false")
    assert cls_rows[0]["embedding"] != rows[0]["embedding"]
    assert not math.isclose(sum(x * x for x in cls_rows[0]["embedding"]), 1.0, rel_tol=1e-3)

    # an interrupted run (the first window kept, a torn line after it) resumes to the same rows
    lines = (run_dir / "outputs.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "outputs.jsonl").write_text("".join(lines[:16]) + '{"id": "r16", "embedd')
    (run_dir / "metrics.json").unlink()
    root = run_dir.parents[2]
    assert (
        omnirun(
            root, "task=embed", f"model.name={heads['bert-base']}", f"input.path={records}", *args, f"resume={run_dir}"
        )
        == 0
    )
    resumed = [json.loads(line) for line in (run_dir / "outputs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in resumed] == [r["id"] for r in rows]
    assert all(np.allclose(x.get("embedding", []), y.get("embedding", [])) for x, y in zip(resumed, rows, strict=True))
    assert json.loads((run_dir / "metrics.json").read_text())["resumed_records"] == 16


def test_rerank_cross_encoder_and_embeddings(tmp_path: Path, heads: dict[str, Path]) -> None:
    docs = ["paris is the capital of france", "a lazy dog", "berlin"]
    records = jsonl(
        tmp_path / "r.jsonl",
        {"id": "r1", "query": "capital of france", "documents": docs},
        {"id": "r2", "query": "capital of france", "documents": "not a list"},
    )
    for model in (heads["cross-encoder"], heads["bert-base"]):
        rows, _, _ = run(tmp_path, model, "rerank", records)
        r1, r2 = rows
        assert len(r1["scores"]) == 3 and sorted(r1["ranking"]) == [0, 1, 2]
        assert r1["scores"][r1["ranking"][0]] == max(r1["scores"])
        assert "must be a non-empty list" in r2["error"]


def test_openai_batch_files_pick_the_task_and_answer_in_format(tmp_path: Path, heads: dict[str, Path]) -> None:
    def request(cid: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"custom_id": cid, "method": "POST", "url": url, "body": {"model": "m", **body}}

    emb = jsonl(
        tmp_path / "emb.jsonl",
        request("e1", "/v1/embeddings", {"input": "hello world"}),
        request("e2", "/v1/embeddings", {"input": ["paris", "berlin"]}),
        request("e3", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    )
    root = tmp_path / "emb"
    assert omnirun(root, f"model.name={heads['bert-base']}", f"input.path={emb}") == 0  # no task: the URL picks embed
    run_dir = only_run_dir(root)
    assert "/embed/" in str(run_dir)
    e1, e2, e3 = [json.loads(line) for line in (run_dir / "batch_output.jsonl").read_text().splitlines()]
    body = e1["response"]["body"]
    assert (
        body["object"] == "list"
        and body["data"][0]["object"] == "embedding"
        and len(body["data"][0]["embedding"]) == 32
    )
    assert [d["index"] for d in e2["response"]["body"]["data"]] == [0, 1] and body["usage"]["prompt_tokens"] > 0
    assert e3["response"]["status_code"] == 400 and "task=chat" in e3["error"]["message"]

    rer = jsonl(
        tmp_path / "rer.jsonl",
        request("r1", "/v1/rerank", {"query": "france", "documents": ["paris", "dog", "berlin"], "top_n": 2}),
        request("r2", "/v1/score", {"text_1": "france", "text_2": ["paris", "dog"]}),
    )
    root = tmp_path / "rer"
    assert omnirun(root, f"model.name={heads['cross-encoder']}", f"input.path={rer}") == 0
    r1, r2 = [json.loads(line) for line in (only_run_dir(root) / "batch_output.jsonl").read_text().splitlines()]
    results = r1["response"]["body"]["results"]
    assert len(results) == 2 and results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert [d["object"] for d in r2["response"]["body"]["data"]] == ["score", "score"]


def image_records(tmp_path: Path, media: dict[str, Path]) -> Path:
    return jsonl(
        tmp_path / "img.jsonl",
        {"id": "i1", "image": str(media["png"])},
        {"id": "i2", "image": str(media["missing"])},
        {"id": "i3", "image": str(media["wav"])},
        {"id": "i4", "image": str(media["png2"])},
    )


@pytest.mark.parametrize("task", ["image_classify", "detect", "segment"])
def test_vision(tmp_path: Path, heads: dict[str, Path], media: dict[str, Path], task: str) -> None:
    model = heads[{"image_classify": "vit-classifier", "detect": "yolos", "segment": "segformer"}[task]]
    extra = ["task.threshold=0.0"] if task == "detect" else []  # an option of task=detect only
    rows, metrics, run_dir = run(tmp_path, model, task, image_records(tmp_path, media), *extra)
    i1, i2, i3, i4 = rows
    assert "i2" in i2["error"] and "missing.png" in i2["error"] and "no such file" in i2["error"]
    assert "a.wav" in i3["error"] and i1["image"] == str(media["png"])
    assert metrics["num_errors"] == 2 and metrics["samples_per_s"] > 0
    if task == "image_classify":
        assert i1["label"] in LABELS.values()
    if task == "detect":
        assert i1["boxes"] and all(set(b["box"]) == {"xmin", "ymin", "xmax", "ymax"} for b in i1["boxes"])
    if task == "segment":
        from PIL import Image

        assert i1["labels"] and len(i1["masks"]) == len(i1["labels"])
        assert Image.open(run_dir / i4["masks"][0]).size == (20, 30)  # masks come back at the image's size


def test_audio(tmp_path: Path, heads: dict[str, Path], media: dict[str, Path]) -> None:
    records = jsonl(
        tmp_path / "a.jsonl",
        {"id": "s1", "audio": str(media["wav"])},
        {"id": "s2", "audio": str(media["wav8k"])},
        {"id": "s3", "audio": str(media["corrupt"])},
    )
    rows, metrics, _ = run(tmp_path, heads["wav2vec2-classifier"], "audio_classify", records)
    s1, s2, s3 = rows
    assert s1["label"] in {"speech", "music", "noise"} and s1["audio_s"] == 1.0
    assert s2["audio_s"] == pytest.approx(2.0)  # resampled from 8 kHz to the model's 16 kHz
    assert "corrupt.wav" in s3["error"] and metrics["audio_s"] == pytest.approx(3.0)
    assert metrics["real_time_factor"] > 0

    rows, metrics, _ = run(
        tmp_path, heads["wav2vec2-ctc"], "transcribe", records, "task.return_timestamps=true", "task.chunk_length_s=1.0"
    )
    s1, s2, s3 = rows
    assert isinstance(s1["output"], str) and isinstance(s1["chunks"], list) and s2["audio_s"] == pytest.approx(2.0)
    for chunk in s1["chunks"]:
        start, end = chunk["timestamp"]
        assert 0 <= start <= end <= 1.0 + 1e-6
    assert "corrupt.wav" in s3["error"] and metrics["real_time_factor"] > 0


def test_whisper_transcribes_long_audio_in_chunks(tmp_path: Path, heads: dict[str, Path]) -> None:
    long = write_wav(tmp_path / "long.wav", seconds=35.0)
    records = jsonl(tmp_path / "a.jsonl", {"id": "long", "audio": str(long)}, {"id": "gone", "audio": "nope.flac"})
    rows, metrics, _ = run(tmp_path, heads["whisper"], "transcribe", records, "generation.max_new_tokens=4")
    long_row, gone = rows
    assert isinstance(long_row["output"], str) and long_row["audio_s"] == pytest.approx(35.0)
    assert "nope.flac" in gone["error"] and metrics["audio_s"] == pytest.approx(35.0)


def test_caption(tmp_path: Path, heads: dict[str, Path], media: dict[str, Path]) -> None:
    rows, metrics, _ = run(
        tmp_path, heads["vit-gpt2"], "caption", image_records(tmp_path, media), "generation.max_new_tokens=5"
    )
    i1, i2, _, i4 = rows
    assert isinstance(i1["output"], str) and 1 <= i1["output_tokens"] <= 5 and i1["finish_reason"] in ("stop", "length")
    assert "no such file" in i2["error"] and metrics["output_tokens"] == i1["output_tokens"] + i4["output_tokens"]


def test_text_to_image_is_reproducible(tmp_path: Path, heads: dict[str, Path]) -> None:
    records = jsonl(
        tmp_path / "p.jsonl",
        {"id": "p1", "prompt": "a red fox"},
        {"id": "p2", "prompt": "a lazy dog", "negative_prompt": "blurry"},
        {"id": "p3", "prompt": ""},
    )
    args = ("task.num_inference_steps=2", "task.height=32", "task.width=32")
    first, metrics, run_a = run(tmp_path, heads["tiny-sd"], "image", records, *args)
    second, _, run_b = run(tmp_path, heads["tiny-sd"], "image", records, *args, "task.batch_size=2")
    p1, p2, p3 = first
    assert p2["negative_prompt"] == "blurry" and "'prompt' is empty" in p3["error"]
    for row_a, row_b in zip(first[:2], second[:2], strict=True):
        assert (run_a / row_a["images"][0]).read_bytes() == (run_b / row_b["images"][0]).read_bytes()
    assert metrics["s_per_denoising_step"] > 0 and p1["denoising_steps"] == 2


def test_models_that_cannot_serve_a_task_are_refused_in_one_line(
    tmp_path: Path, heads: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    records = jsonl(tmp_path / "q.jsonl", {"question": "q", "context": "c"})
    assert omnirun(tmp_path / "o", "task=qa", f"model.name={heads['bert-classifier']}", f"input.path={records}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task=qa" in err[0] and "BertForSequenceClassification" in err[0]
    assert omnirun(tmp_path / "o", "task=image", f"model.name={heads['bert-base']}", f"input.path={records}") == 2
    assert "diffusers pipeline" in capsys.readouterr().err
    assert omnirun(tmp_path / "o", "task=classify", f"model.name={heads['tiny-sd']}", "input.prompt=hi") == 2
    assert "diffusers pipeline" in capsys.readouterr().err
    assert omnirun(tmp_path / "o", "task=qa", f"model.name={heads['bert-qa']}") == 2
    assert "task=qa reads question, context" in capsys.readouterr().err


@pytest.mark.slow
def test_embed_on_the_bundled_model(tmp_path: Path) -> None:
    """Real weights: identical texts give identical vectors; a paraphrase is closer than an unrelated text."""
    texts = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Stock markets fell sharply today."]
    records = jsonl(tmp_path / "e.jsonl", *({"id": str(i), "text": t} for i, t in enumerate([*texts, texts[0]])))
    for pooling in ("mean", "last"):
        rows, metrics, _ = run(tmp_path, Path("smollm2"), "embed", records, f"task.pooling={pooling}")  # a short name
        vectors = [np.array(r["embedding"]) for r in rows]
        assert rows[0]["dim"] == 576 and np.array_equal(vectors[0], vectors[3])
        assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.1
        assert metrics["samples_per_s"] > 0 and metrics["num_errors"] == 0


def test_sweep_over_a_task_option(tmp_path: Path, heads: dict[str, Path]) -> None:
    from clirun import only_sweep_dir

    records = jsonl(tmp_path / "e.jsonl", {"id": "a", "text": "the lazy dog"})
    args = ("-m", "task=embed", f"model.name={heads['bert-base']}", f"input.path={records}", "task.pooling=mean,cls")
    assert omnirun(tmp_path / "sweep", *args) == 0
    sweep = only_sweep_dir(tmp_path / "sweep")
    vectors = [json.loads((sweep / job / "outputs.jsonl").read_text())["embedding"] for job in ("0", "1")]
    assert vectors[0] != vectors[1] and "completed" in (sweep / "summary.md").read_text()


def test_dataset_image_and_audio_columns(tmp_path: Path, heads: dict[str, Path], media: dict[str, Path]) -> None:
    """A dataset's Image / Audio columns (as `datasets` stores them), one of them holding a corrupt file."""
    import datasets

    columns = {"image": [str(media["png"]), str(media["png2"])], "audio": [str(media["wav"]), str(media["wav8k"])]}
    ds = datasets.Dataset.from_dict(columns).cast_column("image", datasets.Image())
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=16000))
    ds.save_to_disk(str(tmp_path / "ds"))
    for task, model in (("image_classify", "vit-classifier"), ("audio_classify", "wav2vec2-classifier")):
        root = tmp_path / task
        assert omnirun(root, f"task={task}", f"model.name={heads[model]}", f"input.dataset={tmp_path / 'ds'}") == 0
        rows = [json.loads(line) for line in (only_run_dir(root) / "outputs.jsonl").read_text().splitlines()]
        assert [r["error"] for r in rows] == [None, None] and rows[0]["label"]
    assert rows[1]["audio_s"] == pytest.approx(2.0)


@pytest.mark.parametrize("first", [True, False])
def test_a_records_failure_is_its_own_where_ever_it_sorts(tmp_path: Path, heads: dict[str, Path], first: bool) -> None:
    """A qa question longer than the model's context and a classify text of 300 emoji: error rows (or answers)
    of their own, whether they come first or after a good record, and the run exits 0."""
    long_question = {"id": "long", "question": "why " * 2000, "context": "because it is."}
    good = {"id": "ok", "question": "what is it?", "context": "it is a cat."}
    records = jsonl(tmp_path / "qa.jsonl", *([long_question, good] if first else [good, long_question]))
    rows, metrics, _ = run(tmp_path, heads["bert-qa"], "qa", records, "task.sort_by_length=false")
    by_id = {r["id"]: r for r in rows}
    assert by_id["ok"]["error"] is None and metrics["num_samples"] == 2
    emoji = {"id": "emoji", "prompt": "😀" * 300}
    texts = jsonl(
        tmp_path / "c.jsonl",
        *([emoji, {"id": "ok", "prompt": "fine"}] if first else [{"id": "ok", "prompt": "fine"}, emoji]),
    )
    rows, metrics, _ = run(tmp_path, heads["bert-classifier"], "classify", texts, "task.sort_by_length=false")
    assert {r["id"] for r in rows} == {"emoji", "ok"} and metrics["num_samples"] == 2
