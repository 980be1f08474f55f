"""The errors omnirun raises on purpose; each carries a one-line message meant for the user."""

from __future__ import annotations


class OmnirunError(Exception):
    """Base class: an expected failure with a message that says what went wrong and how to fix it."""

    exit_code: int = 1


class ConfigError(OmnirunError, ValueError):
    """A config key, value or combination is invalid. Raised before any model loads (exit status 2)."""

    exit_code = 2


class InputError(OmnirunError):
    """The input file or dataset cannot be read at all (missing, empty, not JSONL). Exit status 2."""

    exit_code = 2


class ModelLoadError(OmnirunError):
    """A model or tokenizer could not be loaded (hub unreachable, no such path, unsupported format)."""

    exit_code = 1


def first_line(text: str) -> str:
    """The first non-empty line of a message (what a one-line error shows)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)
