"""`chat` with no input: a conversation on the terminal, each answer streamed, every turn a row."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from omnirun.engine.base import Engine
from omnirun.inputs import Record
from omnirun.results.schema import ResultRow
from omnirun.tasks.base import TaskContext, record_error, row

log = logging.getLogger(__name__)


def run_interactive_chat(engine: Engine, ctx: TaskContext, stdin: TextIO | None = None) -> list[dict[str, str]]:
    """A conversation on the terminal: each answer streams, history is kept, every turn is written as a row.
    Ends on an empty line, `/exit` or end of input. A turn that fails (undecodable input, a template error)
    is reported and written as an error row; the conversation goes on without it. Returns the conversation."""
    stdin = stdin or sys.stdin
    history: list[dict[str, str]] = []
    if ctx.task.system_prompt:
        history.append({"role": "system", "content": ctx.task.system_prompt})
    turn = bad = 0
    while True:
        line = read_turn(stdin, ctx.out)
        if line is None:
            bad += 1
            if bad >= 3:  # the stream itself is broken: stop rather than spin
                break
            continue
        bad = 0
        text = line.strip()
        if not line or not text or text == "/exit":
            break
        record = Record(turn, str(turn), messages=[*history, {"role": "user", "content": text}])
        result = answer(engine, record, ctx, seed=ctx.seed + turn)
        if result.error is None:
            history = [*(record.messages or []), {"role": "assistant", "content": result.output or ""}]
        else:
            print(f"error: {result.error}", file=ctx.out)
        ctx.writer.write(result)
        ctx.writer.flush()
        turn += 1
    return history


def read_turn(stdin: TextIO, out: TextIO) -> str | None:
    """The next line typed ("" at the end of input), or None when it is not valid UTF-8 (the person is asked
    again). Lines are read as bytes and decoded one at a time, so one bad line cannot spoil the others."""
    if stdin.isatty():
        out.write("you> ")
        out.flush()
    raw = getattr(stdin, "buffer", None)
    try:
        if raw is None:  # a text stream with no bytes underneath (a StringIO)
            line = stdin.readline()
            line.encode("utf-8")
            return line
        return bytes(raw.readline()).decode("utf-8")
    except UnicodeError as exc:
        reason = getattr(exc, "reason", str(exc))
        print(f"error: that line is not valid UTF-8 ({reason}); type it again", file=out)
        return None


def answer(engine: Engine, record: Record, ctx: TaskContext, seed: int) -> ResultRow:
    """Stream the assistant's answer to `record`'s conversation."""
    assert record.messages is not None
    ctx.out.write("assistant> ")
    prompt: str | None = None
    try:
        prompt = engine.render_chat(record.messages)
        stream = engine.stream_tokens(prompt, ctx.generation, add_special_tokens=False, seed=seed)
        for piece in stream:
            ctx.out.write(piece)
            ctx.out.flush()
    except Exception as exc:
        return row(record, None, record_error(record, exc))
    finally:
        ctx.out.write("\n")
    assert stream.completion is not None
    return ctx.finish(row(record, stream.completion, None), prompt)
