"""What happens to a generation row between the model and outputs.jsonl: a reasoning model's thinking is split
from its answer (`generation.reasoning`, `omnirun.reasoning`), and the answer is scored (`task.score`).

The run's summary of the scores is computed at the end from outputs.jsonl itself (`score_summary`), by the
scorer `task=score` uses: the figures are those a later `task=score` over the run directory gives, and a resumed
or multi-process run's summary covers every row, not only this process's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnirun import reasoning
from omnirun.choices import Reasoning
from omnirun.engine.base import Engine
from omnirun.plugins import Capability
from omnirun.results.schema import ResultRow
from omnirun.task_config import GenerateConfig, TaskConfig

log = logging.getLogger(__name__)


@dataclass
class RowFinish:
    """Applied to each generation row before it is written (`TaskContext.finish`)."""

    thinking: reasoning.Thinking | None = None
    mode: Reasoning = Reasoning.auto
    """generation.reasoning as asked (a server's separate thinking is kept unless `strip`)."""
    decode: Callable[[list[int]], str] | None = None
    """The tokenizer's decode, for the thinking's token count (None: not counted)."""
    scorer: Any = None
    """An `omnirun.scoring.Scorer` for `task.score` (None: rows are not scored)."""
    unscored: int = 0
    """Rows answered but not scored (no reference field, ...): each is logged once, then counted."""

    def __call__(self, row: ResultRow, prompt: str | None = None) -> ResultRow:
        """`row`, finished in place; `prompt` is the text the model continued (for a thinking block the chat
        template opened)."""
        if row.error is not None or row.output is None:
            return row
        if row.reasoning is not None:  # a server split it already (vLLM's reasoning parser)
            if self.mode == Reasoning.strip:
                row.reasoning = None
        elif self.thinking is not None:
            self.split(row, self.thinking, prompt)
        if self.scorer is not None:
            self.score(row)
        return row

    def split(self, row: ResultRow, thinking: reasoning.Thinking, prompt: str | None) -> None:
        assert row.output is not None
        opened = prompt is not None and prompt.rstrip().endswith(thinking.delimiter.open)
        part = reasoning.split(row.output, thinking.delimiter, opened)
        if part.reasoning is None:
            return
        row.output = part.answer
        if thinking.mode == Reasoning.split:
            row.reasoning = part.reasoning
        if row.token_ids and self.decode is not None:
            row.reasoning_tokens = reasoning.token_split(row.token_ids, self.decode, part.thinking_chars)

    def score(self, row: ResultRow) -> None:
        from omnirun.scoring.sources import SourceRow, with_carried

        scored = self.scorer.score(SourceRow(row.id, with_carried(row.to_json())))
        if scored.error is None:
            row.scores = scored.scores
            return
        self.unscored += 1
        if self.unscored == 1:
            log.warning("record %s is not scored: %s (later such rows are counted, not logged)", row.id, scored.error)


def row_finish(task: TaskConfig, mode: Reasoning, engine: Engine, needs: Capability | None, seed: int) -> RowFinish:
    """The run's finisher: the thinking delimiter resolved against the model's chat template (a generation
    task's model, loaded), and the scorer of `task.score`."""
    finish = RowFinish(mode=Reasoning(mode))
    if needs == Capability.generate:
        tokenizer = engine.tokenizer
        template = chat_template_text(engine)
        finish.thinking = reasoning.resolve(mode, template)
        decode = getattr(tokenizer, "decode", None)
        if finish.thinking is not None and callable(decode):
            finish.decode = lambda ids: str(decode(ids))
    options = scoring_of(task, seed)
    if options is not None:
        from omnirun.scoring import Scorer

        finish.scorer = Scorer(options)
    return finish


def chat_template_text(engine: Engine) -> str | None:
    """The model's chat template as written (a Transformers tokenizer's `chat_template`, a GGUF file's)."""
    if not engine.has_chat_template():
        return None
    tokenizer = engine.tokenizer
    for name in ("template_text", "chat_template"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, str):
            return value
    return None


def scoring_of(task: TaskConfig, seed: int) -> Any:
    """`task.score`'s ScoreOptions (None: the task scores nothing while generating)."""
    if not isinstance(task, GenerateConfig) or not task.score:
        return None
    return task.scoring(seed=seed).validate()


def score_summary(outputs: Path, options: Any) -> dict[str, Any]:
    """metrics.json's `scores`: the rows of `outputs` (a run's outputs.jsonl) scored as task=score scores them."""
    from omnirun.scoring import open_source, score_rows

    source = open_source(outputs, output_field=options.output_field)
    _, summary = score_rows(source.rows(keep=[options.reference_field, *options.group_by]), options)
    result: dict[str, Any] = summary.to_json()
    return result
