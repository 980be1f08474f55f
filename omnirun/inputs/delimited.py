"""CSV and TSV record files (`input.path=x.csv`, `x.tsv`, plain or compressed): a header row, then one record per
row. Quoting is read strictly: a quoted value may span lines, but a quote that is never closed, or text right
after a closing quote, makes that row an error record, and reading goes on from the line after the row's first
line, so a stray quote costs one row instead of swallowing the rows after it into one prompt."""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs import compressed
from omnirun.inputs.compressed import BrokenStream, TooLong
from omnirun.inputs.jsonl import BOM, broken, object_record, plural, too_long
from omnirun.inputs.records import Record

if TYPE_CHECKING:
    from omnirun.inputs.records import InputSpec

DELIMITERS = {".csv": ",", ".tsv": "\t"}

Line = tuple[int, str]
"""A line's number (from 1) and its text."""


class RowTooLong(Exception):
    """A row (a quoted value spanning lines) runs over MAX_LINE_BYTES."""


def csv_records(
    path: Path, delimiter: str, cfg: InputConfig, base: GenerationConfig | None, spec: InputSpec | None = None
) -> Iterator[Record]:
    """One record per row under the header row, named by the line it starts on; the id defaults to that line
    number. A row with more or fewer fields than the header (a ragged row) or with broken quoting becomes an
    error record. Values are text, so only the prompt (`input.field` or `input.template`), the id
    (`input.id_field`) and a task's `spec` fields are read, not per-record generation parameters."""
    csv.field_size_limit(max(csv.field_size_limit(), compressed.MAX_LINE_BYTES))
    long_lines: dict[int, int] = {}
    header: list[str] | None = None
    n, lineno = 0, 1
    try:
        for first, values, problem, last in rows(text_lines(path, long_lines), delimiter):
            lineno = last
            long = long_lines.pop(first, None)
            record = None
            if long is not None:
                record = too_long(TooLong(long), f"line {first}", first, n)
            elif problem is not None and header is None:
                raise InputError(f"input.path={str(path)!r}: its header row (line {first}) is {problem}")
            elif problem is not None:
                record = Record(n, str(first), error=f"line {first}: {problem}")
            elif header is None and values:
                header = values if spec else check_header(path, values, cfg)
            elif values:
                record = csv_record(header or [], values, first, n, cfg, base, spec)
            if record is not None:
                n += 1
                yield record
            if cfg.limit is not None and n >= cfg.limit:
                return
    except BrokenStream as exc:
        yield broken(path, exc, lineno + 1, n, "row")
        n += 1
    if not n:
        raise InputError(f"input.path={str(path)!r} has no rows under a header; it needs a header and one row a line")


def rows(lines: Iterator[Line], delimiter: str) -> Iterator[tuple[int, list[str] | None, str | None, int]]:
    """(first line, values or None, problem or None, last line) per row. A row that is not CSV (strict quoting)
    or runs over the size limit is a problem, and the rows are read again from the line after its first."""
    back: deque[Line] = deque()
    while True:
        taken: list[Line] = []
        reader = csv.reader(feed(lines, back, taken), delimiter=delimiter, strict=True)
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, RowTooLong) as exc:
            back.extendleft(reversed(taken[1:]))
            yield taken[0][0], None, quoting_problem(exc, taken), taken[0][0]
            continue
        yield taken[0][0], values, None, taken[-1][0]


def feed(lines: Iterator[Line], back: deque[Line], taken: list[Line]) -> Iterator[str]:
    """Lines for one row's reader: those put back first, then the file's; each is noted in `taken`."""
    size = 0
    while True:
        line = back.popleft() if back else next(lines, None)
        if line is None:
            return
        taken.append(line)
        size += len(line[1])
        if size > compressed.MAX_LINE_BYTES:
            raise RowTooLong
        yield line[1]


def quoting_problem(exc: Exception, taken: list[Line]) -> str:
    if isinstance(exc, RowTooLong):
        return (
            f"a quoted value opened here is not closed within {compressed.MAX_LINE_BYTES:,} bytes; the rows after "
            'this line are read on their own (close the quote, or write a quote inside a value as "")'
        )
    span = f"lines {taken[0][0]}-{taken[-1][0]}" if len(taken) > 1 else f"line {taken[0][0]}"
    return (
        f"not readable CSV ({exc} in {span}): a quote in this row is not closed, or text follows a closing quote; "
        'the rows after this line are read on their own (write a quote inside a value as "")'
    )


def text_lines(path: Path, long_lines: dict[int, int]) -> Iterator[Line]:
    """The file's numbered lines as text for the csv module: invalid UTF-8 kept as lone surrogates (the row
    becomes an error record), a line over the limit replaced by a blank one and its size noted in `long_lines`."""
    for lineno, raw in enumerate(compressed.lines(path, keepends=True), start=1):
        if isinstance(raw, TooLong):
            long_lines[lineno] = raw.size
            yield lineno, "\n"
        else:
            yield lineno, (raw.removeprefix(BOM) if lineno == 1 else raw).decode("utf-8", "surrogateescape")


def check_header(path: Path, header: list[str], cfg: InputConfig) -> list[str]:
    """The header row; InputError when it lacks the prompt column (every row would fail the same way)."""
    if cfg.template is None and cfg.field not in header:
        raise InputError(
            f"input.field={cfg.field!r} is not a column of input.path={str(path)!r}; columns: {', '.join(header)} "
            "(set input.field or input.template)"
        )
    return header


def csv_record(
    header: list[str],
    values: list[str],
    lineno: int,
    index: int,
    cfg: InputConfig,
    base: GenerationConfig | None,
    spec: InputSpec | None = None,
) -> Record:
    where = f"line {lineno}"
    if len(values) != len(header):
        return Record(
            index,
            str(lineno),
            error=f"{where}: {plural(len(values), 'field')} where the header has {len(header)} "
            "(an unquoted delimiter in a value, or a missing one?)",
        )
    if not all(valid_utf8(v) for v in values):
        return Record(index, str(lineno), error=f"{where}: invalid UTF-8")
    row = dict(zip(header, values, strict=True))
    return object_record(row, where, str(lineno), index, cfg, base, spec=spec, text_only=True)


def valid_utf8(text: str) -> bool:
    """False for text holding bytes that were not UTF-8 (kept as lone surrogates by `text_lines`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
