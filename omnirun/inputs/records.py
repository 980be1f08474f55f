"""Records: one validated input each. A bad record (malformed line, missing field, wrong type, invalid UTF-8,
bad override) becomes a Record with `error` set, so the run can write an error line for it and go on."""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from typing import Any

from omnirun.config import GenerationConfig
from omnirun.errors import ConfigError
from omnirun.inputs import openai

DEFAULT_PROMPT = "What is the capital of France?"
"""The prompt `generate`, `batch` and `stream` answer when no input is given."""

GENERATION_KEYS = frozenset(GenerationConfig.__dataclass_fields__)


@dataclass
class Record:
    index: int
    """Position in the input (0-based); results are written in this order."""
    id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Per-record generation parameters (validated against GenerationConfig)."""
    template: bool | None = None
    """Force (True) or forbid (False) the chat template for a plain prompt; None follows task.chat_template."""
    error: str | None = None
    """Why this record cannot be run; it is written as an error line instead."""
    openai: bool = False
    """Read from an OpenAI Batch API request line."""

    def as_input(self) -> dict[str, Any]:
        """The input fields echoed into outputs.jsonl."""
        return {"messages": self.messages} if self.messages is not None else {"prompt": self.prompt}


@dataclass
class Inputs:
    records: list[Record]
    source: str
    """`jsonl`, `dataset`, `prompt` (one prompt from the command line or the default) or `interactive`."""
    fingerprint: str | None
    """sha256 of the input file, the dataset's fingerprint, or of the prompt text."""
    openai: bool = False
    """The input lines are OpenAI Batch API requests (so the results are also written in that format)."""

    @property
    def problems(self) -> list[str]:
        return [r.error for r in self.records if r.error]


def make_record(
    index: int, default_id: str, obj: dict[str, Any], id_field: str = "id", base: GenerationConfig | None = None
) -> Record:
    """Validate one input object: an id, `prompt` (non-empty string) or `messages`, generation overrides.
    An OpenAI Batch API request (`custom_id`, `body`) is translated first. The overrides are checked on top
    of `base`, the run's generation settings (the defaults when not given)."""
    if openai.is_openai_request(obj):
        obj, problem = openai.from_openai_request(obj)
        if problem:
            return Record(index, str(obj["id"]), error=problem, openai=True)
        record = make_record(index, default_id, obj, base=base)
        record.openai = True
        record.template = obj.get("template")
        return record
    raw_id = obj.get(id_field)
    rid = default_id if raw_id is None else str(raw_id)
    record = Record(index, rid)
    overrides = {k: v for k, v in obj.items() if k in GENERATION_KEYS}
    if isinstance(obj.get("generation"), dict):
        overrides.update(obj["generation"])
    record.overrides = overrides
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if messages is not None:
        problem = check_messages(messages)
        if problem:
            record.error = problem
            return record
        record.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif prompt is not None:
        if not isinstance(prompt, str):
            record.error = f"'prompt' must be a string, got {type(prompt).__name__}"
            return record
        if not prompt.strip():
            record.error = "'prompt' is empty"
            return record
        record.prompt = prompt
    else:
        record.error = "missing 'prompt' (or 'messages')"
        return record
    problem = unencodable(record.prompt, *(m["content"] for m in record.messages or []))
    if problem:
        record.error = problem
        return record
    if overrides:
        try:
            (base or GenerationConfig()).with_overrides(overrides, prefix="")
        except (ConfigError, TypeError) as exc:
            record.error = f"bad generation override: {exc}"
    return record


def unencodable(*texts: str | None) -> str | None:
    """A problem when a text holds something no tokenizer can encode (a lone UTF-16 surrogate from a JSON
    escape such as "\\ud800")."""
    for text in texts:
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start].encode("utf-8", "backslashreplace").decode()
            return f"text holds a lone surrogate ({bad}) at position {exc.start}, which no tokenizer can encode"
    return None


def check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"'messages[{i}]' must be an object with string 'role' and 'content'"
    return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _FieldsOnly(string.Formatter):
    """str.format that fills plain `{name}` fields only: `{x.attr}` or `{x[0]}` would let a template reach
    into Python objects (`{q.__class__.__mro__}`)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise ValueError(f"template field {{{field_name}}} is not a plain column name")
        return super().get_field(field_name, args, kwargs)


def fill_template(template: str, fields: dict[str, Any]) -> str:
    """`input.template` filled from a record's fields; raises ValueError/KeyError naming what is wrong."""
    return _FieldsOnly().vformat(template, (), fields)
