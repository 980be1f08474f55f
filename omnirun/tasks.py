"""The tasks: turn records into outputs.jsonl rows with an engine.

- `generate`: one completion per record, `task.batch_size` records per `generate` call.
- `batch`: the same loop with `batch_size=auto` and prompts grouped by length (results still in input order).
- `chat`: records are conversations (a plain prompt becomes one user turn) rendered by the chat template.
- `stream`: one record at a time, pieces printed as they come, per-token timestamps recorded.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from typing import Any, TextIO

from omnirun.config import GenerationConfig, TaskConfig, TemplateMode
from omnirun.engine.base import Completion, Engine
from omnirun.inputs import Record
from omnirun.outputs import ResultWriter

log = logging.getLogger(__name__)

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
    if record.template is not None and messages is None and not chat:
        use_template = record.template
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
    start = 0
    while start < len(items):
        chunk = items[start : start + ctx.batch_size * WINDOW_BATCHES]  # batch_size may shrink after an OOM
        start += len(chunk)
        done: dict[int, dict[str, Any]] = {}
        for item in chunk:
            if item.error is not None:
                done[item.record.index] = row(item.record, None, item.error)
        runnable = [i for i in chunk if i.error is None]
        for batch in plan_batches(runnable, lambda: ctx.batch_size, ctx.task.sort_by_length):
            results, _ = generate_or_split(engine, batch, ctx)
            for item, completion, error in results:
                done[item.record.index] = row(item.record, completion, error)
            progress.update(len(batch), sum(c.output_tokens for _, c, _ in results if c is not None))
        for item in chunk:
            emit(ctx, done[item.record.index])
        progress.update(sum(1 for i in chunk if i.error is not None), 0)
        ctx.writer.flush()


Result = tuple[Prepared, Completion | None, str | None]


def generate_or_split(
    engine: Engine, batch: list[Prepared], ctx: TaskContext, top: bool = True
) -> tuple[list[Result], int]:
    """Generate a batch; if it runs out of memory, split it in halves and retry each. Returns the results and
    the largest batch size that worked (0 if none); after an OOM, `ctx.batch_size` drops to that size for the
    rest of the run. A single record that fails even alone gets an error line."""
    first = batch[0]
    assert first.params is not None
    try:
        completions = engine.generate(
            [i.text for i in batch],
            first.params,
            add_special_tokens=first.add_special_tokens,
            seed=ctx.seed + first.record.index,
        )
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_memory()
        if len(batch) == 1:
            return [(first, None, f"record {first.record.id}: out of memory even alone ({first_line(exc)})")], 0
        half = len(batch) // 2
        left, ok_left = generate_or_split(engine, batch[:half], ctx, top=False)
        right, ok_right = generate_or_split(engine, batch[half:], ctx, top=False)
        worked = max(ok_left, ok_right)
        if top and 0 < worked < ctx.batch_size:
            log.warning("out of memory at batch size %d; continuing with %d", len(batch), worked)
            ctx.batch_size = worked
        return left + right, worked
    return [(item, c, None) for item, c in zip(batch, completions, strict=True)], len(batch)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, Python's MemoryError, or a CPU allocator failure."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def plan_batches(items: list[Prepared], size: Callable[[], int], sort: bool) -> Iterator[list[Prepared]]:
    """Batches of items that share generation params and special-token handling, shortest first if `sort`.
    `size()` is asked before each batch, so a batch size lowered after an OOM applies at once."""
    groups: dict[tuple[Any, ...], list[Prepared]] = {}
    for item in items:
        groups.setdefault((astuple(item.params), item.add_special_tokens), []).append(item)
    for group in groups.values():
        ordered = sorted(group, key=lambda i: i.n_tokens) if sort else group
        i = 0
        while i < len(ordered):
            n = size()
            yield ordered[i : i + n]
            i += n


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
