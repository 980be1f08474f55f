"""The rows `task=score` reads: from a run directory (its outputs.jsonl), an outputs.jsonl, an OpenAI Batch API
output (`batch_output.jsonl`), or any JSONL (plain or compressed) with an output field.

Each row comes as a `SourceRow`: its id, its fields, and an error when it cannot be scored at all (a line that is
not a JSON object, a record the run or the batch failed). Rows are read lazily, in file order, none dropped.

References that are not in the rows themselves come from a references file joined by id: the batch *input* file
of an OpenAI batch output (joined by `custom_id`; a request line's reference is a top-level field, or a field of
`body.metadata`), or any JSONL (joined by its id field, else its line number, as omnirun numbers input records).
A run's own input file (`input.path` in its config.yaml) is that file by default, when it still exists.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omnirun import rundir
from omnirun.errors import InputError
from omnirun.inputs import compressed
from omnirun.inputs.compressed import BrokenStream, TooLong

BOM = b"\xef\xbb\xbf"


class SourceKind(StrEnum):
    run_dir = "run_dir"
    """A run directory, or the outputs.jsonl / batch_output.jsonl inside one."""
    openai_batch = "openai_batch"
    """OpenAI Batch API output lines: `{"custom_id", "response": {"status_code", "body"}, "error"}`."""
    jsonl = "jsonl"


@dataclass
class SourceRow:
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why this row cannot be scored (it becomes an error row)."""
    line: int = 0
    """Its line in the file read (1-based)."""


@dataclass(frozen=True)
class Source:
    """Where the rows to score come from (checked when made; read by `rows()`)."""

    kind: SourceKind
    path: Path
    """The file of rows."""
    references: Path | None = None
    """The file joined by id for the fields the rows lack (None: the rows carry their references)."""
    output_field: str = "output"
    id_field: str = "id"
    """The rows' id field (a row without one is numbered by its line)."""
    references_id_field: str = "id"
    """The references file's id field (a run's saved `input.id_field`)."""

    def rows(self, keep: Collection[str] = ()) -> Iterator[SourceRow]:
        """The rows, each completed by the fields named in `keep` from the references file when it lacks them."""
        joined = read_references(self.references, self.references_id_field, keep) if self.references else {}
        parse = batch_row if self.kind is SourceKind.openai_batch or is_batch_file(self.path) else plain_row
        for lineno, obj, problem in read_objects(self.path):
            row = SourceRow(str(lineno), line=lineno, error=problem) if obj is None else parse(obj, lineno, self)
            extra = joined.get(row.id)
            if isinstance(extra, str):
                row.error = row.error or extra
            elif extra:
                row.fields = {**extra, **row.fields}
            yield row


def open_source(
    path: str | Path, *, references: str | Path | None = None, output_field: str = "output", id_field: str = "id"
) -> Source:
    """The source at `path` (InputError when there is nothing to read there). `references`: a file to join
    by id (None: a run's own input file, when the rows come from a run directory and it still exists)."""
    where = Path(path).expanduser()
    run: rundir.RunDir | None = None
    if where.is_dir():
        run = rundir.RunDir(where)
        if not run.outputs.is_file():
            raise InputError(
                f"input.path={str(where)!r} is a folder without {rundir.OUTPUTS}; give a run directory, an "
                f"{rundir.OUTPUTS} or a JSONL file"
            )
        where = run.outputs
    elif rundir.RunDir(where.parent).is_run() and where.name in (rundir.OUTPUTS, rundir.BATCH_OUTPUT):
        run = rundir.RunDir(where.parent)
    check_file(where, "input.path")
    refs = Path(references).expanduser() if references is not None else None
    refs_id_field = id_field
    if refs is not None:
        check_file(refs, "task.references")
    elif run is not None:
        refs, saved_id_field = run_input(run)
        refs_id_field = saved_id_field or id_field
    if run is not None:
        id_field = "id"  # outputs.jsonl names every row's id `id`
    kind = SourceKind.run_dir if run else SourceKind.openai_batch if is_batch_file(where) else SourceKind.jsonl
    return Source(kind, where, refs, output_field, id_field, refs_id_field)


def check_file(path: Path, key: str) -> None:
    if not path.is_file():
        raise InputError(f"{key}={str(path)!r}: no such file")
    if not compressed.head(path).removeprefix(BOM).strip():
        raise InputError(f"{key}={str(path)!r} is empty; it needs one JSON object per line")


def run_input(run: rundir.RunDir) -> tuple[Path | None, str | None]:
    """The input file a run read (`input.path` of its config.yaml) and its `input.id_field`, when the file
    still exists; (None, None) otherwise (a dataset input, a moved file)."""
    import yaml

    try:
        saved = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    section = saved.get("input") if isinstance(saved, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("path"), str):
        return None, None
    path = Path(section["path"]).expanduser()
    id_field = section.get("id_field")
    return (path if path.is_file() else None), (id_field if isinstance(id_field, str) else None)


def read_objects(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, the line's JSON object, None) for each non-blank line, or (line number, None, why not)."""
    lineno = 0
    try:
        for lineno, raw in enumerate(compressed.lines(path), start=1):
            if isinstance(raw, TooLong):
                yield lineno, None, f"line {lineno}: {raw.size:,} bytes, over the limit for one line"
                continue
            raw = raw.removeprefix(BOM) if lineno == 1 else raw
            if raw.strip():
                yield (lineno, *parse_object(raw, lineno))
    except BrokenStream as exc:
        yield lineno + 1, None, f"line {lineno + 1}: the file breaks off here ({exc})"


def parse_object(raw: bytes, lineno: int) -> tuple[dict[str, Any] | None, str | None]:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"line {lineno}: invalid UTF-8 ({exc.reason} at byte {exc.start})"
    except (ValueError, RecursionError) as exc:
        return None, f"line {lineno}: not valid JSON ({str(exc)[:120]})"
    if not isinstance(obj, dict):
        return None, f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
    return obj, None


def is_batch_file(path: Path) -> bool:
    """Whether the first object of the file is an OpenAI batch *output* line."""
    for _, obj, _ in read_objects(path):
        return obj is not None and "custom_id" in obj and "response" in obj
    return False


def row_id(obj: dict[str, Any], id_field: str, lineno: int) -> str:
    value = obj.get(id_field)
    return str(lineno) if value is None else str(value)


def plain_row(obj: dict[str, Any], lineno: int, source: Source) -> SourceRow:
    """A JSONL or outputs.jsonl row; an outputs.jsonl row whose record failed is an error row. The fields its
    input record carried (`fields`, see `ResultRow.fields`) are read as the row's own, the row's winning."""
    row = SourceRow(row_id(obj, source.id_field, lineno), with_carried(obj), line=lineno)
    if source.kind is SourceKind.run_dir and obj.get("error") is not None:
        row.error = f"the run could not answer this record: {str(obj['error'])[:200]}"
    return row


def with_carried(obj: dict[str, Any]) -> dict[str, Any]:
    """An outputs.jsonl row's fields with those its input record carried (`fields`) as its own, the row's own
    winning where both have one."""
    carried = obj.get("fields")
    return {**carried, **obj} if isinstance(carried, dict) else dict(obj)


def batch_row(obj: dict[str, Any], lineno: int, source: Source) -> SourceRow:
    """An OpenAI batch output line: the answer's text as the output field (choices[0])."""
    row = SourceRow(str(obj.get("custom_id", lineno)), line=lineno)
    response = as_dict(obj.get("response"))
    error = obj.get("error")
    if error is not None or response.get("status_code") != 200:
        message = error.get("message") if isinstance(error, dict) else error
        row.error = f"the batch request failed (status {response.get('status_code')}): {str(message)[:200]}"
        return row
    body = as_dict(response.get("body"))
    choices = body.get("choices")
    choice = as_dict(choices[0] if isinstance(choices, list) and choices else None)
    message = as_dict(choice.get("message"))
    text = message.get("content", choice.get("text"))
    if not isinstance(text, str):
        row.error = "no text answer in response.body.choices[0] (message.content or text)"
        return row
    row.fields = {source.output_field: text}
    return row


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_references(path: Path, id_field: str, keep: Collection[str]) -> dict[str, dict[str, Any] | str]:
    """The fields named in `keep` of each line of a references file, by id; an id on several lines maps to
    the problem that names them (each row with that id becomes an error row, never a guess)."""
    found: dict[str, dict[str, Any] | str] = {}
    first_line: dict[str, int] = {}
    for lineno, obj, _ in read_objects(path):
        if obj is None:
            continue
        if "custom_id" in obj and isinstance(obj.get("body"), dict):
            rid = str(obj["custom_id"])
            metadata = obj["body"].get("metadata")
            fields = {**(metadata if isinstance(metadata, dict) else {}), **obj}
        else:
            rid, fields = row_id(obj, id_field, lineno), obj
        if rid in first_line:
            found[rid] = f"id {rid!r} is on lines {first_line[rid]} and {lineno} of {path.name}; ids must be unique"
            continue
        first_line[rid] = lineno
        found[rid] = {k: fields[k] for k in keep if k in fields}
    return found
