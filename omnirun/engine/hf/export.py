"""Writing a loaded Transformers model out: safetensors (`save_pretrained`), ONNX (torch's exporter, checked
against onnxruntime when installed), and uploads to the Hugging Face Hub.

ONNX: optimum's exporter (`optimum-onnx`) requires transformers < 4.58, which this project is past, so the graph
comes from `torch.onnx.export` (the `onnx` extra: onnx + onnxscript, and onnxruntime for the check). It maps the
head's inputs (token ids, attention mask and, for a model that reads them, token type ids; or pixel values) to
every output of its head (`logits`; `start_logits` and `end_logits` for question answering), named as the model
names them, for any batch size and length; a causal LM is exported without a KV cache (each step recomputes the
prefix). The export is checked output by output against torch with onnxruntime.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from omnirun.config import ExportFormat
from omnirun.engine.base import SavedModel
from omnirun.engine.capabilities import Head
from omnirun.engine.hf import optimize
from omnirun.errors import ConfigError, OmnirunError, first_line

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_INPUTS = {"text": ("input_ids", "attention_mask"), "image": ("pixel_values",)}
"""The graph inputs per kind of head input; other kinds (audio, multimodal, encoder-decoder) are not exported."""
TORCH_EXPORT_NOISE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
"""torch's exporter calling its own deprecated pytree API (torch 2.13): not caused by, nor fixable in, our call."""
AXIS_NOTE = r"# The axis name: .* will not be used"
"""torch's note that input_ids and attention_mask share their `batch` / `sequence` axes, which they do."""


Snapshot = dict[str, tuple[int, int]]
"""A folder's files (relative paths) with their size and modification time."""


def snapshot(path: Path) -> Snapshot:
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): stat_of(p) for p in path.rglob("*") if p.is_file()}


def stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def files_of(path: Path, before: Snapshot | None = None) -> tuple[str, ...]:
    """The files in `path` written since `before` (new, or changed in size or time): what an export wrote."""
    now = snapshot(path)
    return tuple(sorted(name for name, state in now.items() if before is None or before.get(name) != state))


def save(model: Any, preprocessor: Any, path: str | Path) -> SavedModel:
    """`save_pretrained` of the model (safetensors; a bitsandbytes model as Transformers serializes it) and of
    its tokenizer or processor."""
    folder = Path(path).expanduser()
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_serializable():
        method = getattr(quantizer.quantization_config, "quant_method", "quantized")
        raise OmnirunError(
            f"this {method} model cannot be saved with the installed Transformers/bitsandbytes; load it "
            "unquantized (hardware.quantization=null) to save it"
        )
    before = snapshot(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with optimize.plain_linears(model):
            model.save_pretrained(folder, safe_serialization=True)
        if preprocessor is not None:
            preprocessor.save_pretrained(folder)
    except OSError as exc:
        raise OmnirunError(f"saving the model to {folder} failed: {first_line(str(exc))}") from exc
    log.info("saved the model to %s", folder)
    return SavedModel(folder, ExportFormat.safetensors, files_of(folder, before))


def export_onnx(model: Any, preprocessor: Any, head: Head, path: str | Path) -> SavedModel:
    """`model.onnx` plus the config and tokenizer / processor; checked against torch with onnxruntime."""
    if getattr(model, "hf_quantizer", None) is not None:
        raise ConfigError("ONNX export needs unquantized weights; set hardware.quantization=null")
    kind = head.inputs
    if kind not in ONNX_INPUTS or getattr(model.config, "is_encoder_decoder", False):
        raise ConfigError(
            f"ONNX export covers text and image models without a separate decoder; this {head.description} model "
            "is not one: use export.format=safetensors"
        )
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs {exc.name}: pip install 'omnirun[onnx]'") from exc
    folder = Path(path).expanduser()
    before = snapshot(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = graph_inputs(model, preprocessor, kind)
    sample = sample_inputs(model, kind, names)
    graph = HeadGraph(model, names).eval()
    outputs = graph.output_names(sample)
    dims = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids")}
    dims["pixel_values"] = {0: "batch"}
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    try:
        registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", x4
        with optimize.plain_linears(model), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TORCH_EXPORT_NOISE, category=FutureWarning)
            warnings.filterwarnings("ignore", message=AXIS_NOTE, category=UserWarning)
            torch.onnx.export(
                graph,
                tuple(sample[n] for n in names),
                str(folder / ONNX_FILE),
                input_names=list(names),
                output_names=list(outputs),
                dynamic_shapes=(tuple(dims[n] for n in names),),  # forward(*inputs): one tuple of specs
                dynamo=True,
                verbose=False,
                report=False,
            )
    except Exception as exc:
        raise OmnirunError(f"ONNX export of {type(model).__name__} failed: {first_line(str(exc))}") from exc
    finally:
        registration.setLevel(level)
    model.config.save_pretrained(folder)
    if preprocessor is not None:
        preprocessor.save_pretrained(folder)
    diff = check_onnx(folder / ONNX_FILE, graph, sample, names)
    log.info("exported %s to %s (max |onnxruntime - torch| = %s)", type(model).__name__, folder, diff)
    return SavedModel(folder, ExportFormat.onnx, files_of(folder, before), diff)


def graph_inputs(model: Any, preprocessor: Any, kind: str) -> tuple[str, ...]:
    """The graph's inputs: pixel values, or token ids, attention mask and, for a model that reads them and a
    tokenizer that gives them (BERT, DeBERTa-v2: a text pair's two segments), token type ids."""
    if kind == "image":
        return ("pixel_values",)
    tokenizer = getattr(preprocessor, "tokenizer", preprocessor)
    given = getattr(tokenizer, "model_input_names", None) or []
    reads = inspect.signature(model.forward).parameters
    extra = ("token_type_ids",) if "token_type_ids" in given and "token_type_ids" in reads else ()
    return (*ONNX_INPUTS["text"], *extra)


SKIPPED_OUTPUTS = frozenset({"past_key_values", "hidden_states", "attentions", "cross_attentions"})
"""Model outputs that are not the head's answer (caches and the optional per-layer states)."""


class HeadGraph(torch.nn.Module):
    """The model as a graph: its inputs (`names`, in order) in, every output of its head out, in the order the
    model returns them (`logits`; `start_logits` and `end_logits` for question answering; ...)."""

    def __init__(self, model: Any, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.extra = {"use_cache": False} if model.can_generate() else {}

    def answer(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(**dict(zip(self.names, inputs, strict=True)), **self.extra, return_dict=True)
        return {k: v for k, v in out.items() if k not in SKIPPED_OUTPUTS and isinstance(v, torch.Tensor)}

    def output_names(self, sample: dict[str, torch.Tensor]) -> tuple[str, ...]:
        with torch.no_grad():
            return tuple(self.answer(*(sample[n] for n in self.names)))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.answer(*inputs).values())


def sample_inputs(model: Any, kind: str, names: Sequence[str] = ONNX_INPUTS["text"]) -> dict[str, Any]:
    """A small input for tracing and for the onnxruntime check (two rows, so the batch axis stays dynamic; a
    left-padded row; a second segment where the model reads token types)."""
    device = next(model.parameters()).device
    if kind == "image":
        cfg = model.config
        size = getattr(cfg, "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        dtype = next(model.parameters()).dtype
        pixels = torch.randn(2, getattr(cfg, "num_channels", 3), size, size, generator=torch.Generator().manual_seed(0))
        return {"pixel_values": pixels.to(device=device, dtype=dtype)}
    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 100) or 100)
    ids = torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded row
    sample = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if "token_type_ids" in names:
        types = torch.zeros_like(ids)
        types[:, 4:] = 1  # the pair's second segment
        sample["token_type_ids"] = types.to(device)
    return sample


def check_onnx(file: Path, graph: Any, sample: dict[str, Any], names: tuple[str, ...]) -> float | None:
    """Largest |onnxruntime - torch| on the sample; None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime is not installed: the exported graph is not checked")
        return None
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.float().cpu().numpy() for t in graph(*(sample[n] for n in names))]
    got = session.run(None, {n: sample[n].cpu().numpy() for n in names})
    if len(got) != len(expected):
        raise OmnirunError(f"the ONNX graph has {len(got)} outputs where the model has {len(expected)}")
    worst = 0.0
    mask = sample["attention_mask"].cpu().numpy().astype(bool) if "attention_mask" in sample else None
    for g, e in zip(got, expected, strict=True):
        diff = abs(g - e)
        if mask is not None and diff.shape[:2] == mask.shape:  # padding positions' outputs are meaningless
            diff = diff[mask]
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst


def push_to_hub(repo: str, folder: str | Path | None, save_to: Any, *, private: bool = False) -> str:
    """Upload `folder` (None: `save_to(tmp)` writes the model first) to the hub repo `repo`: its files, less
    hidden ones (`.git`, `.ssh`, `.cache`, dotfiles: never part of a model); one-line OmnirunError on failure
    (offline, no token, no write access)."""
    with tempfile.TemporaryDirectory(prefix="omnirun-push-") as tmp:
        source = Path(folder).expanduser() if folder is not None else save_to(tmp).path
        if not source.is_dir():
            raise OmnirunError(f"push_to_hub: {source} is not a folder; save or export the model first")
        files = [f for f in files_of(source) if not any(part.startswith(".") for part in Path(f).parts)]
        return upload_files(repo, source, files, private=private, what="the model" if folder is None else None)


def upload_files(
    repo: str, folder: Path, files: Sequence[str], *, private: bool = False, what: str | None = None
) -> str:
    """Upload exactly `files` (paths relative to `folder`, as `SavedModel.files` lists them) to the hub repo
    `repo` in one commit; returns the commit URL. One-line OmnirunError on failure."""
    from huggingface_hub import CommitOperationAdd, HfApi

    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
    try:
        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        commit = api.create_commit(repo_id=repo, operations=operations, commit_message="Upload from omnirun")
    except Exception as exc:
        raise OmnirunError(
            f"push_to_hub: uploading {what or folder} to the Hugging Face Hub repo {repo!r} failed "
            f"({first_line(str(exc)) or type(exc).__name__}); it needs network access and a token with write "
            "access (`hf auth login` or HF_TOKEN)"
        ) from exc
    return str(getattr(commit, "commit_url", commit))
