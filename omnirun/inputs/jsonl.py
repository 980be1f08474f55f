"""Record files (`input.path`): JSONL (one record per line), a JSON array of records, or CSV/TSV with a header;
plain or compressed (gzip, bz2, xz, zstd: see `compressed`). A bad line, element or row becomes an error
record naming it, and the run goes on; a file that cannot be read at all raises InputError."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs import compressed, openai
from omnirun.inputs.compressed import ArrayError, BrokenStream, NotAnArray, TooLong, iter_array
from omnirun.inputs.guard import guarded
from omnirun.inputs.records import Record, Records, carried_fields, fill_template, make_record, unencodable

if TYPE_CHECKING:
    from omnirun.inputs.records import InputSpec

BOM = codecs.BOM_UTF8


def read_jsonl(
    path: Path, cfg: InputConfig, base: GenerationConfig | None = None, *, spec: InputSpec | None = None
) -> tuple[Records, str]:
    """Read a record file; returns the records (bad ones carry `error`), read lazily after one first pass that
    keeps none of them (`Records.scan`: the count and the problems), and the sha256 of the file as stored (a
    streaming pass over its bytes).
    The format is told by the content (a JSON array starts with `[`) and the name (`.csv`, `.tsv`, also under
    a compression suffix); anything else is JSONL. A UTF-8 byte-order mark is skipped; `input.field`,
    `input.messages_field`, `input.id_field` and `input.template` apply as they do to a dataset; reading stops
    after `input.limit` records. `spec`: the fields a non-generation task reads (None: prompt or messages).
    Every later read of the file is checked against this first one (`guard`): a file changed during the run
    stops it with InputChanged."""
    check_file(path)
    if compressed.is_parquet(path):
        raise InputError(
            f"input.path={str(path)!r} is a parquet file, not JSONL; read it with input.dataset={str(path)!r} "
            "(and input.path=null)"
        )
    from omnirun.inputs.delimited import DELIMITERS, csv_records

    delimiter = DELIMITERS.get(compressed.data_suffix(path.name))
    if delimiter is not None:
        opener: Opener = lambda: csv_records(path, delimiter, cfg, base, spec)  # noqa: E731
    elif compressed.head(path).removeprefix(BOM).lstrip().startswith(b"["):
        opener = array_or_lines(path, cfg, base, spec)  # held in memory: a later read reads no file
    else:
        opener = lambda: line_records(path, cfg, base, spec)  # noqa: E731
    digest = compressed.file_sha256(path)
    guard = guarded(opener, f"input.path={str(path)!r}", path, compressed.file_sha256)
    guard.expect_sha256(digest)
    return Records.scan(guard.open, cfg.limit), digest


Opener = Callable[[], Iterator[Record]]
"""Reads the records from the start (each call a new generator)."""


def check_file(path: Path) -> None:
    if path.is_dir():
        raise InputError(
            f"input.path={str(path)!r} is a folder; input.path takes one file (for a folder or a glob of shards "
            "use input.dataset)"
        )
    if not path.is_file():
        raise InputError(f"input.path={str(path)!r}: no such file")
    try:
        path.open("rb").close()
    except OSError as exc:
        message = f"input.path={str(path)!r} cannot be opened ({exc.strerror or exc}); check its permissions"
        raise InputError(message) from exc


# JSONL


def line_records(
    path: Path, cfg: InputConfig, base: GenerationConfig | None, spec: InputSpec | None = None
) -> Iterator[Record]:
    """One record per non-blank line, numbered from 1 as an editor numbers them, as they are read. After the
    last record, InputError when there was none, or when no line was a JSON object (the first pass raises it,
    before anything runs)."""
    n, objects, lineno = 0, False, 0
    try:
        for lineno, raw in enumerate(compressed.lines(path), start=1):
            record = None
            if isinstance(raw, TooLong):
                record = too_long(raw, f"line {lineno}", lineno, n)
            elif raw.strip():
                raw = raw.removeprefix(BOM) if lineno == 1 else raw
                record = parse_line(raw, lineno, n, cfg, base, spec=spec)
            if record is not None:
                n += 1
                objects = objects or not (record.error and record.error.split(": ", 1)[-1].startswith(NOT_AN_OBJECT))
                yield record
            if cfg.limit is not None and n >= cfg.limit:
                return
    except BrokenStream as exc:
        objects = True
        yield broken(path, exc, lineno + 1, n, "line")
        n += 1
    if not n:
        raise InputError(f"input.path={str(path)!r} is empty; it needs one JSON object per line")
    if not objects:
        raise InputError(
            f'input.path={str(path)!r} is not JSONL: no line is a JSON object (expected lines like {{"prompt": "..."}})'
        )


NOT_AN_OBJECT = ("not valid JSON", "not readable JSON", "expected a JSON object")


def parse_line(
    raw: bytes,
    lineno: int,
    index: int,
    cfg: InputConfig,
    base: GenerationConfig | None = None,
    *,
    spec: InputSpec | None = None,
) -> Record:
    """One line as a record; whatever is wrong with it (encoding, JSON, nesting, a number too long, fields)
    becomes the record's error, naming the line."""
    where = f"line {lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return unparsed(raw, lineno, index, f"{where}: invalid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return unparsed(raw, lineno, index, f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting deeper than the parser allows
        return unparsed(raw, lineno, index, f"{where}: not readable JSON ({type(exc).__name__}: {exc})"[:300])
    return object_record(obj, where, str(lineno), index, cfg, base, spec=spec)


def unparsed(raw: bytes, lineno: int, index: int, error: str) -> Record:
    """The error record of a line that does not parse: its id is the request's own `custom_id` when the line
    is an OpenAI batch request that says one (so batch_output.jsonl answers that request), else the line
    number."""
    custom_id = openai.custom_id_in(raw)
    return Record(index, str(lineno) if custom_id is None else custom_id, error=error, openai=custom_id is not None)


def object_record(
    obj: Any,
    where: str,
    default_id: str,
    index: int,
    cfg: InputConfig,
    base: GenerationConfig | None,
    *,
    spec: InputSpec | None = None,
    text_only: bool = False,
) -> Record:
    """A parsed line, element or row as a record; an error names `where`. `text_only` (CSV, whose values are
    all strings) keeps the prompt, the id and the task's fields only, so a column that happens to share a
    generation parameter's name is not read as one."""
    if not isinstance(obj, dict):
        return Record(index, default_id, error=f"{where}: expected a JSON object, got {type(obj).__name__}")
    try:
        fields = select_fields(obj, cfg)
        if text_only:
            keep = {"prompt", *(spec.names if spec else ())}
            fields = {k: v for k, v in fields.items() if k in keep or (k == cfg.id_field and v != "")}
        record = new_record(index, default_id, fields, cfg.id_field, base, spec)
    except Exception as exc:  # anything unexpected about this record stays this record's problem
        record = Record(index, default_id, error=f"{type(exc).__name__}: {exc}"[:300])
    if is_broken_request(obj):
        record.id, record.openai = str(obj["custom_id"]), True
        record.error = f"an OpenAI batch request needs 'body' as an object, got {type(obj.get('body')).__name__}"
    if record.error is None:
        record.error = unencodable(record.prompt, *texts_of(record.fields))
    if record.error:
        record.error = f"{where}: {record.error}"
    consumed = [cfg.id_field, cfg.field, cfg.messages_field, *(spec.names if spec else ())]
    record.carried = carried_fields(obj, consumed, cfg.template)
    return record


def is_broken_request(obj: dict[str, Any]) -> bool:
    """An OpenAI batch request line (`custom_id` with `body`, `url` or `method`) that is not well-formed: its
    error row keeps the request's `custom_id`, so that batch_output.jsonl answers that request."""
    shaped = "custom_id" in obj and any(k in obj for k in ("body", "url", "method"))
    return shaped and not openai.is_openai_request(obj)


def texts_of(fields: dict[str, Any]) -> Iterator[str]:
    """The text values of a task's fields (a list of documents item by item)."""
    for value in fields.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                yield item


def new_record(
    index: int,
    default_id: str,
    obj: dict[str, Any],
    id_field: str,
    base: GenerationConfig | None,
    spec: InputSpec | None,
) -> Record:
    """`make_record`, given the task's `spec` only when there is one (a generation task has none)."""
    if spec is None:
        return make_record(index, default_id, obj, id_field, base)
    return make_record(index, default_id, obj, id_field, base, spec=spec)


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


def too_long(line: TooLong, where: str, lineno: int, index: int) -> Record:
    limit = compressed.MAX_LINE_BYTES
    error = f"{where}: {line.size:,} bytes, over the {limit:,}-byte limit for one record; shorten or split it"
    return Record(index, str(lineno), error=error)


def broken(path: Path, exc: BrokenStream, lineno: int, n: int, unit: str) -> Record:
    """The error record that ends a file whose stream breaks at `lineno` after `n` records; InputError when
    nothing came before."""
    what = f"input.path={str(path)!r} breaks off at line {lineno}: {exc}"
    if not n:
        raise InputError(f"{what}; nothing before it could be read (re-download or re-compress the file)")
    return Record(
        n, str(lineno), error=f"{what}; the {plural(n, unit)} before it were read (re-download or re-compress the file)"
    )


def plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


# JSON array


def array_or_lines(
    path: Path, cfg: InputConfig, base: GenerationConfig | None, spec: InputSpec | None = None
) -> Opener:
    """A file that starts with `[`: a JSON array of records, or JSONL whose first line starts with `[`. When
    the array is malformed or breaks off, the file is also read as JSONL and the reading that keeps more good
    records wins, so a JSONL file with a stray first line loses none of its good lines. An array is held in
    memory (JSON gives no line to stop at); JSONL is read lazily."""
    problem: InputError | None = None
    as_lines: Opener = lambda: line_records(path, cfg, base, spec)  # noqa: E731
    try:
        records, clean = array_records(path, cfg, base, spec)
    except NotAnArray:
        return as_lines
    except InputError as exc:
        records, clean, problem = [], False, exc
    if clean:
        return lambda: iter(records)
    try:
        good_lines = count_good(as_lines())
    except InputError:
        good_lines = 0
    if good_lines > count_good(records):
        return as_lines
    if problem is not None:
        raise problem
    return lambda: iter(records)


def count_good(records: Iterable[Record]) -> int:
    return sum(r.error is None for r in records)


def array_records(
    path: Path, cfg: InputConfig, base: GenerationConfig | None, spec: InputSpec | None = None
) -> tuple[list[Record], bool]:
    """Each element of a JSON array as a record (elements numbered from 1; the id defaults to that number, as
    a JSONL line's to its line number), and whether the array was read cleanly to its end or `input.limit`.
    The array is read whole: JSON gives no line to stop at. Raises NotAnArray when text follows the array."""
    data, brk = compressed.read_all(path)
    text = data.removeprefix(BOM).decode("utf-8", "surrogateescape")  # bad bytes: per-element errors later
    records: list[Record] = []
    try:
        for number, line, obj in iter_array(text):
            where = f"element {number} (line {line})"
            records.append(object_record(obj, where, str(number), len(records), cfg, base, spec=spec))
            if cfg.limit is not None and len(records) >= cfg.limit:
                return records, True
    except ArrayError as exc:
        if brk is not None:
            records.append(broken(path, brk, exc.line, len(records), "element"))
        elif not records:
            raise InputError(f"input.path={str(path)!r} is not a valid JSON array: {exc}") from None
        else:
            records.append(Record(len(records), str(exc.number), error=f"{exc}; the rest of the array is not read"))
        return records, False
    if brk is not None:
        records.append(broken(path, brk, text.count("\n") + 1, len(records), "element"))
        return records, False
    if not records:
        raise InputError(f'input.path={str(path)!r} is an empty JSON array; it needs objects like {{"prompt": ...}}')
    if all(r.error and "expected a JSON object" in r.error for r in records):
        raise InputError(
            f'input.path={str(path)!r} is a JSON array with no object in it; it needs objects like {{"prompt": ...}}'
        )
    return records, True
