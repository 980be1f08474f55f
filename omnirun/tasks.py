"""The tasks: turn records into outputs.jsonl rows with an engine.

- `generate`: one completion per record, `task.batch_size` records per `generate` call.
- `batch`: the same loop with `batch_size=auto` and prompts grouped by length (results still in input order).
- `chat`: records are conversations (a plain prompt becomes one user turn) rendered by the chat template.
- `stream`: one record at a time, pieces printed as they come, per-token timestamps recorded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from typing import Any, TextIO

from omnirun.config import GenerationConfig, TaskConfig, TemplateMode
from omnirun.engine.base import Completion, Engine
from omnirun.inputs import Record
from omnirun.outputs import ResultWriter

WINDOW_BATCHES = 8
"""Records are reordered by length within windows of this many batches, then written in input order."""


@dataclass
class TaskContext:
    task: TaskConfig
    generation: GenerationConfig
    seed: int
    batch_size: int
    writer: ResultWriter
    echo: bool = False
    """Print each answer to stdout (single-prompt runs)."""
    out: TextIO = sys.stdout


@dataclass
class Prepared:
    record: Record
    text: str = ""
    add_special_tokens: bool = True
    params: GenerationConfig | None = None
    n_tokens: int = 0
    error: str | None = None


def prepare(engine: Engine, records: list[Record], ctx: TaskContext, *, chat: bool) -> list[Prepared]:
    """Render each record to prompt text, resolve its generation params and check it fits the context."""
    max_context = getattr(engine, "max_context", None)
    prepared = []
    for record in records:
        item = Prepared(record, error=record.error)
        if item.error is None:
            try:
                item.params = ctx.generation.with_overrides(record.overrides, prefix="")
                item.text, item.add_special_tokens = render(engine, record, ctx.task, chat=chat)
                item.n_tokens = engine.count_tokens(item.text, item.add_special_tokens)
            except ValueError as exc:
                item.error = f"record {record.id}: {exc}"
        if item.error is None and max_context and item.n_tokens >= max_context:
            item.error = f"record {record.id}: prompt has {item.n_tokens} tokens; the model's context is {max_context}"
        prepared.append(item)
    return prepared


def render(engine: Engine, record: Record, task: TaskConfig, *, chat: bool) -> tuple[str, bool]:
    """Prompt text and whether the tokenizer should add special tokens (not for chat-templated text)."""
    messages = record.messages
    use_template = chat or messages is not None or task.chat_template == TemplateMode.always
    if not use_template and task.chat_template == TemplateMode.auto:
        use_template = engine.has_chat_template()
    if not use_template:
        return record.prompt or "", True
    if messages is None:
        messages = [{"role": "user", "content": record.prompt or ""}]
    if task.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": task.system_prompt}, *messages]
    return engine.render_chat(messages), False


def row(record: Record, completion: Completion | None, error: str | None) -> dict[str, Any]:
    """One outputs.jsonl line."""
    base: dict[str, Any] = {"id": record.id, **record.as_input()}
    if completion is None:
        return {
            **base,
            "output": None,
            "input_tokens": None,
            "output_tokens": None,
            "finish_reason": None,
            "ttft_ms": None,
            "tpot_ms": None,
            "e2e_ms": None,
            "error": error,
        }
    ttft = completion.ttft_s
    n = completion.output_tokens
    tpot = (completion.e2e_s - ttft) / (n - 1) * 1000 if ttft is not None and n > 1 else None
    return {
        **base,
        "output": completion.text,
        "input_tokens": completion.input_tokens,
        "output_tokens": n,
        "finish_reason": completion.finish_reason,
        "ttft_ms": ttft * 1000 if ttft is not None else None,
        "tpot_ms": tpot,
        "e2e_ms": completion.e2e_s * 1000,
        "error": None,
    }


def run_generate(engine: Engine, records: list[Record], ctx: TaskContext, progress: Any) -> None:
    run_batches(engine, prepare(engine, records, ctx, chat=False), ctx, progress)


def run_chat(engine: Engine, records: list[Record], ctx: TaskContext, progress: Any) -> None:
    run_batches(engine, prepare(engine, records, ctx, chat=True), ctx, progress)


def run_batches(engine: Engine, items: list[Prepared], ctx: TaskContext, progress: Any) -> None:
    """Generate in batches of `ctx.batch_size`; within a window, group equal params and similar lengths."""
    window = ctx.batch_size * WINDOW_BATCHES
    for start in range(0, len(items), window):
        chunk = items[start : start + window]
        done: dict[int, dict[str, Any]] = {}
        for item in chunk:
            if item.error is not None:
                done[item.record.index] = row(item.record, None, item.error)
        for batch in plan_batches([i for i in chunk if i.error is None], ctx.batch_size, ctx.task.sort_by_length):
            first = batch[0]
            assert first.params is not None
            completions = engine.generate(
                [i.text for i in batch],
                first.params,
                add_special_tokens=first.add_special_tokens,
                seed=ctx.seed + first.record.index,
            )
            for item, completion in zip(batch, completions, strict=True):
                done[item.record.index] = row(item.record, completion, None)
            progress.update(len(batch), sum(c.output_tokens for c in completions))
        for item in chunk:
            emit(ctx, done[item.record.index])
        progress.update(sum(1 for i in chunk if i.error is not None), 0)
        ctx.writer.flush()


def plan_batches(items: list[Prepared], size: int, sort: bool) -> Iterator[list[Prepared]]:
    """Batches of items that share generation params and special-token handling, shortest first if `sort`."""
    groups: dict[tuple[Any, ...], list[Prepared]] = {}
    for item in items:
        groups.setdefault((astuple(item.params), item.add_special_tokens), []).append(item)
    for group in groups.values():
        ordered = sorted(group, key=lambda i: i.n_tokens) if sort else group
        for i in range(0, len(ordered), size):
            yield ordered[i : i + size]


def run_stream(engine: Engine, records: list[Record], ctx: TaskContext, progress: Any) -> None:
    """One record at a time; each piece is printed as soon as it is decoded."""
    for item in prepare(engine, records, ctx, chat=False):
        if item.error is not None:
            ctx.writer.write(row(item.record, None, item.error))
            progress.update(1, 0)
            continue
        assert item.params is not None
        stream = engine.stream_tokens(
            item.text,
            item.params,
            add_special_tokens=item.add_special_tokens,
            seed=ctx.seed + item.record.index,
        )
        for piece in stream:
            ctx.out.write(piece)
            ctx.out.flush()
        ctx.out.write("\n")
        assert stream.completion is not None
        result = row(item.record, stream.completion, None)
        result["token_times_ms"] = [t * 1000 for t in stream.completion.token_times_s]
        ctx.writer.write(result)
        ctx.writer.flush()
        progress.update(1, stream.completion.output_tokens)


def emit(ctx: TaskContext, result: dict[str, Any]) -> None:
    ctx.writer.write(result)
    if ctx.echo:
        print(result["output"] if result["error"] is None else f"error: {result['error']}", file=ctx.out)


def run_interactive_chat(engine: Engine, ctx: TaskContext, stdin: TextIO | None = None) -> list[dict[str, str]]:
    """A conversation on the terminal: each answer streams, history is kept, every turn is written as a row.
    Ends on an empty line, `/exit` or end of input. Returns the conversation."""
    stdin = stdin or sys.stdin
    history: list[dict[str, str]] = []
    if ctx.task.system_prompt:
        history.append({"role": "system", "content": ctx.task.system_prompt})
    turn = 0
    interactive = stdin.isatty()
    while True:
        if interactive:
            ctx.out.write("you> ")
            ctx.out.flush()
        line = stdin.readline()
        text = line.strip()
        if not line or not text or text == "/exit":
            break
        history.append({"role": "user", "content": text})
        record = Record(turn, str(turn), messages=list(history))
        stream = engine.stream_tokens(
            engine.render_chat(history), ctx.generation, add_special_tokens=False, seed=ctx.seed + turn
        )
        ctx.out.write("assistant> ")
        for piece in stream:
            ctx.out.write(piece)
            ctx.out.flush()
        ctx.out.write("\n")
        assert stream.completion is not None
        history.append({"role": "assistant", "content": stream.completion.text})
        ctx.writer.write(row(record, stream.completion, None))
        ctx.writer.flush()
        turn += 1
    return history


TaskFn = Callable[[Engine, list[Record], TaskContext, Any], None]
TASKS: dict[str, TaskFn] = {
    "generate": run_generate,
    "batch": run_generate,
    "chat": run_chat,
    "stream": run_stream,
}
