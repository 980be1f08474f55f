"""Image, audio and caption tasks equal Transformers' pipelines (or `generate` on the processor's inputs) on ViT,
ConvNeXt, YOLOS, wav2vec2 (classifier and CTC), Whisper, a VisionEncoderDecoder captioner and BLIP; caption
and transcribe decode as the pipelines do by default (greedy, the model's own generation config); a prompted
BLIP caption keeps its first new token; a prompt a VisionEncoderDecoder model cannot take is an error row;
`task=image` gives each record the picture of `seed + record index` whatever the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from tiny_heads import write_png, write_wav

from differential import oracles
from differential.conftest import Zoo, api, cli_rows, note

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "png": write_png(root / "a.png"),
        "png2": write_png(root / "b.png", width=20, height=30, seed=1),
        "png3": write_png(root / "c.png", width=64, height=64, seed=2),
        "wav": write_wav(root / "a.wav"),
        "wav2": write_wav(root / "b.wav", seconds=2.5, freq=220.0),
        "wav8k": write_wav(root / "c.wav", seconds=1.5, rate=8000, freq=330.0),
    }


def pipeline(task: str, folder: Path, **kwargs: Any) -> Any:
    import transformers

    build: Any = transformers.pipeline
    return build(task, model=str(folder), **kwargs)


@pytest.mark.parametrize("kind", ["vit-classifier", "convnext-classifier"])
def test_image_classify(tmp_path: Path, zoo: Zoo, media: dict[str, Path], kind: str) -> None:

    images = [media["png"], media["png2"], media["png3"]]
    pipe = pipeline("image-classification", zoo[kind], top_k=3)
    want = [pipe(str(p)) for p in images]
    with api(zoo[kind]) as engine:
        got = [a.result for a in engine.run_task("image_classify", [{"image": str(p)} for p in images], top_k=3)]
    rows = cli_rows(tmp_path, zoo[kind], "image_classify", [{"image": str(p)} for p in images], "task.batch_size=2")
    for g, row, w in zip(got, rows, want, strict=True):
        for result in (g, row):
            assert result["label"] == w[0]["label"]
            diff = max(abs(result["scores"][x["label"]] - x["score"]) for x in w)
            assert note("image_classify", kind, diff) < TOLERANCE


def test_detect(tmp_path: Path, zoo: Zoo, media: dict[str, Path]) -> None:
    images = [media["png"], media["png3"]]
    want = [pipeline("object-detection", zoo["yolos"])(str(p), threshold=0.0) for p in images]
    rows = cli_rows(tmp_path, zoo["yolos"], "detect", [{"image": str(p)} for p in images], "task.threshold=0.0",
                    "task.batch_size=2")  # fmt: skip
    for row, w in zip(rows, want, strict=True):
        assert [(b["label"], b["box"]) for b in row["boxes"]] == [(x["label"], x["box"]) for x in w]
        diffs = [abs(b["score"] - x["score"]) for b, x in zip(row["boxes"], w, strict=True)]
        assert note("detect", "yolos", max(diffs, default=0.0)) < TOLERANCE


def test_segment(tmp_path: Path, zoo: Zoo, media: dict[str, Path]) -> None:
    import numpy as np
    from PIL import Image

    images = [media["png"], media["png3"]]
    want = [pipeline("image-segmentation", zoo["segformer"])(str(p), subtask="semantic") for p in images]
    rows = cli_rows(tmp_path, zoo["segformer"], "segment", [{"image": str(p)} for p in images], "task.batch_size=2")
    run_dir = next(p.parent for p in tmp_path.rglob("outputs.jsonl"))
    for row, w in zip(rows, want, strict=True):
        assert row["labels"] == [x["label"] for x in w]
        for path, x in zip(row["masks"], w, strict=True):
            assert np.array_equal(np.asarray(Image.open(run_dir / path)), np.asarray(x["mask"]))
    note("segment (exact masks)", "segformer", 0.0)


def test_audio_classify(tmp_path: Path, zoo: Zoo, media: dict[str, Path]) -> None:
    """Mixed lengths and a file at another sampling rate (resampled to the model's 16 kHz)."""
    from omnirun.inputs.media import load_audio

    sounds = [media["wav"], media["wav2"], media["wav8k"]]
    pipe = pipeline("audio-classification", zoo["wav2vec2-classifier"], top_k=3)
    want = [pipe({"raw": load_audio(str(p), 16000), "sampling_rate": 16000}) for p in sounds]
    for size in (1, 3):
        rows = cli_rows(tmp_path, zoo["wav2vec2-classifier"], "audio_classify", [{"audio": str(p)} for p in sounds],
                        f"task.batch_size={size}")  # fmt: skip
        for row, w in zip(rows, want, strict=True):
            assert row["label"] == w[0]["label"]
            diff = max(abs(row["scores"][x["label"]] - x["score"]) for x in w)
            assert note("audio_classify", "wav2vec2-classifier", diff) < TOLERANCE


@pytest.mark.parametrize("kind", ["wav2vec2-ctc", "whisper"])
def test_transcribe_decodes_like_the_pipeline(tmp_path: Path, zoo: Zoo, media: dict[str, Path], kind: str) -> None:
    """No generation settings given: the pipeline's deterministic decoding, not sampling at temperature 0.7."""
    from omnirun.inputs.media import load_audio

    sounds = [media["wav"], media["wav2"]]
    pipe = pipeline("automatic-speech-recognition", zoo[kind])
    want = [pipe({"raw": load_audio(str(p), 16000), "sampling_rate": 16000})["text"] for p in sounds]
    rows = cli_rows(tmp_path, zoo[kind], "transcribe", [{"audio": str(p)} for p in sounds], "seed=3")
    assert [r["output"] for r in rows] == want
    note("transcribe (exact text)", kind, 0.0)
    with api(zoo[kind]) as engine:
        got = engine.run_task("transcribe", [{"audio": str(p)} for p in sounds])
    assert [a.completion.text if a.completion else None for a in got] == want


@pytest.mark.parametrize("kind", ["vit-gpt2", "blip"])
def test_caption_equals_generate(tmp_path: Path, zoo: Zoo, media: dict[str, Path], kind: str) -> None:
    """Unprompted captions in a batch equal `generate` one image at a time with the model's own settings."""
    import transformers
    from PIL import Image

    folder = zoo[kind]
    model = transformers.AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    if kind == "vit-gpt2":
        processor = transformers.AutoImageProcessor.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    images = [media["png"], media["png2"], media["png3"]]
    want = [oracles.caption(model, processor, Image.open(p).convert("RGB"), None) for p in images]
    rows = cli_rows(tmp_path, folder, "caption", [{"image": str(p)} for p in images], "task.batch_size=3", "seed=5")
    for row, ids in zip(rows, want, strict=True):
        ids = [t for t in ids if t != tokenizer.pad_token_id]
        assert row["output"] == cast(str, tokenizer.decode(ids, skip_special_tokens=True)).strip()
        assert row["output_tokens"] == len(ids)
    note("caption (exact tokens)", kind, 0.0)


def test_prompted_blip_keeps_its_first_new_token(tmp_path: Path, zoo: Zoo, media: dict[str, Path]) -> None:
    import transformers
    from PIL import Image

    folder = zoo["blip"]
    model = transformers.BlipForConditionalGeneration.from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    records = [
        {"image": str(media["png"]), "prompt": "a photo of"},
        {"image": str(media["png2"]), "prompt": "the capital of france is"},
        {"image": str(media["png3"])},
    ]
    want = [oracles.caption(model, processor, Image.open(r["image"]).convert("RGB"), r.get("prompt")) for r in records]
    rows = cli_rows(tmp_path, folder, "caption", records, "task.batch_size=3")
    tokenizer = processor.tokenizer
    for row, ids in zip(rows, want, strict=True):
        ids = [t for t in ids if t != tokenizer.pad_token_id]
        assert row["error"] is None
        assert row["output"] == tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert row["output_tokens"] == len(ids)
        assert row["finish_reason"] == ("stop" if ids[-1] == tokenizer.sep_token_id else "length")


def test_a_prompt_a_vision_encoder_decoder_cannot_take_is_an_error_row(
    tmp_path: Path, zoo: Zoo, media: dict[str, Path]
) -> None:
    records = [{"id": "p", "image": str(media["png"]), "prompt": "a photo of"}, {"id": "n", "image": str(media["png"])}]
    prompted, plain = cli_rows(tmp_path, zoo["vit-gpt2"], "caption", records, "task.batch_size=2")
    assert "captions images without one" in prompted["error"] and "remove the prompt" in prompted["error"]
    assert plain["error"] is None and plain["output_tokens"] > 0


@pytest.mark.slow
def test_image_seed_is_seed_plus_record_index_in_the_engine(zoo: Zoo) -> None:
    """One seed per item: a record's picture is the same alone or in a batch, in any position."""
    import numpy as np

    from omnirun.config import Device, HardwareConfig, ModelConfig, TaskName
    from omnirun.engine.diffusers.engine import DiffusersEngine
    from omnirun.task_config import ImageConfig

    engine = DiffusersEngine(ModelConfig(name=str(zoo["tiny-sd"])), HardwareConfig(device=Device.cpu)).load_model()
    options = ImageConfig(name=TaskName.image, num_inference_steps=2, height=16, width=16)
    items = [{"prompt": "a red fox"}, {"prompt": "a lazy dog"}]
    batch = engine.analyze(TaskName.image, items, options, seed=[7, 3])
    alone = engine.analyze(TaskName.image, items[1:], options, seed=[3])
    swapped = engine.analyze(TaskName.image, items[::-1], options, seed=[3, 7])
    pixels = [np.asarray(a.images["images"][0], dtype=int) for a in (batch[1], alone[0], swapped[0])]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1 and np.abs(pixels[0] - pixels[2]).max() <= 1
    engine.unload_model()


@pytest.mark.slow
def test_image_seed_is_seed_plus_record_index_from_the_cli(tmp_path: Path, zoo: Zoo) -> None:
    """Another batch size or length sorting gives every record the same picture."""
    import numpy as np
    from PIL import Image

    records = [{"id": str(i), "prompt": p} for i, p in enumerate(["a fox", "a very lazy brown dog", "a cat"])]
    runs = []
    for size in (1, 3):
        root = tmp_path / f"bs{size}"
        root.mkdir()
        rows = cli_rows(root, zoo["tiny-sd"], "image", records, f"task.batch_size={size}",
                        "task.num_inference_steps=2", "task.height=16", "task.width=16")  # fmt: skip
        run_dir = next(p.parent for p in root.rglob("outputs.jsonl"))
        runs.append([np.asarray(Image.open(run_dir / r["images"][0]), dtype=int) for r in rows])
    for one, three in zip(*runs, strict=True):
        assert np.abs(one - three).max() <= 1
