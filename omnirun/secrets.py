"""Secrets omnirun never writes: hub tokens and the values of secret environment variables. Every file and
stream omnirun writes (run files, logs, the console, sweep summaries) passes through `redact`."""

from __future__ import annotations

import os
import re

_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN")
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
"""Environment variables whose values omnirun never writes anywhere."""


def is_secret_variable(name: str) -> bool:
    return name in TOKEN_VARIABLES or bool(SECRET_NAME.search(name))


def secret_values() -> list[str]:
    """Values of the secret environment variables, longest first (short values would redact ordinary text)."""
    values = {v for k, v in os.environ.items() if is_secret_variable(k) and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """Hide secrets: the values of secret environment variables (names with TOKEN, KEY, SECRET, PASSWORD) and
    anything shaped like a hub token (`hf_...`)."""
    for value in secret_values():
        text = text.replace(value, "***")
    return _TOKEN.sub("hf_***", text)
