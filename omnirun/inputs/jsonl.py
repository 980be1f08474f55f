"""JSONL files: one record per line; a bad line becomes an error record naming the line."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs.records import Record, fill_template, make_record, sha256


def read_jsonl(path: Path, cfg: InputConfig, base: GenerationConfig | None = None) -> tuple[list[Record], str]:
    """Parse a JSONL file line by line; returns the records (bad lines carry `error`) and the file's sha256.
    A UTF-8 byte-order mark at the start is skipped; `input.field`, `input.messages_field`, `input.id_field`
    and `input.template` apply as they do to a dataset."""
    if not path.is_file():
        raise InputError(f"input.path={str(path)!r}: no such file")
    data = path.read_bytes()
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    lines = body.splitlines()
    if not any(line.strip() for line in lines):
        raise InputError(f"input.path={str(path)!r} is empty; it needs one JSON object per line")
    records: list[Record] = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        records.append(parse_line(raw, lineno, len(records), cfg, base))
    if all(r.error and r.error.split(": ", 1)[-1].startswith(NOT_AN_OBJECT) for r in records):
        raise InputError(
            f'input.path={str(path)!r} is not JSONL: no line is a JSON object (expected lines like {{"prompt": "..."}})'
        )
    return records, sha256(data)


NOT_AN_OBJECT = ("not valid JSON", "not readable JSON", "expected a JSON object")


def parse_line(raw: bytes, lineno: int, index: int, cfg: InputConfig, base: GenerationConfig | None = None) -> Record:
    """One line as a record; whatever is wrong with it (encoding, JSON, nesting, a number too long, fields)
    becomes the record's error, naming the line."""
    where = f"line {lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(index, str(lineno), error=f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(index, str(lineno), error=f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting deeper than the parser allows
        return Record(index, str(lineno), error=f"{where}: not readable JSON ({type(exc).__name__}: {exc})"[:300])
    if not isinstance(obj, dict):
        return Record(index, str(lineno), error=f"{where}: expected a JSON object, got {type(obj).__name__}")
    try:
        record = make_record(index, str(lineno), select_fields(obj, cfg), cfg.id_field, base)
    except Exception as exc:  # anything unexpected about this line stays this line's problem
        record = Record(index, str(lineno), error=f"{type(exc).__name__}: {exc}"[:300])
    if record.error:
        record.error = f"{where}: {record.error}"
    return record


def select_fields(obj: dict[str, Any], cfg: InputConfig) -> dict[str, Any]:
    """The line with `prompt` / `messages` taken from the configured fields or filled into the template."""
    if "custom_id" in obj or ("prompt" in obj and cfg.field == "prompt" and cfg.template is None):
        return obj
    out = dict(obj)
    if cfg.messages_field != "messages" and cfg.messages_field in obj:
        out["messages"] = obj[cfg.messages_field]
    elif cfg.template is not None and "messages" not in obj:
        out["prompt"] = fill_template(cfg.template, obj)
    elif cfg.field != "prompt" and cfg.field in obj:
        out["prompt"] = obj[cfg.field]
    return out
