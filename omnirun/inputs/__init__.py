"""Inputs: JSONL files, Hugging Face datasets, OpenAI batch request lines, or one prompt from the command line,
read into validated `Record`s. A bad record carries `error` (the run writes an error line for it and goes on);
an input that cannot be read at all raises InputError at once."""

from __future__ import annotations

from pathlib import Path

from omnirun.config import GenerationConfig, InputConfig
from omnirun.inputs.dataset import read_dataset
from omnirun.inputs.jsonl import read_jsonl
from omnirun.inputs.records import DEFAULT_PROMPT, Inputs, Record, make_record, sha256

__all__ = ["DEFAULT_PROMPT", "Inputs", "Record", "make_record", "read", "read_dataset", "read_jsonl"]


def read(
    cfg: InputConfig, generation: GenerationConfig | None = None, *, interactive_when_empty: bool = False
) -> Inputs:
    """Read the configured input; with none, one prompt (input.prompt or DEFAULT_PROMPT), or an interactive
    session when `interactive_when_empty` (the chat task) and no input.prompt is set. Per-record generation
    parameters are checked against `generation`, the run's own settings."""
    base = generation or GenerationConfig()
    if cfg.path is not None:
        records, fingerprint = read_jsonl(Path(cfg.path).expanduser(), cfg, base)
        inputs = Inputs(records, "jsonl", fingerprint, openai=any(r.openai for r in records))
    elif cfg.dataset is not None:
        inputs = read_dataset(cfg, base)
    elif cfg.prompt is None and interactive_when_empty:
        return Inputs([], "interactive", None)
    else:
        text = cfg.prompt if cfg.prompt is not None else DEFAULT_PROMPT
        inputs = Inputs([make_record(0, "0", {"prompt": text}, base=base)], "prompt", sha256(text.encode()))
    if cfg.limit is not None:
        inputs.records = inputs.records[: cfg.limit]
    return inputs
