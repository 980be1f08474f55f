"""Structured output: the `response_format` a run or a record asks for (OpenAI's shapes, plus a regex), checked
into one normal form before anything loads."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from omnirun.errors import ConfigError

TYPES = ("text", "json_object", "json_schema", "regex")


def check_response_format(value: Any, key: str = "generation.response_format") -> dict[str, Any] | None:
    """`value` as a plain dict `{type: ...}` (None for free text); ConfigError naming `key` when it is malformed."""
    if value is None:
        return None
    if isinstance(value, str):
        import yaml

        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping such as {{type: json_object}}, got {value!r}")
    fmt = {str(k): v for k, v in value.items()}
    kind = fmt.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{key}.type must be one of {', '.join(TYPES)}, got {kind!r}")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ConfigError(f"{key}: type json_schema needs json_schema: {{name, schema: {{...}}}}")
    if kind == "regex":
        pattern = fmt.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"{key}: type regex needs a non-empty pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{key}.pattern {pattern!r} is not a regular expression: {exc}") from None
    return fmt
