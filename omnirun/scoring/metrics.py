"""The metrics `task=score` computes: one `MetricSpec` each in `METRICS`, looked up by name.

A row metric scores one output against its references (the best over several references, as SQuAD does), and
its summary value is the mean of the rows' scores. A corpus metric (`bleu`, `chrf`) is computed by sacrebleu
over the whole corpus from per-row sufficient statistics: its summary value is the corpus score (corpus BLEU is
not the mean of sentence BLEU), while each row shows its own sentence-level score (sacrebleu's
`sentence_bleu` / `sentence_chrf`) and keeps its statistics (`corpus_stats`) so a bootstrap or a comparison can
recompute the corpus score on any resample.

Scales: rates and F-measures are in [0, 1] (SQuAD's script prints 100 x these means); `bleu` and `chrf` are in
[0, 100] as sacrebleu reports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from omnirun.scoring.text import Normalize, contains_score, exact_match_score, f1_score, first_number

EXTRA = "score"
"""The pip extra that installs every metric library: `pip install 'omnirun[score]'`."""


@dataclass(frozen=True)
class RowContext:
    """What a row metric needs besides the texts (from the validated options)."""

    normalize: Normalize = Normalize.none
    tolerance: float = 0.0
    pattern: re.Pattern[str] | None = None
    schema: dict[str, Any] | None = None
    judge: Any = None
    """The `judge` metric's `omnirun.scoring.judge.Judge` (None: not asked for)."""


RowFn = Callable[[str, Sequence[str], RowContext], float]
"""(output, references, context) -> the row's score. Raises `RowProblem` when the row cannot be scored."""


class RowProblem(ValueError):
    """Why one row cannot be scored by a metric (a reference with no number, ...): the row's error."""


@dataclass(frozen=True)
class Corpus:
    """A corpus-level metric: per-row sufficient statistics summed, then scored."""

    row_stats: Callable[[str, Sequence[str]], list[float]]
    score: Callable[[Sequence[float]], float]
    """The corpus score from statistics summed over rows."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    row: RowFn
    """The per-row score (for a corpus metric: the sentence-level score shown in rows)."""
    needs_reference: bool = True
    library: str | None = None
    """The module it imports (None: the standard library); a missing one is reported with the `score` extra."""
    corpus: Callable[[], Corpus] | None = None
    """Builds the corpus-level scorer (None: a row metric, summarised by the mean)."""
    help: str = ""
    scale: float = 1.0
    """The top of the metric's range: 1 for rates and F-measures, 100 for sacrebleu's scores."""


def best(score: Callable[[str, str, Normalize], float]) -> RowFn:
    """A pairwise score as a row metric: the maximum over the references (SQuAD's metric_max_over_ground_truths)."""

    def row(output: str, references: Sequence[str], ctx: RowContext) -> float:
        return max(score(output, ref, ctx.normalize) for ref in references)

    return row


def numeric(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """1.0 when the output's first number is within `tolerance` (absolute) of a reference's first number."""
    value = first_number(output)
    results = []
    for ref in references:
        target = first_number(ref)
        if target is None:
            raise RowProblem(f"numeric: the reference {ref[:80]!r} has no number")
        results.append(value is not None and abs(value - target) <= ctx.tolerance + 1e-12 * max(1.0, abs(target)))
    return float(any(results))


def regex_match(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """1.0 when `task.pattern` matches somewhere in the output (re.search)."""
    assert ctx.pattern is not None, "validated by ScoreOptions"
    return float(ctx.pattern.search(output) is not None)


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when the whole text (surrounding whitespace aside) is strict JSON (RFC 8259: no NaN or
    Infinity, which Python's parser would take), else (False, None)."""
    try:
        return True, json.loads(text, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return False, None


def reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_valid(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """1.0 when the output parses as strict JSON."""
    return float(parse_json(output)[0])


def json_schema(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """1.0 when the output parses as JSON and is valid against `task.schema` (jsonschema, the schema's draft)."""
    assert ctx.schema is not None, "validated by ScoreOptions"
    ok, value = parse_json(output)
    return float(ok and schema_validator(json.dumps(ctx.schema, sort_keys=True)).is_valid(value))


@cache
def schema_validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


@cache
def rouge_scorer() -> Any:
    from rouge_score import rouge_scorer as rs

    detach_absl_stream()
    return rs.RougeScorer(["rougeL"], use_stemmer=False)


def detach_absl_stream() -> None:
    """rouge-score imports absl, whose log handler keeps the `sys.stderr` of the moment it was imported and closes
    that stream when logging is reconfigured (as each job of a Hydra sweep does) unless it is the process's own
    stderr. Point it at the process's stderr, which absl never closes."""
    import sys

    absl = sys.modules.get("absl.logging")
    handler = getattr(absl, "_absl_handler", None) if absl is not None else None
    python_handler = getattr(handler, "python_handler", None)
    if python_handler is not None and sys.__stderr__ is not None:
        python_handler.stream = sys.__stderr__


def rouge_l(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """ROUGE-L F-measure (Google's rouge-score, no stemming: its tokenizer lower-cases and keeps [a-z0-9]
    runs), the best over the references (`score_multi`)."""
    return float(rouge_scorer().score_multi(list(references), output)["rougeL"].fmeasure)


@cache
def sacrebleu_metric(name: str, sentence: bool) -> Any:
    """sacrebleu's BLEU / CHRF with its defaults (`13a` tokenisation, `exp` smoothing); the sentence-level BLEU
    uses effective order, as `sacrebleu.sentence_bleu` does."""
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU(effective_order=True) if sentence else BLEU()
    return CHRF()


def sacrebleu_stats(name: str) -> Callable[[str, Sequence[str]], list[float]]:
    def stats(output: str, references: Sequence[str]) -> list[float]:
        metric = sacrebleu_metric(name, sentence=False)
        return [float(x) for x in metric._extract_corpus_statistics([output], [[r] for r in references])[0]]

    return stats


def sacrebleu_corpus(name: str) -> Corpus:
    """Corpus BLEU / chrF from summed segment statistics, as sacrebleu's own corpus_score and paired bootstrap
    compute them (`_extract_corpus_statistics`, then `_compute_score_from_stats` of the sums)."""

    def score(summed: Sequence[float]) -> float:
        metric = sacrebleu_metric(name, sentence=False)
        return float(metric._compute_score_from_stats([round(x) for x in summed]).score)

    return Corpus(row_stats=sacrebleu_stats(name), score=score)


def sacrebleu_sentence(name: str) -> RowFn:
    def row(output: str, references: Sequence[str], ctx: RowContext) -> float:
        return float(sacrebleu_metric(name, sentence=True).sentence_score(output, list(references)).score)

    return row


def judged(output: str, references: Sequence[str], ctx: RowContext) -> float:
    """The judge model's score (`omnirun.scoring.judge`; the judgment is cached)."""
    assert ctx.judge is not None, "the judge metric needs task.judge"
    return float(ctx.judge.score(output, references))


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("exact_match", best(exact_match_score), help="output equals a reference (after task.normalize)"),
        MetricSpec("f1", best(f1_score), help="SQuAD token F1 against the best reference"),
        MetricSpec("contains", best(contains_score), help="a reference occurs in the output"),
        MetricSpec(
            "bleu",
            sacrebleu_sentence("bleu"),
            library="sacrebleu",
            corpus=lambda: sacrebleu_corpus("bleu"),
            help="corpus BLEU (sacrebleu); rows: sentence BLEU",
            scale=100.0,
        ),
        MetricSpec(
            "chrf",
            sacrebleu_sentence("chrf"),
            library="sacrebleu",
            corpus=lambda: sacrebleu_corpus("chrf"),
            help="corpus chrF (sacrebleu); rows: sentence chrF",
            scale=100.0,
        ),
        MetricSpec("rouge_l", rouge_l, library="rouge_score", help="ROUGE-L F-measure (rouge-score)"),
        MetricSpec("json_valid", json_valid, needs_reference=False, help="the output is JSON"),
        MetricSpec(
            "json_schema", json_schema, needs_reference=False, library="jsonschema", help="valid by task.schema"
        ),
        MetricSpec("regex_match", regex_match, needs_reference=False, help="task.pattern matches the output"),
        MetricSpec("numeric", numeric, help="first number within task.tolerance of the reference's"),
        MetricSpec("judge", judged, help="a judge model's score (task.judge.model, rubric and pattern)"),
    )
}

PIP_NAMES = {"sacrebleu": "sacrebleu", "rouge_score": "rouge-score", "jsonschema": "jsonschema"}


def missing_library(spec: MetricSpec) -> str | None:
    """A one-line problem when the metric's library is not installed, naming the extra that installs it."""
    if spec.library is None or importlib.util.find_spec(spec.library) is not None:
        return None
    pip_name = PIP_NAMES.get(spec.library, spec.library)
    return (
        f"task.metrics: metric {spec.name!r} needs the {pip_name!r} package, which is not installed; "
        f"install the score extra: pip install 'omnirun[{EXTRA}]'"
    )
