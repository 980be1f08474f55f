"""generation.reasoning: a thinking model's output split into `reasoning` and `output` (omnirun.reasoning), the
finisher that applies it and `task.score` to each generated row (omnirun.tasks.finish), and a response_format
that starts after the thinking (omnirun.structured)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from omnirun import reasoning
from omnirun.choices import Reasoning
from omnirun.config import GenerationConfig
from omnirun.inputs import Record
from omnirun.reasoning import DELIMITERS, Delimiter, split
from omnirun.results.writer import ResultWriter
from omnirun.task_config import GenerateConfig
from omnirun.tasks.base import TaskContext
from omnirun.tasks.finish import RowFinish, score_summary
from omnirun.tasks.generate import run_generate

from unit.conftest import FakeEngine

THINK = DELIMITERS[0]
QWEN3_LIKE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<think>\n</think>"


@pytest.mark.parametrize(
    ("text", "opened", "answer", "thought"),
    [
        ("<think>why</think>\n\nParis", False, "Paris", "why"),
        ("  <think>\nwhy\n</think>Paris", False, "Paris", "why"),
        ("why</think>\n\nParis", True, "Paris", "why"),  # the template opened the block
        ("why</think>Paris", False, "Paris", "why"),  # a closing delimiter alone still ends the thinking
        ("<think>still thinking", False, "", "still thinking"),  # the budget ran out mid-thought
        ("still thinking", True, "", "still thinking"),
        ("Paris", False, "Paris", None),  # no thinking at all
        ("Paris <think>aside</think> more", False, "Paris <think>aside</think> more", None),  # not this layout
        ("<think></think>Paris", False, "Paris", ""),
    ],
)
def test_split_finds_the_thinking_and_the_answer(text: str, opened: bool, answer: str, thought: str | None) -> None:
    part = split(text, THINK, opened)
    assert (part.answer, part.reasoning) == (answer, thought)
    if thought is not None:
        assert part.thinking_chars <= len(text)
        assert text[part.thinking_chars :].strip() == answer


def test_each_family_delimiter_splits() -> None:
    for delim in DELIMITERS:
        part = split(f"{delim.open}a plan{delim.close} the answer", delim)
        assert (part.reasoning, part.answer) == ("a plan", "the answer")
    seed = Delimiter("<seed:think>", "</seed:think>")
    assert reasoning.delimiter_in("...<seed:think>...</seed:think>...") == seed  # not mistaken for <think>


def test_auto_splits_only_for_a_template_with_a_thinking_block() -> None:
    assert reasoning.resolve(Reasoning.auto, QWEN3_LIKE) == reasoning.Thinking(Reasoning.split, THINK)
    assert reasoning.resolve(Reasoning.auto, "{{ messages[0].content }}") is None
    assert reasoning.resolve(Reasoning.auto, None) is None
    assert reasoning.resolve(Reasoning.keep, QWEN3_LIKE) is None
    assert reasoning.resolve(Reasoning.strip, None) == reasoning.Thinking(Reasoning.strip, THINK)
    assert reasoning.format_after(Reasoning.auto, QWEN3_LIKE) == "</think>"
    assert reasoning.format_after(Reasoning.keep, QWEN3_LIKE) is None


def test_token_split_counts_the_tokens_the_thinking_took() -> None:
    pieces = ["<think>", "a", " plan", "</think>", " Paris"]
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    text = "".join(pieces)
    part = split(text, THINK)
    assert reasoning.token_split(list(range(len(pieces))), decode, part.thinking_chars) == 4


def run_rows(tmp_path: Path, prompts: list[str], finish: RowFinish, **carried: Any) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(tmp_path / "outputs.jsonl")
    ctx = TaskContext(GenerateConfig(sort_by_length=False), GenerationConfig(), 0, 2, writer)
    ctx.finish = finish
    records = [Record(i, str(i), prompt=p, carried=carried.get(str(i))) for i, p in enumerate(prompts)]
    run_generate(FakeEngine(), records, ctx, _Progress())  # type: ignore[arg-type]
    writer.close()
    return [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]


class _Progress:
    def update(self, samples: int, tokens: int) -> None:
        pass


def test_generated_rows_are_split_or_stripped(tmp_path: Path) -> None:
    """The fake engine upper-cases its prompt: Magistral's `[THINK]` survives that."""
    magistral = DELIMITERS[2]
    prompts = ["[THINK]why[/THINK] paris", "no thinking here"]
    out = run_rows(tmp_path, prompts, RowFinish(reasoning.Thinking(Reasoning.split, magistral)))
    assert (out[0]["output"], out[0]["reasoning"]) == ("PARIS", "WHY")
    assert out[1]["output"] == "NO THINKING HERE" and "reasoning" not in out[1]
    out = run_rows(tmp_path / "strip", prompts, RowFinish(reasoning.Thinking(Reasoning.strip, magistral)))
    assert out[0]["output"] == "PARIS" and "reasoning" not in out[0]


def test_carried_fields_and_live_scores_land_in_the_rows(tmp_path: Path) -> None:
    task = GenerateConfig(score=["exact_match", "contains"])
    from omnirun.scoring import Scorer

    finish = RowFinish(scorer=Scorer(task.scoring()))
    out = run_rows(
        tmp_path,
        ["paris", "rome", "oslo"],
        finish,
        **{"0": {"reference": "PARIS", "topic": "geo"}, "1": {"reference": ["x", "ROME"]}, "2": {"topic": "geo"}},
    )
    assert out[0]["fields"] == {"reference": "PARIS", "topic": "geo"}
    assert out[0]["scores"] == {"exact_match": 1.0, "contains": 1.0}
    assert out[1]["scores"] == {"exact_match": 1.0, "contains": 1.0}  # the best of the acceptable references
    assert "scores" not in out[2]  # no reference: not scored, and counted
    assert finish.unscored == 1
    summary = score_summary(tmp_path / "outputs.jsonl", task.scoring().validate())
    assert summary["scores"]["exact_match"]["mean"] == 1.0 and summary["scores"]["exact_match"]["n"] == 2
    assert (summary["rows"], summary["errors"]) == (3, 1)


def test_a_format_applies_after_the_thinking() -> None:
    """With a closing delimiter, any text may come first; after it, only what the format allows."""
    from omnirun.satisfiable import BYTE_EOS, byte_tokenizer
    from omnirun.structured import Grammars

    fmt = {"type": "regex", "pattern": "[0-9]{2}"}
    rows = Grammars(byte_tokenizer(), [BYTE_EOS]).rows([fmt, fmt], after="</think>")
    first = rows.masks([0], BYTE_EOS + 1)[0]
    assert first[ord("a")] and first[ord("<")]  # thinking is free
    for byte in b"let me see </think>\n":
        rows.advance(0, byte)
    allowed = rows.masks([0], BYTE_EOS + 1)[0]
    assert {i for i in range(256) if allowed[i]} == {*b"0123456789", *b" \t\r\n"}
    plain = Grammars(byte_tokenizer(), [BYTE_EOS]).rows([fmt])
    assert not plain.masks([0], BYTE_EOS + 1)[0][ord("a")]  # without thinking, the format starts at once


def test_a_servers_separate_thinking_is_kept_apart_and_counted() -> None:
    """vLLM with a reasoning parser streams `reasoning_content` apart from `content`: it becomes the row's
    `reasoning` (counted by the usage's reasoning_tokens), and `strip` drops it."""
    from omnirun.engine.openai.body import Request
    from omnirun.engine.openai.stream import Collector
    from omnirun.tasks.base import row

    collector = Collector(Request("/chat/completions", {"messages": []}, 3))
    for delta in ({"reasoning_content": "let me"}, {"reasoning_content": " think"}, {"content": "Paris"}):
        collector.feed({"choices": [{"delta": delta}]})
    usage = {"completion_tokens": 3, "prompt_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 2}}
    collector.feed({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": usage})
    completion = collector.completion()
    assert (completion.text, completion.reasoning, completion.reasoning_tokens) == ("Paris", "let me think", 2)
    assert len(completion.token_times_s) == 3  # thinking pieces are generated tokens too
    kept = RowFinish(mode=Reasoning.auto)(row(Record(0, "0", prompt="q"), completion, None))
    assert (kept.output, kept.reasoning, kept.reasoning_tokens) == ("Paris", "let me think", 2)
    stripped = RowFinish(mode=Reasoning.strip)(row(Record(0, "0", prompt="q"), completion, None))
    assert (stripped.output, stripped.reasoning) == ("Paris", None)
