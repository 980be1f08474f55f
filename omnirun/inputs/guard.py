"""A run reads its input more than once (a first pass counts the records and finds the problems; the run reads
them again window by window), and each later read is checked against the first, so a file changed, truncated
or replaced while the run reads it stops the run instead of ending `completed` with other records than the
first pass counted (and the manifest fingerprints):

- the record count and a rolling hash of the records (sha256 over each record's id, fields and error, in
  order) must match the first pass's when a later read reaches its last record, and a later read that ends
  sooner is a mismatch;
- for a file, its size, modification time and inode are compared with the first read's before each record (a
  change there with the same sha256 is a `touch`, and reading goes on), so a change is caught where it happens.

A mismatch raises `InputChanged` (exit status 1): the rows written before it are kept, metrics.json says
`failed`, and once the input is restored `resume=<run dir>` continues the run."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omnirun.errors import OmnirunError
from omnirun.inputs.records import Record

Opener = Callable[[], Iterator[Record]]


class InputChanged(OmnirunError):
    """The input is not what the run's first read of it was (edited, truncated, replaced or removed)."""


class Guard:
    """The first read's count, rolling hash and file state, against which later reads are checked."""

    def __init__(self, opener: Opener, what: str, path: Path | None, sha256: Callable[[Path], str] | None) -> None:
        self.opener, self.what, self.path, self.sha256 = opener, what, path, sha256
        self.started = False
        self.first: Any = hashlib.sha256()  # the first read's rolling hash
        self.count = 0
        self.digest: bytes | None = None
        self.state: tuple[int, int, int] | None = None
        self.file_sha: str | None = None

    def open(self) -> Iterator[Record]:
        """The records; the first call is the first read, every later one is checked against it."""
        if not self.started:
            self.started = True
            self.state = self.stat()
            return self.read_first()
        if self.digest is None:
            self.digest = self.first.digest()
        return self.read_again()

    def read_first(self) -> Iterator[Record]:
        for record in self.opener():
            feed(self.first, record)
            self.count += 1
            yield record

    def read_again(self) -> Iterator[Record]:
        self.check_file()
        rolling, n = hashlib.sha256(), 0
        for record in self.opener():
            self.check_file()
            feed(rolling, record)
            n += 1
            if n == self.count and rolling.digest() != self.digest:
                raise self.changed(f"its first {n} records differ from those of the first read")
            yield record
        if n < self.count:
            raise self.changed(f"it now ends after {n} records, and the first read had {self.count}")

    def stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise self.changed(f"it cannot be read any more ({exc.strerror or exc})") from None
        return st.st_size, st.st_mtime_ns, st.st_ino

    def check_file(self) -> None:
        """A file whose size, time or inode differ from the first read's: the same bytes (a `touch`) read on;
        other bytes stop the run."""
        now = self.stat()
        if now == self.state or self.path is None or self.state is None:
            return
        touched = self.sha256 is not None and self.file_sha is not None and now is not None
        if touched and self.sha256 is not None and self.sha256(self.path) == self.file_sha:
            self.state = now  # the same bytes: a `touch`
            return
        size = f"{self.state[0]:,} bytes then, {now[0]:,} now" if now is not None else "removed"
        raise self.changed(f"the file was modified during the run ({size})")

    def expect_sha256(self, digest: str) -> None:
        """The sha256 the caller computed right after the first read (the input's fingerprint)."""
        self.file_sha = digest

    def changed(self, how: str) -> InputChanged:
        return InputChanged(
            f"{self.what} changed while the run was reading it: {how}; a run reads its input twice (a first pass, "
            "then the records as they run) and both must be the same input"
        )


def guarded(opener: Opener, what: str, path: Path | None = None, sha256: Callable[[Path], str] | None = None) -> Guard:
    """A `Guard` over `opener`; pass `guard.open` where an opener is wanted. `what` names the key and value
    (`input.path='x.jsonl'`); `path`: the file to watch; `sha256`: how to hash it (a touched file is not a
    changed one)."""
    return Guard(opener, what, path, sha256)


def feed(hasher: Any, record: Record) -> None:
    """Add one record to a rolling hash: its id, text, conversation, fields, overrides and error."""
    parts = (record.id, record.prompt, record.messages, record.overrides, record.template, record.error, record.url)
    hasher.update(repr(parts).encode("utf-8", "surrogatepass"))
    for name in sorted(record.fields):
        value = record.fields[name]
        hasher.update(name.encode("utf-8", "surrogatepass"))
        feed_value(hasher, value)


def feed_value(hasher: Any, value: Any) -> None:
    """Bytes (an image or audio file's content) as they are; anything else by its repr."""
    if isinstance(value, bytes | bytearray):
        hasher.update(bytes(value))
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            hasher.update(repr(key).encode("utf-8", "surrogatepass"))
            feed_value(hasher, value[key])
    else:
        hasher.update(repr(value).encode("utf-8", "surrogatepass"))
