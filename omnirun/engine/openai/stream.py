"""What comes back: a streamed response folded into a `Completion` (text, token times, usage, finish reason),
and the `StreamHandle` that yields its pieces as they arrive.

Times run from the start of the attempt that succeeded (time queued behind `task.concurrency` other requests
and failed attempts are not counted): `ttft_s` at the first event that carries generated text, one entry of
`token_times_s` per such event. Token counts are the server's `usage` (asked for with `stream_options`); a
server that reports none gets one output token per streamed piece (vLLM and SGLang send one token per event)
and the prompt's estimated size (characters / 4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from omnirun.engine.base import Completion
from omnirun.engine.openai.body import Request
from omnirun.engine.openai.client import Endpoint, RequestFailed, Retryable, StreamCut, backoff

log = logging.getLogger(__name__)

STOP_WORDS = frozenset({"stop", "eos", "eos_token", "stop_sequence"})
"""Finish reasons that mean the model ended its answer (TGI and others name it their way): `stop`."""


class Collector:
    """Folds the events of one streamed response into a Completion."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.chat = "messages" in request.body
        self.start = time.perf_counter()
        self.pieces: list[str] = []
        self.times: list[float] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.thoughts: list[str] = []
        """The thinking the server streamed apart from the answer (`reasoning_content` / `reasoning`)."""

    def feed(self, event: dict[str, Any]) -> str:
        """Take one event; returns the text it adds ('' when none). RequestFailed for an error event."""
        error = event.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RequestFailed(f"the server stopped the stream with an error: {str(message)[:300]}")
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        added = ""
        for choice in event.get("choices") or []:
            delta = (choice.get("delta") or {}) if self.chat else choice
            piece = delta.get("content") if self.chat else delta.get("text")
            piece = piece if isinstance(piece, str) else ""
            thinking = delta.get("reasoning_content") or delta.get("reasoning") if self.chat else None
            thought = isinstance(thinking, str) and bool(thinking)
            if thought:
                self.thoughts.append(str(thinking))
            if piece or thought:
                self.times.append(time.perf_counter() - self.start)
            added += piece
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        self.pieces.append(added)
        return added

    def completion(self) -> Completion:
        usage = self.usage or {}
        output = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        finish = "stop" if self.finish is None or self.finish in STOP_WORDS else self.finish
        details = usage.get("completion_tokens_details")
        thinking = details.get("reasoning_tokens") if isinstance(details, dict) else None
        return Completion(
            text="".join(self.pieces),
            input_tokens=prompt if isinstance(prompt, int) else self.request.estimate,
            output_tokens=output if isinstance(output, int) else len(self.times),
            finish_reason=finish,
            e2e_s=time.perf_counter() - self.start,
            ttft_s=self.times[0] if self.times else None,
            token_times_s=list(self.times),
            reasoning="".join(self.thoughts) if self.thoughts else None,
            reasoning_tokens=thinking if isinstance(thinking, int) else len(self.thoughts) if self.thoughts else None,
        )


def complete(endpoint: Endpoint, request: Request) -> Completion:
    """One attempt: send the request and read its whole stream (a stream cut after the finish reason counts as
    complete)."""
    collector = Collector(request)
    try:
        for event in endpoint.events(request.path, request.body):
            collector.feed(event)
    except StreamCut:
        if collector.finish is None:
            raise
    return collector.completion()


class ServerStream:
    """A `StreamHandle`: the pieces of one request as they arrive. A failure before the first piece is retried
    like any request; once pieces were handed out, a broken stream is the record's error (a retry would hand
    out the answer's start a second time)."""

    def __init__(self, endpoint: Endpoint, request: Request, retries: int) -> None:
        self.endpoint, self.request, self.retries = endpoint, request, retries
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        for n in range(self.retries + 1):
            collector = Collector(self.request)
            try:
                for event in self.endpoint.events(self.request.path, self.request.body):
                    piece = collector.feed(event)
                    if piece:
                        yield piece
            except StreamCut as exc:
                if collector.finish is None:
                    self._retry_or_fail(n, exc, collector)
                    continue
            except Retryable as exc:
                self._retry_or_fail(n, exc, collector)
                continue
            self.completion = collector.completion()
            return

    def _retry_or_fail(self, n: int, exc: Retryable, collector: Collector) -> None:
        if collector.times:
            raise RequestFailed(f"{exc}, after {len(collector.times)} streamed pieces (not retried)") from None
        if n == self.retries:
            tries = "1 attempt" if n == 0 else f"{n + 1} attempts"
            raise RequestFailed(f"{exc} ({tries}; task.retries={self.retries})", exc.status) from None
        wait = backoff(n, exc.retry_after)
        log.info("%s; retrying in %.2f s (%d of %d)", exc, wait, n + 1, self.retries)
        time.sleep(wait)
