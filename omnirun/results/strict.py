"""Every JSON file omnirun writes is strict, redacted UTF-8 JSON, which strict readers (jq, serde, Go) accept:
no NaN or Infinity (written as null), no lone UTF-16 surrogate (written as U+FFFD, the replacement character),
and no secret (`secrets.redact_value`: strings only change, so the text still parses).

A lone surrogate reaches a row from an input such as `{"prompt": "\\ud800"}`; such a record is already an error
row (`text holds a lone surrogate (\\ud800) at position 0, ...`, which says what was replaced), so its echoed
prompt carries U+FFFD in its place and nothing else changes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from omnirun.secrets import has_secret, redact_value, secret_forms

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any, *, indent: int | None = None, secrets: list[str] | None = None) -> str:
    """`obj` (JSON-like: dicts, lists, strings, numbers, booleans, None) as strict, redacted JSON text;
    `secrets`: the secrets' forms when the caller has them (`secrets.secret_forms()`, read once per file)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):  # NaN / Infinity, or a lone surrogate: repair value by value
        obj = repair(obj)
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=indent)
    if has_secret(text, secret_forms() if secrets is None else secrets):
        text = json.dumps(redact_value(obj), ensure_ascii=False, allow_nan=False, indent=indent)
    return text


def repair(obj: Any) -> Any:
    """NaN and infinities as None, lone surrogates as U+FFFD, in every string (keys too) and number."""
    if isinstance(obj, str):
        return _SURROGATE.sub(REPLACEMENT, obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {repair(k) if isinstance(k, str) else k: repair(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [repair(v) for v in obj]
    return obj


def as_written(texts: Iterable[str]) -> Iterator[str]:
    """Each text as a file holds it after `dumps` (redacted, lone surrogates replaced): how an id written to
    outputs.jsonl compares with the input's."""
    known = secret_forms()
    for text in texts:
        yield str(json.loads(dumps(text, secrets=known)))


def clean_text(text: str) -> str:
    """Text with each lone surrogate replaced by U+FFFD (so that it can be written as UTF-8)."""
    return _SURROGATE.sub(REPLACEMENT, text)
