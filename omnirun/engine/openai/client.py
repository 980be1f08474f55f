"""HTTP to an OpenAI-compatible server: a streamed POST read as server-sent events, or a GET of JSON, each
within `task.timeout_s`; the failures a retry may cure (429, 408, 5xx, a refused or dropped connection, a
timeout) told from those it cannot; and the retry loop, with exponential backoff, jitter and `Retry-After`.

Standard library only (`http.client`): one connection per request. The API key is read from the environment
variable `model.api_key_env` when a request is made, sent as `Authorization: Bearer ...`, and never stored,
logged or put into a message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from omnirun.errors import OmnirunError

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_S = 0.5
"""The first retry waits about this long; each further one twice as long (with jitter), up to MAX_BACKOFF_S."""
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 120.0
"""A server's `Retry-After` is honoured up to this many seconds."""
RETRY_STATUS = frozenset({408, 409, 429})
"""Statuses besides 5xx that a later attempt may cure (request timeout, a conflict, rate limits)."""


class RequestFailed(OmnirunError):
    """A request failed for good (after its retries, or at once when a retry cannot help): its record's error.
    `status` is the HTTP status of the last answer (None: no answer, a timeout or a connection failure)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Retryable(Exception):
    """A failure that a later attempt may cure; `retry_after` is the server's `Retry-After`, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class StreamCut(Retryable):
    """The connection ended before the stream's `data: [DONE]`."""


@dataclass
class Endpoint:
    """The server at `model.endpoint` (a base URL such as http://localhost:8000/v1)."""

    url: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    """Each attempt's whole time: connect, first byte and the whole stream."""
    _open: set[http.client.HTTPConnection] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._base = parts.path.rstrip("/")

    def where(self, method: str, path: str) -> str:
        """How messages name a request: `model.endpoint=<url>: POST /chat/completions`."""
        return f"model.endpoint={self.url}: {method} {path}"

    def headers(self, streaming: bool) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if streaming else "application/json",
        }
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    # ---------------------------------------------------------------------------------------- requests
    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST `body` with `stream: true` and yield each event's JSON until `data: [DONE]`. Raises Retryable
        (StreamCut when the connection ends before [DONE]) or RequestFailed."""
        deadline = time.monotonic() + self.timeout_s
        conn, response = self._send("POST", path, json.dumps(body).encode(), deadline, streaming=True)
        try:
            for line in self._lines(conn, response, deadline, path):
                if not line.startswith(b"data:"):
                    continue  # comments (keep-alives), `event:` and `id:` fields, blank separators
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise RequestFailed(
                        f"{self.where('POST', path)}: the stream sent a line that is not JSON: {data[:200]!r}"
                    ) from None
                if isinstance(event, dict):
                    yield event
            raise StreamCut(f"{self.where('POST', path)}: the connection closed before the end of the stream")
        finally:
            self._close(conn)

    def get_json(self, path: str) -> Any:
        """GET `path` and parse its JSON answer."""
        return self.fetch_json("GET", path, None)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` (not streamed) and parse the JSON answer."""
        return self.fetch_json("POST", path, body)

    def fetch_json(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        deadline = time.monotonic() + self.timeout_s
        payload = None if body is None else json.dumps(body).encode()
        conn, response = self._send(method, path, payload, deadline, streaming=False)
        try:
            self._limit(conn, deadline, method, path)
            return json.loads(response.read())
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._transport(method, path, exc) from None
        except ValueError:
            raise RequestFailed(f"{self.where(method, path)}: the answer is not JSON") from None
        finally:
            self._close(conn)

    def close_all(self) -> None:
        """Close every open connection (their requests fail at once) and refuse new ones: a run that stops."""
        with self._lock:
            self._closed = True
            connections, self._open = list(self._open), set()
        for conn in connections:
            conn.close()

    # ----------------------------------------------------------------------------------------- helpers
    def _send(
        self, method: str, path: str, payload: bytes | None, deadline: float, *, streaming: bool
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connect()
        try:
            conn.request(method, self._base + path, body=payload, headers=self.headers(streaming))
            self._limit(conn, deadline, method, path)
            response = conn.getresponse()
            if response.status != 200:
                raise self._status_error(method, path, response)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self._close(conn)
            raise self._transport(method, path, exc) from None
        except BaseException:
            self._close(conn)
            raise
        return conn, response

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            context = ssl.create_default_context()
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s, context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        with self._lock:
            if self._closed:
                raise RequestFailed(f"model.endpoint={self.url}: the run is stopping; no new request is sent")
            self._open.add(conn)
        return conn

    def _close(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def _limit(self, conn: http.client.HTTPConnection, deadline: float, method: str, path: str) -> None:
        """Let the next socket read wait at most until `deadline`."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if conn.sock is not None:
            conn.sock.settimeout(left)

    def _lines(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float, path: str
    ) -> Iterator[bytes]:
        while True:
            try:
                self._limit(conn, deadline, "POST", path)
                line = response.readline()
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise self._transport("POST", path, exc) from None
            if not line:
                return
            yield line.rstrip(b"\r\n")

    def _transport(self, method: str, path: str, exc: BaseException) -> Exception:
        """A socket or protocol failure as Retryable (a timeout, a refused or dropped connection) or, for a
        certificate the client refuses, RequestFailed."""
        where = self.where(method, path)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return RequestFailed(f"{where}: the server's TLS certificate is refused: {exc.verify_message}")
        if isinstance(exc, TimeoutError | socket.timeout):
            return Retryable(f"{where}: no complete answer within task.timeout_s={self.timeout_s:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return Retryable(f"{where}: connection refused; is the server running there?")
        reason = str(exc) or type(exc).__name__
        return Retryable(f"{where}: the connection failed ({reason})")

    def _status_error(self, method: str, path: str, response: http.client.HTTPResponse) -> Exception:
        status, where = response.status, self.where(method, path)
        message = server_message(response)
        text = f"{where}: HTTP {status}" + (f": {message}" if message else "")
        if status in RETRY_STATUS or status >= 500:
            return Retryable(text, retry_after(response.getheader("Retry-After")), status)
        if status in (401, 403):
            state = "is set" if os.environ.get(self.api_key_env) else "is not set"
            return RequestFailed(
                f"{text}; the API key comes from the environment variable {self.api_key_env} "
                f"(model.api_key_env), which {state}",
                status,
            )
        if status == 404:
            return RequestFailed(
                f"{text}; model.endpoint should be the base URL ending in /v1, and model.name a model it serves",
                status,
            )
        return RequestFailed(text, status)


def server_message(response: http.client.HTTPResponse) -> str:
    """The error message in a failed response's body (OpenAI's `{error: {message}}`, FastAPI's `detail`), short."""
    try:
        raw = response.read(65536)
    except (OSError, http.client.HTTPException):
        return ""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip().splitlines()[0][:300] if raw.strip() else ""
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300] if error is not None else ""
    return str(body)[:300]


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (an HTTP date is not honoured: the backoff applies)."""
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


def backoff(attempt: int, server_says: float | None) -> float:
    """The wait before retry number `attempt + 1`: the server's `Retry-After`, else exponential with jitter."""
    if server_says is not None:
        return server_says
    ceiling = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def with_retries(attempt: Callable[[], T], retries: int, sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt()`, tried again up to `retries` times while it raises Retryable; then RequestFailed saying how
    many attempts were made. RequestFailed (a failure no retry cures) passes through at once."""
    for n in range(retries + 1):
        try:
            return attempt()
        except Retryable as exc:
            if n == retries:
                tries = "1 attempt" if n == 0 else f"{n + 1} attempts"
                raise RequestFailed(f"{exc} ({tries}; task.retries={retries})", exc.status) from None
            wait = backoff(n, exc.retry_after)
            log.info("%s; retrying in %.2f s (%d of %d)", exc, wait, n + 1, retries)
            sleep(wait)
    raise AssertionError("unreachable")
