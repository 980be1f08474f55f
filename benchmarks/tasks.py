"""Throughput of every task beyond generation, from the CLI, on this machine.

Each task runs `python -m omnirun task=<task> model.name=<model> input.path=<records>` in a fresh process over
`--records` records (the first run of a model also loads it; `generation_s` excludes loading), and the table
reports `metrics.json`'s samples/s, input tokens/s, real-time factor or seconds per denoising step, with the
first output row. Models: tiny random ones of each head (built like the tests' `tests/tiny_heads.py`), and the
bundled SmolLM2 for `embed`. Throughput on random tiny models measures omnirun's pipeline, not a real model.

    python benchmarks/tasks.py [--records 64] [--out benchmarks/results/tasks.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_heads import MASK, build_head, write_png, write_wav  # noqa: E402

TEXT = "the quick brown fox jumps over a lazy dog while seven small models run their tests on two cores"


def records(task: str, n: int, media: dict[str, Path]) -> list[dict[str, Any]]:
    make = {
        "embed": lambda i: {"text": f"{TEXT} {i}"},
        "classify": lambda i: {"text": f"{TEXT} {i}", "text_pair": "paris"},
        "token_classify": lambda i: {"text": f"{TEXT} {i}"},
        "qa": lambda i: {"question": "what jumps?", "context": f"{TEXT} {i}"},
        "fill_mask": lambda i: {"text": f"the quick brown {MASK} jumps {i}"},
        "rerank": lambda i: {"query": "fox", "documents": [TEXT, f"document {i}", "a lazy dog"]},
        "image_classify": lambda i: {"image": str(media["png"])},
        "detect": lambda i: {"image": str(media["png"])},
        "segment": lambda i: {"image": str(media["png"])},
        "audio_classify": lambda i: {"audio": str(media["wav"])},
        "transcribe": lambda i: {"audio": str(media["wav"])},
        "caption": lambda i: {"image": str(media["png"])},
        "image": lambda i: {"prompt": f"a red fox {i}"},
    }[task]
    return [{"id": str(i), **make(i)} for i in range(n)]


CASES = [  # task, model kind (or "smollm2"), extra overrides
    ("embed", "smollm2", []),
    ("embed", "bert-base", []),
    ("classify", "bert-classifier", []),
    ("token_classify", "bert-ner", []),
    ("qa", "bert-qa", []),
    ("fill_mask", "bert-mlm", []),
    ("rerank", "cross-encoder", []),
    ("image_classify", "vit-classifier", []),
    ("detect", "yolos", []),
    ("segment", "segformer", []),
    ("audio_classify", "wav2vec2-classifier", []),
    ("transcribe", "wav2vec2-ctc", []),
    ("caption", "vit-gpt2", ["generation.max_new_tokens=8"]),
    ("image", "tiny-sd", ["task.num_inference_steps=4", "task.height=64", "task.width=64"]),
]


def run_case(task: str, model: str, extra: list[str], n: int, work: Path, media: dict[str, Path]) -> dict[str, Any]:
    count = min(n, 8) if task == "image" else n
    path = work / f"{task}-{Path(model).name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(task, count, media)))
    out = work / "out" / f"{task}-{Path(model).name}"
    command = [f"task={task}", f"model.name={model}", f"input.path={path}", f"output.root={out}", *extra]
    subprocess.run([sys.executable, "-m", "omnirun", "task.progress=false", *command], check=True, capture_output=True)
    (run_dir,) = {p.parent for p in out.rglob("metrics.json")}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first = json.loads((run_dir / "outputs.jsonl").read_text().split("\n")[0])
    if "embedding" in first:
        first["embedding"] = [round(x, 4) for x in first["embedding"][:4]] + ["..."]
    return {
        "task": task,
        "model": "SmolLM2-135M-Instruct (bundled)" if model == "smollm2" else f"tiny random {Path(model).name}",
        "command": "python -m omnirun "
        + " ".join(
            c if not c.startswith("input.path") else "input.path=<records>"
            for c in command
            if not c.startswith("output.root")
        ),
        "records": count,
        "samples_per_s": metrics["samples_per_s"],
        "input_tokens_per_s": metrics["input_tokens_per_s"],
        "real_time_factor": metrics["real_time_factor"],
        "s_per_denoising_step": metrics["s_per_denoising_step"],
        "output_tokens_per_s": metrics["output_tokens_per_s"] if metrics["output_tokens"] else None,
        "e2e_p50_ms": (metrics["e2e_ms"] or {}).get("p50"),
        "max_rss_mb": metrics["memory"]["max_rss_mb"],
        "errors": metrics["num_errors"],
        "sample_row": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tasks.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = {"png": write_png(work / "a.png", 224, 224), "wav": write_wav(work / "a.wav", seconds=5.0)}
        results = []
        for task, kind, extra in CASES:
            model = kind if kind == "smollm2" else str(build_head(kind, work / "models" / kind))
            results.append(run_case(task, model, extra, args.records, work, media))
            r = results[-1]
            rate = r["real_time_factor"] or r["samples_per_s"]
            print(f"{task:15} {r['model']:34} {rate:10.2f} {'x real time' if r['real_time_factor'] else 'samples/s'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": platform.processor() or platform.machine(), "results": results}, indent=1)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
