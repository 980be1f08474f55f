"""Input files as a stream: decompressed on the fly (gzip, bz2, xz, zstd) and cut into lines, or, for a JSON
array, into its elements.

The compression is told by the file's first bytes (its magic number), not its name, so `data.jsonl` that is
really gzip, or `data.jsonl.gz` that is really plain text, still reads; the name only says which data format is
inside (`x.jsonl.gz` holds JSONL). A stream that breaks part-way (a truncated download, a corrupt block) raises
`BrokenStream` after the lines before the break, so callers keep what could be read."""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zstandard

CHUNK = 1 << 16
"""Bytes read from the file at a time."""

MAX_LINE_BYTES = 64 << 20
"""A longer line is not held in memory: it becomes `TooLong` (an error record), and reading goes on."""

MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
SUFFIX_OF = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst"}


class Decompressor(Protocol):
    """What zlib, bz2, lzma and zstandard decompression objects have in common."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


DECOMPRESSORS: dict[str, Callable[[], Decompressor]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31),  # 31: a gzip header and trailer (CRC and length are checked)
    "bz2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
    "zstd": lambda: zstandard.ZstdDecompressor().decompressobj(),
}

DECOMPRESSION_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)


class BrokenStream(Exception):
    """The file stops being readable part-way: a truncated or corrupt compressed stream, or a read error.
    The message says which, in a few words, without the file name (the caller names the file and the key)."""


class TruncatedStream(BrokenStream):
    """The compressed data ends before its stream does."""


@dataclass(frozen=True)
class TooLong:
    """A line longer than MAX_LINE_BYTES, in place of its bytes."""

    size: int


def compression_of(path: Path) -> str | None:
    """The file's compression (`gzip`, `bz2`, `xz`, `zstd`) as its first bytes announce it, or None for plain
    data. When the name does not say so too, the first chunk must really decompress: a plain file whose first
    line merely starts with a magic number (junk, or text such as `BZh...`) stays plain."""
    with path.open("rb") as f:
        start = f.read(8)
    kind = next((kind for magic, kind in MAGIC.items() if start.startswith(magic)), None)
    if kind is None or compression_named(path.name) == kind:
        return kind
    return kind if decompresses(path, kind) else None


def decompresses(path: Path, kind: str) -> bool:
    """Whether the file's first chunk decompresses as `kind` without an error: to the end of the file, or,
    when the file is longer, to where the chunk ends."""
    with path.open("rb") as f:
        data, more = f.read(CHUNK), bool(f.read(1))
    try:
        for _ in decompress([data], kind):
            pass
    except TruncatedStream:
        return more
    except BrokenStream:
        return False
    return True


def is_parquet(path: Path) -> bool:
    """Whether the file is parquet: its first and last four bytes are both `PAR1`."""
    with path.open("rb") as f:
        start = f.read(4)
        if f.seek(0, 2) < 8:
            return False
        f.seek(-4, 2)
        return start == f.read(4) == b"PAR1"


def compression_named(name: str) -> str | None:
    """The compression a file name's last suffix claims (`x.jsonl.gz`: gzip), or None."""
    return SUFFIXES.get(Path(name).suffix.lower())


def data_suffix(name: str) -> str:
    """The data format's suffix under any compression suffix, lower case: `X.JSONL.GZ` -> `.jsonl`; '' if none."""
    path = Path(name)
    if compression_named(path.name):
        path = path.with_suffix("")
    return path.suffix.lower()


def true_name(path: Path) -> str:
    """The file's name with its compression suffix made to match its content: `a.jsonl` holding gzip ->
    `a.jsonl.gz`, `a.jsonl.gz` holding plain text -> `a.jsonl` (for readers that go by the name)."""
    stem = path.with_suffix("").name if compression_named(path.name) else path.name
    kind = compression_of(path)
    return stem + (SUFFIX_OF[kind] if kind else "")


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes as stored (compressed or not): the input's content fingerprint."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def iter_chunks(path: Path) -> Iterator[bytes]:
    """The file's data, decompressed when its first bytes say so, in chunks; raises BrokenStream at a break."""
    kind = compression_of(path)
    with path.open("rb") as f:
        raw = read_chunks(f.read)
        yield from (raw if kind is None else decompress(raw, kind))


def read_chunks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """CHUNK-sized reads until the end; a read error (a disk or network file system failing) is a break."""
    while True:
        try:
            data = read(CHUNK)
        except OSError as exc:
            raise BrokenStream(f"read error ({exc.strerror or exc})") from exc
        if not data:
            return
        yield data


def decompress(raw: Iterable[bytes], kind: str) -> Iterator[bytes]:
    """Decompressed chunks of `raw`. Several streams one after another (gzip members, zstd frames, as `cat`
    and parallel compressors write them) are read in turn; zero bytes of padding after the last are ignored.
    A stream cut short or corrupt raises BrokenStream after the data before it."""
    new = DECOMPRESSORS[kind]
    decoder = new()
    try:
        for data in raw:
            while data:
                if decoder.eof:
                    if not data.strip(b"\0"):
                        break
                    decoder = new()
                out = decoder.decompress(data)
                if out:
                    yield out
                data = decoder.unused_data if decoder.eof else b""
    except DECOMPRESSION_ERRORS as exc:
        raise BrokenStream(f"corrupt {kind} data ({exc})") from exc
    if not decoder.eof:
        raise TruncatedStream(f"the {kind} stream ends early (a truncated file or an interrupted download)")


def head(path: Path, size: int = 4096) -> bytes:
    """About the first `size` bytes of the (decompressed) data, fewer when the data or the stream ends sooner."""
    out = b""
    try:
        for chunk in iter_chunks(path):
            out += chunk
            if len(out) >= size:
                break
    except BrokenStream:
        pass
    return out


def read_all(path: Path) -> tuple[bytes, BrokenStream | None]:
    """The whole (decompressed) data, for a format that cannot be read a line at a time (a JSON array), and
    the break that ended it early, if any."""
    chunks: list[bytes] = []
    try:
        chunks.extend(iter_chunks(path))
    except BrokenStream as exc:
        return b"".join(chunks), exc
    return b"".join(chunks), None


def lines(path: Path, keepends: bool = False) -> Iterator[bytes | TooLong]:
    """The file's lines, split where bytes.splitlines splits (\\n, \\r\\n, \\r), so line numbers match a plain
    read; a line over MAX_LINE_BYTES comes as TooLong. Raises BrokenStream after the last whole line before
    a break (the cut line is dropped: it is incomplete)."""
    return split_lines(whole_line_endings(iter_chunks(path)), keepends)


def whole_line_endings(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks re-cut so that none ends between the \\r and the \\n of a \\r\\n."""
    carry = b""
    for chunk in chunks:
        chunk = carry + chunk
        carry = b"\r" if chunk.endswith(b"\r") else b""
        if carry:
            chunk = chunk[:-1]
        if chunk:
            yield chunk
    if carry:
        yield carry


def split_lines(chunks: Iterable[bytes], keepends: bool) -> Iterator[bytes | TooLong]:
    """Lines from chunks; a line's pieces are kept in a list (no quadratic joining), dropped past the limit."""
    limit = MAX_LINE_BYTES
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        for part in chunk.splitlines(keepends=True):
            size += len(part)
            if size <= limit:
                pending.append(part)
            if part.endswith((b"\n", b"\r")):
                yield TooLong(size) if size > limit else finish(pending, keepends)
                pending, size = [], 0
    if size:
        yield TooLong(size) if size > limit else finish(pending, keepends)


def finish(pieces: list[bytes], keepends: bool) -> bytes:
    line = b"".join(pieces)
    return line if keepends else line.rstrip(b"\r\n")


# JSON arrays: elements one by one, so the good ones before a syntax error are kept


class ArrayError(Exception):
    """Element `number` (starting on `line`) cannot be parsed, so neither can the rest of the array."""

    def __init__(self, number: int, line: int, message: str) -> None:
        super().__init__(f"element {number} (line {line}): {message}")
        self.number, self.line = number, line


class NotAnArray(Exception):
    """The text goes on after the array closes: JSONL whose first line is an array."""


SPACE = re.compile(r"[ \t\n\r]*")


def skip_space(text: str, pos: int) -> int:
    """The position of the first character at or after `pos` that is not JSON whitespace."""
    match = SPACE.match(text, pos)
    return match.end() if match else pos


def iter_array(text: str) -> Iterator[tuple[int, int, Any]]:
    """(element number from 1, line it starts on, value) for each element of the JSON array `text`; raises
    ArrayError where an element or separator cannot be parsed, NotAnArray when text follows the array."""
    decoder = json.JSONDecoder()
    pos = skip_space(text, skip_space(text, 0) + 1)  # past '['
    number, line, counted = 0, 1, 0
    while not text.startswith("]", pos):
        number += 1
        line, counted = line + text.count("\n", counted, pos), pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            raise ArrayError(number, line, message) from None
        except (ValueError, RecursionError) as exc:
            raise ArrayError(number, line, f"not readable JSON ({type(exc).__name__}: {exc})"[:300]) from None
        yield number, line, value
        pos = skip_space(text, pos)
        if text.startswith(",", pos):
            pos = skip_space(text, pos + 1)
        elif not text.startswith("]", pos):
            raise ArrayError(number + 1, line, f"expected ',' or ']' after element {number}")
    if text[pos + 1 :].strip(" \t\n\r"):
        raise NotAnArray
