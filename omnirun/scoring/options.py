"""`ScoreOptions`: what `task=score` computes, validated up front (ConfigError naming the key, the rule, the
value and the fix) so that no row is read with options that cannot work."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnirun.errors import ConfigError
from omnirun.scoring.bootstrap import DEFAULT_ITERS
from omnirun.scoring.metrics import METRICS, MetricSpec, RowContext, missing_library
from omnirun.scoring.text import Normalize


@dataclass
class ScoreOptions:
    metrics: list[str] = field(default_factory=lambda: ["exact_match", "f1"])
    """Which metrics to compute (`METRICS` lists them: exact_match, f1, contains, bleu, chrf, rouge_l,
    json_valid, json_schema, regex_match, numeric)."""
    output_field: str = "output"
    """The row field holding the text to score."""
    reference_field: str = "reference"
    """The row field holding the reference: a string (a number is read as its text) or a list of acceptable
    references (a row scores its best one)."""
    normalize: Normalize | str = Normalize.none
    """`none` (compare as written) or `squad` (SQuAD v1.1: lower-case, no punctuation or articles, single
    spaces), for exact_match, f1 and contains."""
    extract: str | None = None
    """A regex whose first capture group is scored instead of the whole output, e.g. `#### (\\S+)`; an output
    with no match scores as an empty string. Each reference is replaced by its own match when it has one."""
    tolerance: float = 0.0
    """numeric: the largest absolute difference still counted as correct (0: equal as numbers, so 72.0 = 72)."""
    pattern: str | None = None
    """regex_match: the regex searched for in the output (Python `re` syntax)."""
    schema: dict[str, Any] | str | None = None
    """json_schema: the JSON Schema, as an object or the path of a JSON file holding one."""
    group_by: list[str] = field(default_factory=list)
    """Row fields whose values break the summary down (`by_group`); a row without the field is `<missing>`."""
    references: str | None = None
    """A JSONL file joined by id for references the rows lack (an OpenAI batch output's input file); a run
    directory's own input file by default."""
    bootstrap_iters: int = DEFAULT_ITERS
    """Bootstrap resamples for each stderr (0: no stderr)."""
    seed: int = 0
    """Seeds the bootstrap, so the same rows give the same stderr."""
    metrics_key: str = "task.metrics"
    """The config key that lists the metrics, for errors (`task.score` on a generation task)."""
    judge: Any = None
    """The `judge` metric's `JudgeConfig` (None: no judge)."""

    def validate(self) -> ScoreOptions:
        """These options with `normalize` as its enum; ConfigError on the first problem."""
        self.normalize = check_normalize(self.normalize)
        check_metrics(self.metrics, self.metrics_key)
        if "judge" in self.metrics:
            if self.judge is None:
                raise ConfigError(f"{self.metrics_key} names judge and task.judge.model is unset; set it")
            self.judge.validate()
        for key in ("output_field", "reference_field"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"task.{key} must be a non-empty field name, got {value!r}")
        compile_regex("task.extract", self.extract, groups=True)
        if not isinstance(self.tolerance, int | float) or not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ConfigError(f"task.tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if "regex_match" in self.metrics and self.pattern is None:
            raise ConfigError("task.pattern is required by metric regex_match; set task.pattern=<regex>")
        compile_regex("task.pattern", self.pattern, groups=False)
        if "json_schema" in self.metrics:
            self.schema = load_schema(self.schema)
        if len(set(self.group_by)) != len(self.group_by) or not all(isinstance(g, str) and g for g in self.group_by):
            raise ConfigError(f"task.group_by must list distinct field names, got {self.group_by!r}")
        if not isinstance(self.bootstrap_iters, int) or self.bootstrap_iters < 0:
            raise ConfigError(
                f"task.bootstrap_iters must be an integer >= 0 (0: no stderr), got {self.bootstrap_iters!r}"
            )
        return self

    @property
    def specs(self) -> list[MetricSpec]:
        return [METRICS[name] for name in self.metrics]

    @property
    def needs_reference(self) -> bool:
        return any(spec.needs_reference for spec in self.specs)

    def context(self) -> RowContext:
        schema = self.schema if isinstance(self.schema, dict) else None
        pattern = re.compile(self.pattern) if self.pattern is not None else None
        judge = None
        if self.judge is not None and "judge" in self.metrics:
            from omnirun.scoring.judge import Judge

            judge = Judge(self.judge)
        return RowContext(Normalize(self.normalize), float(self.tolerance), pattern, schema, judge)

    @property
    def extract_pattern(self) -> re.Pattern[str] | None:
        return None if self.extract is None else re.compile(self.extract)


def check_normalize(value: Normalize | str) -> Normalize:
    try:
        return Normalize(value)
    except ValueError:
        valid = " | ".join(Normalize)
        raise ConfigError(f"task.normalize must be one of {valid}, got {value!r}") from None


def check_metrics(metrics: list[str], key: str = "task.metrics") -> None:
    valid = ", ".join(METRICS)
    if not isinstance(metrics, list | tuple) or not metrics:
        raise ConfigError(f"{key} must be a non-empty list of metric names, got {metrics!r}; valid: {valid}")
    for name in metrics:
        if name not in METRICS:
            raise ConfigError(f"{key}: unknown metric {name!r}; valid metrics: {valid}")
        problem = missing_library(METRICS[name])
        if problem:
            raise ConfigError(problem.replace("task.metrics", key, 1))
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"{key} names a metric twice: {list(metrics)!r}; list each once")


def compile_regex(key: str, value: str | None, *, groups: bool) -> None:
    if value is None:
        return
    try:
        compiled = re.compile(value)
    except (re.error, TypeError) as exc:
        raise ConfigError(f"{key}={value!r} is not a valid regex ({exc}); fix the pattern (Python re syntax)") from None
    if groups and compiled.groups < 1:
        raise ConfigError(
            f"{key}={value!r} has no capture group, and its first group is what gets scored; "
            f"wrap the part to score in parentheses, e.g. '#### (\\S+)'"
        )


def load_schema(schema: dict[str, Any] | str | None) -> dict[str, Any]:
    """The JSON Schema of `task.schema` (an object, or a JSON file's path), checked against its metaschema."""
    if schema is None:
        raise ConfigError("task.schema is required by metric json_schema; set task.schema=<schema.json> or an object")
    if isinstance(schema, str):
        try:
            schema = json.loads(Path(schema).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"task.schema={schema!r} cannot be read as a JSON file ({exc}); give a JSON Schema file"
            ) from None
    if not isinstance(schema, dict):
        raise ConfigError(f"task.schema must be a JSON Schema object, got {type(schema).__name__}")
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"task.schema is not a valid JSON Schema: {exc.message}; fix the schema") from None
    return dict(schema)
