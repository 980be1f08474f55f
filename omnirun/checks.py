"""Value checks the config schemas share: enum choices typed as users type them, memory maps, and the types a
per-record generation parameter may have. Each raises ConfigError naming the key, the rule and the value."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from omnirun.errors import ConfigError

E = TypeVar("E", bound=StrEnum)


def parse_choice(key: str, enum: type[E], value: object) -> E:
    """`value` as a member of `enum` (whose values, such as `llama.cpp` or `causal-lm`, are what users type;
    OmegaConf would only accept the members' Python names, so these fields are strings in the schema)."""
    try:
        return enum(str(value))
    except ValueError:
        raise ConfigError(f"{key} must be one of {', '.join(e.value for e in enum)}, got {value!r}") from None


MAX_THREADS = 1024
"""More CPU threads than this is a typo (torch and OpenMP crash on absurd counts)."""
MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


def check_max_memory(value: Any) -> dict[str, str]:
    """`hardware.max_memory` as accelerate wants it: device (a GPU index, `cpu`, `mps`, `disk`) -> a size such
    as `20GiB`. Accepts a mapping, or its YAML/JSON text as typed on the command line."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = None
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"hardware.max_memory must be a mapping of device to size, e.g. '{{0: 20GiB, cpu: 60GiB}}', got {value!r}"
        )
    out = {}
    for key, size in value.items():
        device = str(key)
        if not (device.isdigit() or device in ("cpu", "mps", "disk")):
            raise ConfigError(f"hardware.max_memory: {device!r} is not a device; use a GPU index, cpu, mps or disk")
        if isinstance(size, bool) or not (isinstance(size, int) or MEMORY_SIZE.match(str(size))):
            raise ConfigError(f"hardware.max_memory.{device}: {size!r} is not a size such as 20GiB or 512MB")
        out[device] = str(size)
    return out


GENERATION_TYPES: dict[str, tuple[type, ...]] = {
    "max_new_tokens": (int,),
    "min_new_tokens": (int, type(None)),
    "temperature": (float, int),
    "top_p": (float, int),
    "top_k": (int,),
    "repetition_penalty": (float, int),
    "do_sample": (bool,),
    "num_beams": (int,),
    "early_stopping": (bool,),
    "no_repeat_ngram_size": (int,),
    "length_penalty": (float, int),
    "response_format": (dict, type(None)),
}
"""What each generation parameter accepts from a record (JSON): an int is never a bool, a number is finite."""


def check_type(key: str, value: Any, allowed: tuple[type, ...]) -> None:
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")
