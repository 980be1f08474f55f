"""Secrets omnirun never writes: hub tokens and the values of secret environment variables. Every file and
stream omnirun writes (run files, logs, the console, sweep summaries) passes through `redact` (text),
`redact_value` (a JSON value: only its strings change, so the file still parses) or `redact_yaml`.

Redaction goes by value, not by name alone: a variable is secret when a part of its name says so (`HF_TOKEN`,
`OPENAI_API_KEY`, `DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`; `TOKENIZER_DIR` is not one) and its value looks like
a secret: at least 8 characters, not a path, not ordinary words (`PARTITION_KEY=document` is left alone). A
value is hidden in every form a file may hold it: as it is, JSON-escaped (a newline as `\\n`, a quote as
`\\"`, non-ASCII as `\\uXXXX`) and as Python's repr writes it in a traceback.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

MASK = "***"
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")
SECRET_PARTS = frozenset(
    {"TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "CREDENTIALS"}
    | {"APIKEY", "KEY", "KEYS", "AUTH", "PAT", "PRIVATE"}
)
"""Parts of an environment variable's name (split at `_`, `-`, `.`) that mark it as holding a secret."""
MIN_LENGTH = 8
"""Shorter values are never redacted: they would hide ordinary text."""
_PARTS = re.compile(r"[^A-Za-z0-9]+")
_WORDS = re.compile(r"[A-Za-z]+(?:[ ._-]+[A-Za-z]+)*")


DECLARED: set[str] = set()
"""Variables a config names as holding a secret (`model.api_key_env`), whatever their name says."""


def declare_secret_variable(name: str) -> None:
    """Treat the variable `name` as secret from now on (a config names it as the holder of an API key)."""
    DECLARED.add(name.upper())


def is_secret_variable(name: str) -> bool:
    """Whether the variable's name says it holds a secret (a whole part of it: `MY_API_KEY`, not `TOKENIZER`),
    or a config declared it one."""
    upper = name.upper()
    return upper in TOKEN_VARIABLES or upper in DECLARED or any(p in SECRET_PARTS for p in _PARTS.split(upper))


def looks_secret(value: str) -> bool:
    """Whether a value can be a secret: long enough, not a path, not ordinary words (letters only, each word
    with at most two changes of case, as in `McDonald`)."""
    value = value.strip()
    if len(value) < MIN_LENGTH or is_path(value):
        return False
    if _WORDS.fullmatch(value):
        return any(case_changes(word) > 2 for word in re.split(r"[ ._-]+", value))
    return True


def is_path(value: str) -> bool:
    """A path: it starts like one (`/`, `~`, `./`, `../`) and it or its parent folder exists."""
    if not value.startswith(("/", "~", "./", "../")) or "\n" in value or "\0" in value:
        return False
    try:
        path = Path(value).expanduser()
        return path.exists() or path.parent.is_dir()
    except (OSError, ValueError):
        return False


def case_changes(word: str) -> int:
    return sum(a.isupper() != b.isupper() for a, b in itertools.pairwise(word))


def secret_values() -> list[str]:
    """The values of the secret environment variables, longest first."""
    found = [v for k, v in os.environ.items() if is_secret_variable(k) and looks_secret(v)]
    values = {form for v in found for form in (v, v.strip()) if len(form) >= MIN_LENGTH}  # a file's trailing newline
    return sorted(values, key=len, reverse=True)


def forms(value: str) -> list[str]:
    """The ways a file can hold `value`: as it is, JSON-escaped (UTF-8 and ASCII) and inside a Python repr."""
    out = {value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1], repr(value)[1:-1]}
    return sorted((f for f in out if len(f) >= MIN_LENGTH), key=len, reverse=True)


def secret_forms() -> list[str]:
    """Every form of every secret value, longest first (a longer form is replaced before a part of it)."""
    return sorted({f for v in secret_values() for f in forms(v)}, key=len, reverse=True)


def redact(text: str) -> str:
    """Hide secrets in text: each form of a secret variable's value, and anything shaped like a hub token
    (`hf_...`)."""
    for value in secret_forms():
        text = text.replace(value, MASK)
    return _TOKEN.sub("hf_" + MASK, text)


def has_secret(text: str, known: list[str] | None = None) -> bool:
    """Whether `redact` would change `text`; `known`: `secret_forms()` when the caller has read them."""
    return bool(_TOKEN.search(text)) or any(f in text for f in (secret_forms() if known is None else known))


def redact_value(obj: Any) -> Any:
    """A JSON-like value with every string in it (keys too) redacted; numbers, booleans and null unchanged, so
    the value still serializes to what it was, less the secrets."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_value(k): redact_value(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_value(v) for v in obj]
    return obj


def redact_yaml(text: str) -> str:
    """YAML text with its secrets redacted, still YAML: unchanged when it holds none; else parsed, redacted
    value by value and written again (a `***` in place of a plain scalar would be read as an alias, and a
    multi-line value may be folded where no text search finds it)."""
    if not secret_forms() and not _TOKEN.search(text):
        return text
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return redact(text)
    clean = redact_value(data)
    if clean == data and not has_secret(text):
        return text
    return str(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True, default_flow_style=False))
