"""Inputs: JSONL files, Hugging Face datasets, OpenAI batch request lines, or one prompt from the command line,
read into validated `Record`s, lazily (a first pass counts them and keeps the first problems; the run reads
them again window by window, so memory does not grow with the input). A bad record carries `error` (the run
writes an error line for it and goes on); an input that cannot be read at all raises InputError at once."""

from __future__ import annotations

from pathlib import Path

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs.dataset import read_dataset
from omnirun.inputs.jsonl import read_jsonl
from omnirun.inputs.records import DEFAULT_PROMPT, Inputs, InputSpec, Record, Records, make_record, sha256

__all__ = ["DEFAULT_PROMPT", "Inputs", "Record", "Records", "make_record", "read", "read_dataset", "read_jsonl"]


def read(
    cfg: InputConfig,
    generation: GenerationConfig | None = None,
    *,
    interactive_when_empty: bool = False,
    spec: InputSpec | None = None,
) -> Inputs:
    """Read the configured input; with none, one prompt (input.prompt or DEFAULT_PROMPT), or an interactive
    session when `interactive_when_empty` (the chat task) and no input.prompt is set. Per-record generation
    parameters are checked against `generation`, the run's own settings; `spec` names a non-generation
    task's fields (None: prompt or messages)."""
    base = generation or GenerationConfig()
    if spec is not None and cfg.path is None and cfg.dataset is None and "prompt" not in spec.required:
        need = ", ".join(spec.required)
        raise InputError(f"task={spec.task} reads {need} from each record; give input.path or input.dataset")
    if cfg.path is not None:
        records, fingerprint = read_jsonl(Path(cfg.path).expanduser(), cfg, base, spec=spec)
        return Inputs(records, "jsonl", fingerprint, openai=records.openai)
    if cfg.dataset is not None:
        return read_dataset(cfg, base, spec=spec)
    if cfg.prompt is None and interactive_when_empty:
        return Inputs(Records.of([]), "interactive", None)
    text = cfg.prompt if cfg.prompt is not None else DEFAULT_PROMPT
    record = make_record(0, "0", {"prompt": text}, base=base, spec=spec)
    return Inputs(Records.of([record][: cfg.limit]), "prompt", sha256(text.encode()))
