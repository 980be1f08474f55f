"""Read prompts from a JSONL file, a Hugging Face dataset, or the command line into validated `Record`s.

A bad record (malformed line, missing field, wrong type, invalid UTF-8, bad override) becomes a Record with
`error` set, so the run can write an error line for it and go on; a file that cannot be read at all raises
InputError at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnirun import formats
from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import ConfigError, InputError

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


def read(cfg: InputConfig, interactive_when_empty: bool = False) -> Inputs:
    """Read the configured input; with none, one prompt (input.prompt or DEFAULT_PROMPT), or an interactive
    session when `interactive_when_empty` (the chat task) and no input.prompt is set."""
    if cfg.path is not None:
        records, fingerprint = read_jsonl(Path(cfg.path), cfg.id_field)
        inputs = Inputs(records, "jsonl", fingerprint, openai=any(r.openai for r in records))
    elif cfg.dataset is not None:
        inputs = read_dataset(cfg)
    elif cfg.prompt is None and interactive_when_empty:
        return Inputs([], "interactive", None)
    else:
        text = cfg.prompt if cfg.prompt is not None else DEFAULT_PROMPT
        inputs = Inputs([make_record(0, "0", {"prompt": text})], "prompt", sha256(text.encode()))
    if cfg.limit is not None:
        inputs.records = inputs.records[: cfg.limit]
    return inputs


def read_jsonl(path: Path, id_field: str = "id") -> tuple[list[Record], str]:
    """Parse a JSONL file line by line; returns the records (bad lines carry `error`) and the file's sha256."""
    if not path.is_file():
        raise InputError(f"input.path={str(path)!r}: no such file")
    data = path.read_bytes()
    lines = data.splitlines()
    if not any(line.strip() for line in lines):
        raise InputError(f"input.path={str(path)!r} is empty; it needs one JSON object per line")
    records: list[Record] = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        index = len(records)
        records.append(parse_line(raw, lineno, index, id_field))
    if all(r.error and "not valid JSON" in r.error for r in records):
        raise InputError(
            f'input.path={str(path)!r} is not JSONL: no line is a JSON object (expected lines like {{"prompt": "..."}})'
        )
    return records, sha256(data)


def parse_line(raw: bytes, lineno: int, index: int, id_field: str) -> Record:
    where = f"line {lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(index, str(lineno), error=f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(index, str(lineno), error=f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(obj, dict):
        return Record(index, str(lineno), error=f"{where}: expected a JSON object, got {type(obj).__name__}")
    default_id = str(lineno)
    record = make_record(index, default_id, obj, id_field)
    if record.error:
        record.error = f"{where}: {record.error}"
    return record


def make_record(index: int, default_id: str, obj: dict[str, Any], id_field: str = "id") -> Record:
    """Validate one input object: an id, `prompt` (non-empty string) or `messages`, generation overrides.
    An OpenAI Batch API request (`custom_id`, `body`) is translated first."""
    if formats.is_openai_request(obj):
        obj, problem = formats.from_openai_request(obj)
        if problem:
            return Record(index, str(obj["id"]), error=problem, openai=True)
        record = make_record(index, default_id, obj)
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
    if overrides:
        try:
            GenerationConfig().with_overrides(overrides, prefix="")
        except (ConfigError, TypeError) as exc:
            record.error = f"bad generation override: {exc}"
    return record


def check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"'messages[{i}]' must be an object with string 'role' and 'content'"
    return None


def read_dataset(cfg: InputConfig) -> Inputs:
    """A `save_to_disk` folder, a local data file or folder (parquet/json/jsonl/csv), or a hub dataset name."""
    assert cfg.dataset is not None
    ds = load_dataset_any(cfg.dataset, cfg.split)
    if cfg.limit is not None:
        ds = ds.select(range(min(cfg.limit, len(ds))))
    columns = set(ds.column_names)
    uses_messages = cfg.messages_field in columns and cfg.template is None and cfg.field not in columns
    if not uses_messages and cfg.template is None and cfg.field not in columns:
        raise InputError(
            f"input.field={cfg.field!r} is not a column of {cfg.dataset!r}; columns: {', '.join(sorted(columns))} "
            "(set input.field, input.messages_field or input.template)"
        )
    records = []
    for index, row in enumerate(ds):
        default_id = str(index)
        if uses_messages:
            obj = {"messages": row[cfg.messages_field]}
        elif cfg.template is not None:
            try:
                obj = {"prompt": cfg.template.format(**row)}
            except (KeyError, IndexError, ValueError) as exc:
                records.append(Record(index, default_id, error=f"row {index}: input.template cannot be filled ({exc})"))
                continue
        else:
            obj = {"prompt": row[cfg.field]}
        if cfg.id_field in row:
            obj["id"] = row[cfg.id_field]
        record = make_record(index, default_id, obj)
        if record.error:
            record.error = f"row {index}: {record.error}"
        records.append(record)
    return Inputs(records, "dataset", getattr(ds, "_fingerprint", None))


DATA_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


def load_dataset_any(name: str, split: str) -> Any:
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        if path.is_file():
            builder = DATA_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise InputError(f"input.dataset={name!r}: unknown file type; use one of {', '.join(DATA_BUILDERS)}")
            return datasets.load_dataset(builder, data_files=str(path), split=split)
        if path.is_dir():
            return datasets.load_dataset(str(path), split=split)
        if name.startswith((".", "/", "~")):
            raise InputError(f"input.dataset={name!r}: no such file or folder")
        return datasets.load_dataset(name, split=split)
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(
            f"input.dataset={name!r} (split {split!r}) could not be read: {first}. "
            "Offline? Use a local file or a save_to_disk folder"
        ) from exc


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
