"""The `task` config group's schemas: `TaskConfig` holds what every task shares, and each family of tasks beyond
generation adds its own options in a subclass (`EmbedConfig`, `TopKConfig`, ...). A task's spec names its class
(`TaskSpec.config`), and the `task=<name>` group option is an instance of it (`confstore`), so `task.top_k` exists
under `task=classify` and is refused, at compose time, under `task=generate`: an option acts where it is accepted.

Every default is written here once; a spec's `defaults` (e.g. `batch_size`) are the only per-task values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from omnirun.choices import Aggregation, Overflow, Pooling, TaskName, TemplateMode
from omnirun.errors import ConfigError

C = TypeVar("C", bound="TaskConfig")


def options_as(options: TaskConfig, kind: type[C]) -> C:
    """`options` as the task family's config class (what the task's spec composes); TypeError if it is not."""
    if not isinstance(options, kind):
        raise TypeError(f"task={options.name} needs {kind.__name__} options, got {type(options).__name__}")
    return options


def task_config(name: str, **options: Any) -> TaskConfig:
    """A validated `task` config for the installed task `name` (its spec's class) with `options` set."""
    from omnirun import plugins

    cls = plugins.task(name).config or TaskConfig
    config = cls(name=name, **options)
    config.validate()
    return config


def of_task_class(options: TaskConfig) -> TaskConfig:
    """`options` as an instance of its task's config class: a base `TaskConfig` (what `RunConfig()` holds, and
    what a config schema typed as the base composes to) becomes e.g. a `GenerateConfig` with the same values and
    the class's defaults for the rest; any other instance is returned as it is (`validate` checks it)."""
    from omnirun import plugins

    if type(options) is not TaskConfig:
        return options
    try:
        cls = plugins.task(options.name).config or TaskConfig
    except ConfigError:
        return options  # an unknown task: validate() says so
    if cls is TaskConfig:
        return options
    values = {f.name: getattr(options, f.name) for f in fields(TaskConfig)}
    return cls(**values)


def check(rules: list[tuple[bool, str, str, Any]]) -> None:
    """ConfigError naming the first `task.<key>` whose rule does not hold."""
    for ok, key, rule, value in rules:
        if not ok:
            raise ConfigError(f"task.{key} {rule}, got {value!r}")


@dataclass
class TaskConfig:
    name: str = TaskName.generate
    """An installed task: `generate`, `chat`, `batch`, `stream`, `benchmark`, `export`, `embed`, `classify`, ...
    or a plugin's (`omnirun.plugins`)."""
    batch_size: Any = 1
    """Records per model call: a positive integer, or `auto` to take the hardware plan's."""
    chat_template: TemplateMode = TemplateMode.auto
    """Wrap plain prompts in the model's chat template: `auto` (when the tokenizer has one), `always`, `never`."""
    system_prompt: str | None = None
    """A system message put before every conversation (chat, or prompts wrapped in the chat template)."""
    sort_by_length: bool = True
    """Group prompts of similar length into the same batch (results are still written in input order)."""
    progress: bool = True
    """Show a progress bar with samples done, tokens/s and ETA."""
    overflow: Overflow = Overflow.clip
    """A record whose prompt plus max_new_tokens exceeds the model's context: `clip` generates only what fits
    (a warning, and finish_reason `length`); `error` makes it an error row. A prompt that alone fills the
    context is always an error row."""
    concurrency: int = 8
    """Requests in flight at once against a server (`hardware.backend=openai`)."""
    retries: int = 3
    """Retries of a request that failed with 429, a 5xx status, a dropped connection or a timeout (exponential
    backoff, honouring Retry-After); then the record is an error row."""
    timeout_s: float = 60.0
    """Seconds a request may take in all (connect, first byte, the whole stream) before it counts as failed."""

    def validate(self) -> None:
        from omnirun import plugins

        spec = plugins.task(self.name)
        self.name = TaskName(spec.name) if spec.name in set(TaskName) else spec.name
        expected = spec.config or TaskConfig
        if not isinstance(self, expected):
            raise ConfigError(f"task={spec.name} takes {expected.__name__} options, not {type(self).__name__}")
        bs = self.batch_size
        if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigError(f"task.batch_size must be a positive integer or 'auto', got {bs!r}")
        check(
            [
                (self.concurrency >= 1, "concurrency", "must be >= 1", self.concurrency),
                (self.retries >= 0, "retries", "must be >= 0", self.retries),
                (self.timeout_s > 0, "timeout_s", "must be > 0", self.timeout_s),
            ]
        )
        self.check_options()

    def check_options(self) -> None:
        """The task family's own options in range (subclasses)."""


@dataclass
class EmbedConfig(TaskConfig):
    """embed, and rerank by embedding similarity."""

    pooling: Pooling = Pooling.mean
    """How token states become one vector: `mean` (over real tokens), `cls` (the first), `last`."""
    normalize: bool = True
    """Scale each embedding to unit length (rerank by cosine)."""


@dataclass
class TopKConfig(TaskConfig):
    """classify, fill_mask, image_classify, audio_classify."""

    top_k: int = 5
    """How many labels / tokens to report, best first."""

    def check_options(self) -> None:
        check([(self.top_k >= 1, "top_k", "must be >= 1", self.top_k)])


@dataclass
class QAConfig(TaskConfig):
    max_answer_len: int = 15
    """The longest answer, in tokens (the question-answering pipeline's default)."""
    handle_impossible_answer: bool = False
    """Answer "" (start 0, end 0) when the null answer ([CLS]) scores above every span."""
    max_context_chars: int = 1_000_000
    """A context's most characters: every window of a context is tokenized and answered, so its size is checked
    before tokenizing (about 250k tokens; a longer context is its record's error row)."""

    def check_options(self) -> None:
        check(
            [
                (self.max_answer_len >= 1, "max_answer_len", "must be >= 1", self.max_answer_len),
                (self.max_context_chars >= 1, "max_context_chars", "must be >= 1", self.max_context_chars),
            ]
        )


@dataclass
class TokenClassifyConfig(TaskConfig):
    aggregation: Aggregation = Aggregation.simple
    """How sub-word predictions merge into entities (Transformers' aggregation_strategy)."""


@dataclass
class DetectConfig(TaskConfig):
    threshold: float = 0.5
    """The lowest score a box is reported with."""

    def check_options(self) -> None:
        check([(0.0 <= self.threshold <= 1.0, "threshold", "must be between 0 and 1", self.threshold)])


@dataclass
class TranscribeConfig(TaskConfig):
    return_timestamps: bool = False
    """Also write `chunks` with start/end times."""
    chunk_length_s: float = 30.0
    """Audio longer than this is transcribed in chunks of this many seconds (0: never)."""

    def check_options(self) -> None:
        rule = "must be >= 0 (0: never chunk)"
        check([(self.chunk_length_s >= 0, "chunk_length_s", rule, self.chunk_length_s)])


@dataclass
class ImageConfig(TaskConfig):
    num_inference_steps: int = 30
    """Denoising steps per image."""
    guidance_scale: float = 7.5
    """Classifier-free guidance strength (1.0 or less turns it off)."""
    height: int | None = None
    """Image height in pixels (null: the pipeline's default); a multiple of 8."""
    width: int | None = None
    """Image width in pixels (null: the pipeline's default); a multiple of 8."""

    def check_options(self) -> None:
        rules = [
            (self.num_inference_steps >= 1, "num_inference_steps", "must be >= 1", self.num_inference_steps),
            (
                math.isfinite(self.guidance_scale) and self.guidance_scale >= 0,
                "guidance_scale",
                "must be a finite number >= 0",
                self.guidance_scale,
            ),
        ]
        for side in ("height", "width"):
            value = getattr(self, side)
            rules.append((value is None or (value >= 8 and value % 8 == 0), side, "must be a multiple of 8", value))
        check(rules)


DEFAULT_RUBRIC = (
    "You are grading an answer against a reference answer.\n"
    "Reference: {reference}\n"
    "Answer: {output}\n"
    "Rate how correct the answer is from 0 (wrong) to 10 (fully correct). Reply as: Score: <number>"
)
DEFAULT_PATTERN = r"(?i)score\s*[:=]?\s*(-?[0-9]+(?:\.[0-9]+)?)"


@dataclass
class JudgeConfig:
    """`task.judge`: a model as judge (`omnirun.scoring.judge`), for `task.metrics=[judge]`."""

    model: str | None = None
    """The judge: a local folder, a GGUF file or a Hub name, as `model.name` takes them."""
    backend: str = "auto"
    """The judge's `hardware.backend`."""
    rubric: str = DEFAULT_RUBRIC
    """The prompt, with `{output}` (the text scored) and `{reference}` (its references, joined by ` | `); put
    through the judge's chat template when it has one."""
    pattern: str = DEFAULT_PATTERN
    """A regex whose first capture group in the judge's answer is the score (a number)."""
    max_new_tokens: int = 32
    """The judge's answer budget."""
    batch_size: int = 8
    """Judgments generated per call."""
    response_format: Any = None
    """Constrains the judge's answer as `generation.response_format` does (e.g. `{type: regex, pattern: 'Score:
    [0-9]{1,2}'}`), so that a small judge always answers in the form the pattern reads; null: free text."""
    cache: str | None = None
    """The SQLite cache file (None: `judge.sqlite` in the user cache, $OMNIRUN_CACHE or ~/.cache/omnirun)."""

    def validate(self, key: str = "task.judge") -> None:
        if not self.model:
            raise ConfigError(f"task.metrics names judge and {key}.model is unset; set {key}.model=<a model>")
        if "{output}" not in self.rubric:
            raise ConfigError(f"{key}.rubric must contain {{output}} (the text judged), got {self.rubric[:80]!r}")
        try:
            self.rubric.format(output="", reference="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{key}.rubric may use only {{output}} and {{reference}} ({exc}); write other braces as {{{{ }}}}"
            ) from None
        try:
            groups = re.compile(self.pattern).groups
        except re.error as exc:
            raise ConfigError(f"{key}.pattern {self.pattern!r} is not a regular expression: {exc}") from None
        if groups < 1:
            raise ConfigError(f"{key}.pattern needs a capture group around the score, got {self.pattern!r}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{key}.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.response_format is not None:
            from omnirun import structured

            self.response_format = structured.check_response_format(self.response_format, f"{key}.response_format")


@dataclass
class ScoringFields:
    """The options that say how an output is scored against its reference: `task=score`'s, and a generation
    task's for `task.score` (`omnirun.scoring`)."""

    reference_field: str = "reference"
    """The row field holding the reference: a string, a number, or a list of acceptable references (an input
    record's own fields travel into its row, so a record's `reference` is found there)."""
    normalize: str = "none"
    """`none` (compare as written) or `squad` (SQuAD v1.1: lower-case, no punctuation or articles, single spaces),
    for exact_match, f1 and contains."""
    extract: str | None = None
    """A regex whose first capture group is scored instead of the whole output, e.g. `#### (\\S+)`."""
    tolerance: float = 0.0
    """numeric: the largest absolute difference still counted as correct."""
    pattern: str | None = None
    """regex_match: the regex searched for in the output."""
    schema: Any = None
    """json_schema: the JSON Schema, as a mapping or the path of a JSON file holding one."""
    group_by: list[str] = field(default_factory=list)
    """Row fields whose values break the summary down."""
    bootstrap_iters: int = 1000
    """Bootstrap resamples for each stderr (0: no stderr)."""

    def scoring_options(
        self,
        metrics: list[str],
        output_field: str = "output",
        references: str | None = None,
        seed: int = 0,
        metrics_key: str = "task.metrics",
    ) -> Any:
        """These options as `omnirun.scoring.ScoreOptions` (plain lists and mappings)."""
        from omnirun.scoring import ScoreOptions

        schema = dict(self.schema) if hasattr(self.schema, "items") else self.schema
        return ScoreOptions(
            metrics=[str(m) for m in metrics],
            output_field=output_field,
            reference_field=self.reference_field,
            normalize=self.normalize,
            extract=self.extract,
            tolerance=self.tolerance,
            pattern=self.pattern,
            schema=schema,
            group_by=[str(g) for g in self.group_by],
            references=references,
            bootstrap_iters=self.bootstrap_iters,
            seed=seed,
            metrics_key=metrics_key,
        )


@dataclass
class GenerateConfig(ScoringFields, TaskConfig):
    """generate, batch, chat, stream: generation, optionally scored as it is written."""

    score: list[str] = field(default_factory=list)
    """Metrics to score each row with as it is written (`exact_match`, `f1`, `bleu`, ... as task=score computes
    them, against `task.reference_field` of the input record): each row gets `scores`, metrics.json gets
    `scores: {metric: {mean, stderr, n}}`, and sweep summaries a column per metric. Empty: no scoring."""

    def check_options(self) -> None:
        if "judge" in self.score:
            raise ConfigError(
                "task.score cannot use judge while generating (two models at once); score the run directory "
                "afterwards: task=score input.path=<run dir> task.metrics=[judge] task.judge.model=<model>"
            )
        if self.score:
            self.scoring().validate()

    def scoring(self, seed: int = 0) -> Any:
        return self.scoring_options(list(self.score), seed=seed, metrics_key="task.score")


@dataclass
class ScoreConfig(ScoringFields, TaskConfig):
    """task=score: outputs scored against references, no model (`omnirun.scoring`)."""

    metrics: list[str] = field(default_factory=lambda: ["exact_match", "f1"])
    """Which metrics to compute: exact_match, f1, contains, bleu, chrf, rouge_l, json_valid, json_schema,
    regex_match, numeric."""
    output_field: str = "output"
    """The row field holding the text to score."""
    references: str | None = None
    """A JSONL file joined by id for references the rows lack (an OpenAI batch output's input file)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The judge model of the `judge` metric."""

    def check_options(self) -> None:
        self.scoring().validate()

    def scoring(self, seed: int = 0) -> Any:
        """These options as `omnirun.scoring.ScoreOptions` (plain lists and mappings)."""
        options = self.scoring_options(list(self.metrics), self.output_field, self.references, seed)
        options.judge = self.judge if "judge" in self.metrics else None
        return options
