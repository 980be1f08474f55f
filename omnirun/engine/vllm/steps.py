"""Generation through vLLM's engine step by step: requests are added to `LLM.llm_engine`, and each `step()`
returns the requests that progressed, so every token's time is known. That gives each record its own time to
first token and token times (`Completion.ttft_s`, `token_times_s`), in a batch too, and a stream that yields text
as the engine produces it, on this thread.

Nothing here imports vllm: the engine and its `SamplingParams` are passed in."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from omnirun.engine.base import Completion

_IDS = itertools.count()


@dataclass
class Tracked:
    """One request in flight: its tokens so far and when each arrived (seconds from the call's start)."""

    prompt_tokens: int
    token_ids: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    prompt_logprobs: Any = None

    def update(self, output: Any, now: float) -> None:
        """Take a cumulative `RequestOutput`: new tokens get `now` as their time."""
        first = output.outputs[0]
        new = len(first.token_ids) - len(self.token_ids)
        self.times += [now] * max(new, 0)
        self.token_ids = list(first.token_ids)
        self.text = first.text
        if output.finished:
            self.finish_reason = finish(first.finish_reason)
            self.prompt_logprobs = output.prompt_logprobs

    def completion(self, e2e: float) -> Completion:
        return Completion(
            text=self.text,
            input_tokens=self.prompt_tokens,
            output_tokens=len(self.token_ids),
            finish_reason=self.finish_reason or "length",
            e2e_s=e2e,
            ttft_s=self.times[0] if self.times else None,
            token_times_s=list(self.times),
            token_ids=list(self.token_ids),
        )


def finish(reason: str | None) -> str:
    """omnirun's finish reason: `stop` (end-of-sequence or a stop string) or `length`."""
    return "length" if reason in (None, "length") else "stop"


def add(engine: Any, prompt: Any, params: Any, prompt_tokens: int) -> tuple[str, Tracked]:
    """Add one request to vLLM's engine; its id as the engine's outputs name it, and its tracker."""
    request_id = f"omnirun-{next(_IDS)}"
    engine.add_request(request_id, prompt, params)
    return request_id, Tracked(prompt_tokens)


def run(engine: Any, requests: list[tuple[Any, Any, int]]) -> list[Tracked]:
    """Every request (prompt, sampling params, prompt tokens) decoded together until all finish; in order."""
    start = time.perf_counter()
    tracked: dict[str, Tracked] = {}
    order: list[str] = []
    try:
        for prompt, params, n in requests:
            request_id, state = add(engine, prompt, params, n)
            tracked[request_id] = state
            order.append(request_id)
        pending = set(order)
        while pending:
            outputs = engine.step()
            now = time.perf_counter() - start
            for output in outputs:
                found = tracked.get(output.request_id)
                if found is None:
                    continue
                found.update(output, now)
                if output.finished:
                    pending.discard(output.request_id)
            if pending and not outputs and not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM's engine dropped {len(pending)} request(s) without finishing them")
    except BaseException:
        abort(engine, [r for r in order if tracked[r].finish_reason is None])
        raise
    return [tracked[r] for r in order]


def abort(engine: Any, request_ids: list[str]) -> None:
    """Stop requests still in flight (a Ctrl-C or a failed call), so that the next call starts clean."""
    if request_ids:
        engine.abort_request(request_ids)


def completions(engine: Any, requests: list[tuple[Any, Any, int]]) -> list[Completion]:
    """`run`, as completions sharing the call's end-to-end time (each with its own first-token time)."""
    start = time.perf_counter()
    done = run(engine, requests)
    e2e = time.perf_counter() - start
    return [state.completion(e2e) for state in done]


class VllmStream:
    """Iterate to get text pieces as the engine produces them; afterwards `completion` holds counts and timings.
    The request is added when iteration starts; leaving the loop early aborts it."""

    def __init__(self, engine: Any, prompt: Any, params: Any, prompt_tokens: int) -> None:
        self.engine, self.prompt, self.params, self.prompt_tokens = engine, prompt, params, prompt_tokens
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        request_id, state = add(self.engine, self.prompt, self.params, self.prompt_tokens)
        shown = ""
        try:
            while state.finish_reason is None:
                outputs = self.engine.step()
                now = time.perf_counter() - start
                for output in outputs:
                    if output.request_id == request_id:
                        state.update(output, now)
                if len(state.text) > len(shown) and state.text.startswith(shown):
                    piece, shown = state.text[len(shown) :], state.text
                    yield piece
                if not outputs and not self.engine.has_unfinished_requests() and state.finish_reason is None:
                    raise RuntimeError("vLLM's engine dropped the streamed request without finishing it")
        except BaseException:
            if state.finish_reason is None:
                abort(self.engine, [request_id])
            raise
        self.completion = state.completion(time.perf_counter() - start)


def argmax_from_prompt_logprobs(prompt_logprobs: Any, last: int) -> list[int]:
    """The greedy next token after every prefix of a prompt, from vLLM's `prompt_logprobs` (top-1 at each
    position after the first) and the greedy token generated after the whole prompt (`last`)."""
    out: list[int] = []
    for position in list(prompt_logprobs)[1:]:
        ranked: Callable[[Any], int] = lambda item: int(item[1].rank)  # noqa: E731
        out.append(int(min(position.items(), key=ranked)[0]))
    return [*out, last]
