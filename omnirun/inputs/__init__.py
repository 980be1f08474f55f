"""Inputs: JSONL files, Hugging Face datasets, OpenAI batch request lines, or one prompt from the command line,
read into validated `Record`s. A bad record carries `error` (the run writes an error line for it and goes on);
an input that cannot be read at all raises InputError at once."""

from __future__ import annotations

from pathlib import Path

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs.dataset import read_dataset
from omnirun.inputs.jsonl import read_jsonl
from omnirun.inputs.records import DEFAULT_PROMPT, Inputs, InputSpec, Record, make_record, sha256

__all__ = ["DEFAULT_PROMPT", "Inputs", "Record", "make_record", "read", "read_dataset", "read_jsonl"]


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
        inputs = Inputs(records, "jsonl", fingerprint, openai=any(r.openai for r in records))
    elif cfg.dataset is not None:
        inputs = read_dataset(cfg, base, spec=spec)
    elif cfg.prompt is None and interactive_when_empty:
        return Inputs([], "interactive", None)
    else:
        text = cfg.prompt if cfg.prompt is not None else DEFAULT_PROMPT
        record = make_record(0, "0", {"prompt": text}, base=base, spec=spec)
        inputs = Inputs([record], "prompt", sha256(text.encode()))
    if cfg.limit is not None:
        inputs.records = inputs.records[: cfg.limit]
    return inputs
