"""Two output runs over the same input, record by record: how often the outputs are identical and, where they
differ, how much they share and where they part. What to run after changing dtype, batch size, backend or
quantization.

Definitions (also in `DEFINITIONS`, written into every comparison, and in the README):
- Records are matched by `id`. A record that is an error line in either run is counted apart (an error in the
  baseline only, in the candidate only, in both), and so is an id present in one run only; the rates below
  are over the records that succeeded in both runs.
- exact match: the two `output` strings are identical, character for character.
- tokens: outputs.jsonl holds text, not token ids, so outputs are compared as word tokens: each run of
  letters, digits and underscores is one token, each other non-space character is one token, and whitespace
  is dropped (`re.findall(r"\\w+|[^\\w\\s]", text)`). Outputs that differ in whitespace only have the same
  tokens (they count as not exact, with agreement 1.0).
- first difference: the index (from 0) of the first token at which the two outputs differ, or the shorter
  output's length when one is a prefix of the other; none when the tokens are the same.
- prefix agreement: first difference / tokens in the longer output (1.0 when the tokens are the same).
- token agreement: 2·M / (baseline tokens + candidate tokens), M being the tokens in the matching blocks that
  Python's `difflib.SequenceMatcher` finds (its `ratio()`, without the junk heuristic): 1.0 for the same
  tokens, 0.0 for nothing in common. Unlike the prefix, text the outputs share after parting still counts.
"""

from __future__ import annotations

import difflib
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from omnirun.results.schema import ResultRow

TOKEN = re.compile(r"\w+|[^\w\s]")
EXCERPT_TOKENS_BEFORE = 3
EXCERPT_CHARS = 80
DEFINITIONS = {
    "records": "matched by id; error lines and ids present in one run only are counted apart",
    "exact_rate": "share of records whose output strings are identical",
    "tokens": "word tokens: runs of letters, digits and _ (\\w+), and each other non-space character; "
    "whitespace dropped",
    "first_difference": "index of the first differing token (the shorter length when one is a prefix of the "
    "other); null when the tokens are the same",
    "prefix": "first difference / tokens in the longer output (1.0 when the tokens are the same)",
    "agreement": "2*M / (baseline tokens + candidate tokens), M = tokens in difflib.SequenceMatcher's matching "
    "blocks (no junk heuristic)",
}


@dataclass
class RecordDiff:
    """One record present and successful in both runs."""

    id: str
    exact: bool
    agreement: float
    prefix: float
    first_difference: int | None
    baseline_tokens: int
    candidate_tokens: int
    baseline: str = ""
    """The baseline's output from a few tokens before the first difference (at most 80 characters)."""
    candidate: str = ""
    """The candidate's output from the same token on."""


@dataclass
class OutputComparison:
    """Two runs' outputs.jsonl compared record by record (see the module's definitions)."""

    job: str
    records: list[RecordDiff]
    """The records that succeeded in both runs, in the baseline's order."""
    errors_baseline: list[str] = field(default_factory=list)
    """Ids of records that are error lines in the baseline only."""
    errors_candidate: list[str] = field(default_factory=list)
    errors_both: list[str] = field(default_factory=list)
    only_baseline: list[str] = field(default_factory=list)
    """Ids present in the baseline only."""
    only_candidate: list[str] = field(default_factory=list)

    @property
    def exact(self) -> int:
        return sum(r.exact for r in self.records)

    @property
    def exact_rate(self) -> float | None:
        return self.exact / len(self.records) if self.records else None

    @property
    def agreement(self) -> float | None:
        return statistics.fmean(r.agreement for r in self.records) if self.records else None

    @property
    def prefix(self) -> float | None:
        return statistics.fmean(r.prefix for r in self.records) if self.records else None

    def worst(self, n: int) -> list[RecordDiff]:
        """The `n` differing records that agree least (lowest token agreement, then earliest difference)."""
        differing = [r for r in self.records if not r.exact]
        return sorted(differing, key=lambda r: (r.agreement, r.prefix))[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "compared": len(self.records),
            "exact": self.exact,
            "exact_rate": self.exact_rate,
            "agreement": self.agreement,
            "prefix": self.prefix,
            "errors_baseline": self.errors_baseline,
            "errors_candidate": self.errors_candidate,
            "errors_both": self.errors_both,
            "only_baseline": self.only_baseline,
            "only_candidate": self.only_candidate,
            "records": [asdict(r) for r in self.records],
        }


def compare_outputs(
    baseline: Sequence[ResultRow], candidate: Sequence[ResultRow], job: str = "run"
) -> OutputComparison:
    """The candidate's rows against the baseline's, matched by id."""
    cand = {row.id: row for row in candidate}
    base_ids = {row.id for row in baseline}
    out = OutputComparison(job, [], only_candidate=[row.id for row in candidate if row.id not in base_ids])
    for b in baseline:
        c = cand.get(b.id)
        if c is None:
            out.only_baseline.append(b.id)
        elif not b.ok or not c.ok:
            side = (
                out.errors_both if not b.ok and not c.ok else out.errors_baseline if not b.ok else out.errors_candidate
            )
            side.append(b.id)
        else:
            out.records.append(diff(b.id, b.output or "", c.output or ""))
    return out


def diff(record_id: str, baseline: str, candidate: str) -> RecordDiff:
    """One record's two outputs: exact, agreement, prefix, first difference and the excerpts from there."""
    b_spans, c_spans = spans(baseline), spans(candidate)
    b_tokens, c_tokens = [baseline[s:e] for s, e in b_spans], [candidate[s:e] for s, e in c_spans]
    if b_tokens == c_tokens:
        return RecordDiff(record_id, baseline == candidate, 1.0, 1.0, None, len(b_tokens), len(c_tokens))
    k = first_difference(b_tokens, c_tokens)
    return RecordDiff(
        id=record_id,
        exact=False,
        agreement=difflib.SequenceMatcher(None, b_tokens, c_tokens, autojunk=False).ratio(),
        prefix=k / max(len(b_tokens), len(c_tokens)),
        first_difference=k,
        baseline_tokens=len(b_tokens),
        candidate_tokens=len(c_tokens),
        baseline=excerpt(baseline, b_spans, k),
        candidate=excerpt(candidate, c_spans, k),
    )


def tokens(text: str) -> list[str]:
    """The word tokens of a text (see the module's definitions)."""
    return TOKEN.findall(text)


def spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each word token."""
    return [m.span() for m in TOKEN.finditer(text)]


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    """The first index where `a` and `b` differ (the shorter length when one is a prefix of the other)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def excerpt(text: str, token_spans: list[tuple[int, int]], k: int) -> str:
    """`text` from a few tokens before token `k`, at most EXCERPT_CHARS characters, on one line."""
    start = token_spans[max(0, k - EXCERPT_TOKENS_BEFORE)][0] if token_spans else 0
    piece = " ".join(text[start:].split())
    lead = "…" if start > 0 else ""
    return lead + (piece if len(piece) <= EXCERPT_CHARS else piece[: EXCERPT_CHARS - 1] + "…")
