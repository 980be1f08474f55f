"""Text normalisation and the SQuAD v1.1 answer metrics, and what `task.extract` / `numeric` take from a text.

`normalize_answer`, `f1_score` and `exact_match_score` follow the official SQuAD v1.1 evaluation script
(`evaluate-v1.1.py`, Rajpurkar et al. 2016) line for line: lower-case, drop ASCII punctuation
(`string.punctuation`), drop the articles a / an / the as whole words, collapse whitespace; F1 over the
whitespace tokens of the normalised texts, 0 when they share no token. No maintained package exposes them without
heavy dependencies, so they are written here; the tests check them against that script's code.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from enum import StrEnum


class Normalize(StrEnum):
    """How outputs and references are compared by exact_match, f1 and contains."""

    none = "none"
    """As written (f1 splits on whitespace)."""
    squad = "squad"
    """SQuAD v1.1's `normalize_answer`."""


_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (SQuAD v1.1, verbatim in behaviour)."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized(text: str, how: Normalize) -> str:
    return normalize_answer(text) if how is Normalize.squad else text


def f1_score(prediction: str, ground_truth: str, how: Normalize = Normalize.squad) -> float:
    """SQuAD v1.1 token F1 of two texts (tokens: whitespace-split after normalisation)."""
    prediction_tokens = normalized(prediction, how).split()
    ground_truth_tokens = normalized(ground_truth, how).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str, how: Normalize = Normalize.squad) -> float:
    """1.0 when the normalised texts are equal (SQuAD v1.1), else 0.0."""
    return float(normalized(prediction, how) == normalized(ground_truth, how))


def contains_score(prediction: str, ground_truth: str, how: Normalize = Normalize.none) -> float:
    """1.0 when the normalised reference occurs in the normalised output (an empty reference never does)."""
    ref = normalized(ground_truth, how)
    return float(bool(ref) and ref in normalized(prediction, how))


def extract(text: str, pattern: re.Pattern[str]) -> str | None:
    """The first capture group of the pattern's first match in `text` (None: no match, or the group did not
    take part in the match)."""
    match = pattern.search(text)
    return None if match is None else match.group(1)


NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?")
"""A number as people write it: a sign, thousands separated by commas (1,234,567), a decimal part, an exponent."""


def first_number(text: str) -> float | None:
    """The first number in `text` (`$-1,234.50 each` -> -1234.5), None when there is none."""
    match = NUMBER.search(text)
    return None if match is None else float(match.group(0).replace(",", ""))
