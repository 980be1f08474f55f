"""The ONNX export of a Hugging Face model for onnxruntime-genai, made once and cached.

`export(source, precision)` returns a folder onnxruntime-genai loads (`genai_config.json`, `model.onnx`, the
tokenizer). The first call converts the model with onnxruntime-genai's model builder (in a child process, so
its memory and console output stay out of ours): fp32 weights, or MatMulNBits int4 / int8 weights with their
block scales. The output head is pruned to each row's last real token (`graph.fix_pruned_head`), so a prefill
does not write logits for every prompt position. The export lives under `cache_root()/onnx/`, keyed like the
GGUF dense cache: a hash of the model's files (weights, config, tokenizer), the precision, the onnxruntime-genai
version and this layout's version, so a second run loads it directly. A GGUF model is converted from its dense
safetensors copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from omnirun.engine import source as models
from omnirun.engine.onnxruntime import graph
from omnirun.errors import ConfigError, ModelLoadError
from omnirun.hardware import ExportCandidate

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2
"""Version of the cached export's layout (part of its key)."""
PRECISIONS = ("fp32", "int8", "int4")
PAD_TOKEN = "pad_token_id"
META = "omnirun-cache.json"
HASHED = (".safetensors", ".json", ".jinja", ".model", ".txt")
"""The files of a model folder whose content keys its export (weights, config, tokenizer, chat template)."""


def genai_version() -> str:
    """The installed onnxruntime-genai's version; ConfigError (one line) when it is missing."""
    try:
        import onnxruntime_genai
    except ImportError:
        raise ConfigError(
            "hardware.backend=onnxruntime needs onnxruntime-genai, which is not installed; "
            "`pip install 'omnirun[onnxruntime]'` or set hardware.backend=transformers"
        ) from None
    return str(onnxruntime_genai.__version__)


def model_folder(source: models.ModelSource) -> Path:
    """The local Hugging Face folder to convert: the folder itself, the dense copy of a GGUF file, or the hub
    snapshot of a hub id (from the local Hugging Face cache when offline)."""
    if source.is_gguf:
        assert source.gguf_path is not None
        cached = models.dense_cache_dir(source.gguf_path)
        if models.is_complete(cached):
            return cached
        from omnirun.engine.hf.loading import dense_copy

        return dense_copy(source)
    if source.kind == "local":
        return Path(source.path)
    if source.kind == "hub":
        try:
            from huggingface_hub import snapshot_download

            patterns = ["*.json", "*.safetensors", "*.jinja", "*.model"]
            return Path(snapshot_download(source.path, allow_patterns=patterns))
        except Exception as exc:
            raise models.describe_load_failure(source, exc) from exc
    raise ModelLoadError(f"model {source.name!r} ({source.kind}) has no weights for the onnxruntime backend")


def candidate(source: models.ModelSource) -> ExportCandidate | None:
    """What `hardware=auto` weighs before exporting an ordinary Hugging Face model (None: a GGUF file or a config
    without weights). Reads the config and safetensors headers only: from the folder, or from the local Hugging
    Face cache for a hub id (nothing is downloaded; unknown values keep Transformers)."""
    if source.is_gguf or source.kind not in ("local", "hub"):
        return None
    folder = Path(source.path) if source.kind == "local" else cached_hub_folder(source.path)
    architecture, params = None, None
    if folder is not None and (folder / "config.json").is_file():
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            listed = json.loads((folder / "config.json").read_text()).get("architectures") or [None]
            architecture = None if listed[0] is None else str(listed[0])
        with contextlib.suppress(OSError, ValueError, struct.error):
            params = count_params(folder) or None
    root = models.cache_root()
    while not root.exists() and root != root.parent:
        root = root.parent
    return ExportCandidate(architecture, params, shutil.disk_usage(root).free)


def cached_hub_folder(repo: str) -> Path | None:
    """The snapshot folder of `repo` in the local Hugging Face cache, when its config is there."""
    from huggingface_hub import try_to_load_from_cache

    with contextlib.suppress(Exception):
        found = try_to_load_from_cache(repo, "config.json")
        if isinstance(found, str):
            return Path(found).parent
    return None


def content_hash(folder: Path) -> str:
    """sha256 over the names and content hashes of the folder's model files (each file hashed once, memoised)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(HASHED) and p.name != META)
    for path in files:
        digest.update(f"{path.name}:{models.file_sha256(path)}\n".encode())
    return digest.hexdigest()


def export_dir(folder: Path, precision: str) -> Path:
    """Where the export of `folder` at `precision` lives (may not exist yet)."""
    key = f"{content_hash(folder)[:20]}-{precision}-ortgenai{genai_version()}-onnx{EXPORT_FORMAT}"
    return models.cache_root() / "onnx" / key


def export(source: models.ModelSource, precision: str, *, model_name: str) -> Path:
    """The cached export of `source` at `precision` (`fp32`, `int8` or `int4`), converting it on first use.

    ConfigError (one line, naming model.name and the way out) when the builder cannot convert the model."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    folder = model_folder(source)
    target = export_dir(folder, precision)
    if models.is_complete(target):
        return target
    log.warning("exporting %s to ONNX (%s) for onnxruntime-genai; this happens once", model_name, precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        out = tmp / "model"
        run_builder(folder, out, tmp / "work", precision, model_name, prune=True)
        try:
            graph.fix_pruned_head(out / "model.onnx")
        except graph.GraphEditError as exc:  # a graph this edit does not know: the builder's unpruned head
            log.warning("%s; exporting %s with logits for every position", exc, model_name)
            shutil.rmtree(out, ignore_errors=True)
            run_builder(folder, out, tmp / "work", precision, model_name, prune=False)
        set_pad_token(out / "genai_config.json")
        meta: dict[str, object] = {"source": str(folder), "precision": precision, "onnxruntime_genai": genai_version()}
        meta |= {"format": EXPORT_FORMAT, "params": count_params(folder)}
        (out / META).write_text(json.dumps(meta, indent=2))
        with contextlib.suppress(OSError):  # another process won the race; its export is as good as ours
            out.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached the ONNX export of %s in %s", model_name, target)
    return target


def run_builder(folder: Path, out: Path, work: Path, precision: str, model_name: str, *, prune: bool) -> None:
    """Run onnxruntime-genai's model builder on `folder` in a child process; ConfigError when it fails.
    `prune`: the output head computes the last position only (`graph.fix_pruned_head` makes that per row)."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(folder), "-o", str(out)]
    command += ["-p", precision, "-e", "cpu", "-c", str(work), "--extra_options", "hf_token=false"]
    command += ["prune_lm_head=true"] if prune else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        raise ConfigError(
            f"model.name={model_name!r}: hardware.backend=onnxruntime could not convert it to ONNX "
            f"({builder_error(done.stderr + done.stdout)}); use hardware.backend=transformers"
        )


def builder_error(output: str) -> str:
    """The builder's last error line (its traceback's final line), short."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "not supported" in line]
    return ((errors or lines or ["no output"])[-1])[:200]


def set_pad_token(config_file: Path) -> None:
    """Give the export a padding id no prompt uses in practice (the last id of the vocabulary).

    onnxruntime-genai masks every input token equal to `pad_token_id`; many chat models reuse their
    end-of-turn token as padding, which chat prompts contain, so those turns would be masked out in batches."""
    config = json.loads(config_file.read_text())
    config["model"][PAD_TOKEN] = int(config["model"]["vocab_size"]) - 1
    config_file.write_text(json.dumps(config, indent=4))


def count_params(folder: Path) -> int:
    """Parameters stored in the folder's safetensors files (from their headers; tied weights count once)."""
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= int(dim)
                total += count
    return total
