"""Appending result rows to outputs.jsonl, window by window, each window in one write followed by fsync."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omnirun.errors import OmnirunError
from omnirun.results.schema import ResultRow
from omnirun.secrets import redact, secret_values


class ResultWriter:
    """Appends one JSON line per finished record. Rows are held until `flush()`, which writes them in one call
    and fsyncs, so a killed run leaves whole windows (plus at most one torn line, which resume drops)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("ab")
        self._pending: list[bytes] = []
        self._secrets = bool(secret_values())
        self.rows: list[ResultRow] = []

    def write(self, row: ResultRow) -> None:
        line = encode(row.to_json())
        if self._secrets:
            line = redact(line.decode("utf-8")).encode("utf-8")
        self._pending.append(line)
        self.rows.append(row)

    def flush(self) -> None:
        """Write the pending rows in one call and fsync; a failing disk is one line that keeps what was written."""
        try:
            if self._pending:
                self._file.write(b"".join(self._pending))
                self._pending.clear()
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise OmnirunError(
                f"cannot write {self.path}: {exc.strerror or exc}; the records written before are kept "
                "(free space, then resume=<run dir>)"
            ) from exc

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON line as UTF-8; text that UTF-8 cannot hold (a lone surrogate) is written as a JSON escape."""
    try:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, ensure_ascii=True) + "\n").encode("ascii")


def read_rows(path: Path) -> list[ResultRow]:
    """The rows of an outputs.jsonl file (complete lines only)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            rows.append(ResultRow.from_json(json.loads(line)))
    return rows
