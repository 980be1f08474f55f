"""Records: one validated input each. A bad record (malformed line, missing field, wrong type, invalid UTF-8,
bad override) becomes a Record with `error` set, so the run can write an error line for it and go on."""

from __future__ import annotations

import hashlib
import itertools
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from omnirun.config import GenerationConfig
from omnirun.errors import ConfigError
from omnirun.inputs import openai

DEFAULT_PROMPT = "What is the capital of France?"
"""The prompt `generate`, `batch` and `stream` answer when no input is given."""

GENERATION_KEYS = frozenset(GenerationConfig.__dataclass_fields__)


@dataclass
class Record:
    index: int
    """Position in the input (0-based); results are written in this order."""
    id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    """Per-record generation parameters (validated against GenerationConfig)."""
    template: bool | None = None
    """Force (True) or forbid (False) the chat template for a plain prompt; None follows task.chat_template."""
    error: str | None = None
    """Why this record cannot be run; it is written as an error line instead."""
    openai: bool = False
    """Read from an OpenAI Batch API request line."""
    fields: dict[str, Any] = field(default_factory=dict)
    """A non-generation task's inputs besides `prompt` (`question`, `context`, `image`, `audio`, `documents`...),
    as its `InputSpec` names them."""
    url: str | None = None
    """The OpenAI batch endpoint the request line named (`/v1/embeddings`, ...)."""
    carried: dict[str, Any] | None = None
    """The record's other fields, which are not model inputs (a reference answer, a category, a source id):
    written into its row under `fields` (`carried_fields`)."""


TEXT_FIELDS = frozenset({"prompt", "text_pair", "question", "context", "query", "negative_prompt"})
LIST_FIELDS = frozenset({"documents", "texts"})
MEDIA_FIELDS = frozenset({"image", "audio"})
PROMPT_ALIASES = ("prompt", "text", "input")
"""Where a task's main text may be: `{"prompt": ...}`, `{"text": ...}` or an embeddings request's `input`."""


@dataclass(frozen=True)
class InputSpec:
    """The fields a non-generation task reads from each record (its `id` aside)."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    """The OpenAI batch endpoints the task serves."""
    task: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


MAX_PROBLEMS = 100
"""How many problem messages a scan keeps (in input order); `Records.num_problems` counts them all."""


class Records(Sequence[Record]):
    """The records of an input, read lazily: each iteration reads the source again (a generator per source),
    so memory does not grow with the input. `scan` makes one first pass that keeps only the number of records
    (`len()`), the first MAX_PROBLEMS problems and whether any record is an OpenAI request; input-level errors
    (an empty file, a file that is not JSONL) are raised there, before the model loads. Indexing works (it
    reads up to the index) for tests and small inputs; the runner only iterates."""

    def __init__(
        self, open_: Callable[[], Iterator[Record]], length: int, problems: list[str], num_problems: int, openai: bool
    ) -> None:
        self._open = open_
        self.length = length
        self.problems = problems
        self.num_problems = num_problems
        self.openai = openai

    @staticmethod
    def scan(open_: Callable[[], Iterator[Record]], limit: int | None = None) -> Records:
        """One pass over `open_()` (at most `limit` records) that keeps no record."""
        count = num_problems = 0
        problems: list[str] = []
        openai = False
        for record in itertools.islice(open_(), limit):
            count += 1
            openai = openai or record.openai
            if record.error:
                num_problems += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(record.error)
        return Records(open_, count, problems, num_problems, openai)

    @staticmethod
    def of(records: Iterable[Record]) -> Records:
        """Records already in memory (one prompt, a test's list)."""
        kept = list(records)
        return Records.scan(lambda: iter(kept))

    def __iter__(self) -> Iterator[Record]:
        return itertools.islice(self._open(), self.length)

    def from_position(self, start: int, stop: int | None = None) -> Iterator[Record]:
        """The records at input positions `start` to `stop` (the ones before are read and dropped)."""
        return itertools.islice(self._open(), start, self.length if stop is None else min(stop, self.length))

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            return list(self)[index] if step < 0 else list(itertools.islice(self._open(), start, stop, step))
        position = index + self.length if index < 0 else index
        if not 0 <= position < self.length:
            raise IndexError(f"record index {index} out of range ({self.length} records)")
        return next(self.from_position(position))


@dataclass
class Inputs:
    records: Records
    """Read lazily (see `Records`): iterate them; `len()` is the count of the first pass."""
    source: str
    """`jsonl`, `dataset`, `prompt` (one prompt from the command line or the default) or `interactive`."""
    fingerprint: str | None
    """sha256 of the input file, the dataset's fingerprint, or of the prompt text."""
    openai: bool = False
    """The input lines are OpenAI Batch API requests (so the results are also written in that format)."""

    def __post_init__(self) -> None:
        if not isinstance(self.records, Records):  # a list (tests, one prompt)
            self.records = Records.of(self.records)

    @property
    def problems(self) -> list[str]:
        """The first MAX_PROBLEMS problems, in input order (`num_problems` counts them all)."""
        return self.records.problems

    @property
    def num_problems(self) -> int:
        return self.records.num_problems


def make_record(
    index: int,
    default_id: str,
    obj: dict[str, Any],
    id_field: str = "id",
    base: GenerationConfig | None = None,
    spec: InputSpec | None = None,
) -> Record:
    """Validate one input object: an id, `prompt` (non-empty string) or `messages`, generation overrides.
    An OpenAI Batch API request (`custom_id`, `body`) is translated first. The overrides are checked on top
    of `base`, the run's generation settings (the defaults when not given). With `spec` (a non-generation
    task), the record holds the fields the spec names instead (`make_task_record`)."""
    if openai.is_openai_request(obj):
        obj, problem = openai.from_openai_request(obj)
        url = obj.pop("url", None)
        if problem is None:
            problem = openai.check_url(url, spec.urls if spec else openai.GENERATION_URLS, spec.task if spec else "")
        if problem:
            return Record(index, str(obj["id"]), error=problem, openai=True, url=url)
        record = make_record(index, default_id, obj, base=base, spec=spec)
        record.openai, record.url = True, url
        record.template = obj.get("template")
        return record
    if spec is not None:
        return make_task_record(index, default_id, obj, id_field, spec)
    raw_id = obj.get(id_field)
    rid = default_id if raw_id is None else str(raw_id)
    record = Record(index, rid)
    overrides = {k: v for k, v in obj.items() if k in GENERATION_KEYS}
    if isinstance(obj.get("generation"), dict):
        overrides.update(obj["generation"])
    record.overrides = overrides
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if messages is not None:
        problem = check_messages(messages)
        if problem:
            record.error = problem
            return record
        record.messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif prompt is not None:
        if not isinstance(prompt, str):
            record.error = f"'prompt' must be a string, got {type(prompt).__name__}"
            return record
        if not prompt.strip():
            record.error = "'prompt' is empty"
            return record
        record.prompt = prompt
    else:
        record.error = "missing 'prompt' (or 'messages')"
        return record
    problem = unencodable(record.prompt, *(m["content"] for m in record.messages or []))
    if problem:
        record.error = problem
        return record
    if overrides:
        try:
            (base or GenerationConfig()).with_overrides(overrides, prefix="")
        except (ConfigError, TypeError) as exc:
            record.error = f"bad generation override: {exc}"
    return record


def make_task_record(index: int, default_id: str, obj: dict[str, Any], id_field: str, spec: InputSpec) -> Record:
    """A record for a non-generation task: each field `spec` names, checked for its kind (text: a non-empty
    string; `documents`: a non-empty list of strings; `image` / `audio`: a path, a URL or a dataset value)."""
    raw_id = obj.get(id_field)
    record = Record(index, default_id if raw_id is None else str(raw_id))
    values = dict(obj)
    if "prompt" in spec.names and values.get("prompt") is None:
        values["prompt"] = next((obj[k] for k in PROMPT_ALIASES if obj.get(k) is not None), None)
    for name in spec.names:
        value = values.get(name)
        if value is None:
            if name in spec.required and not (name == "prompt" and values.get("texts") is not None):
                record.error = f"missing {name!r} (task={spec.task} reads {', '.join(map(repr, spec.required))})"
                return record
            continue
        problem = check_field(name, value)
        if problem:
            record.error = problem
            return record
        if name == "prompt":
            record.prompt = value
        else:
            record.fields[name] = value
    record.error = check_top_n(record.fields)
    if record.error:
        return record
    texts = values.get("texts")
    if texts is not None and "prompt" in spec.names:
        record.error = check_field("texts", texts)
        record.fields["texts"] = texts
    return record


def check_top_n(fields: dict[str, Any]) -> str | None:
    """rerank's `top_n`: an integer from 1 to the number of documents (0, -1 or 10**9 would be silently
    ignored or cut)."""
    top_n = fields.get("top_n")
    if top_n is None:
        return None
    docs = fields.get("documents")
    count = len(docs) if isinstance(docs, list) else 0
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 1 <= top_n <= count:
        return f"'top_n' must be an integer from 1 to the number of documents ({count}), got {top_n!r}"
    return None


def check_field(name: str, value: Any) -> str | None:
    """What is wrong with one task input field, or None."""
    if name in TEXT_FIELDS:
        if not isinstance(value, str):
            return f"{name!r} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"{name!r} is empty"
        return unencodable(value)
    if name in LIST_FIELDS:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            return f"{name!r} must be a non-empty list of non-empty strings"
        return unencodable(*value)
    if name in MEDIA_FIELDS:
        if isinstance(value, bool | int | float | list):
            return f"{name!r} must be a file path, a URL or a dataset {name} value, got {type(value).__name__}"
        if isinstance(value, str) and not value.strip():
            return f"{name!r} is empty"
    return None


def unencodable(*texts: str | None) -> str | None:
    """A problem when a text holds something no tokenizer can encode (a lone UTF-16 surrogate from a JSON
    escape such as "\\ud800")."""
    for text in texts:
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start].encode("utf-8", "backslashreplace").decode()
            return f"text holds a lone surrogate ({bad}) at position {exc.start}, which no tokenizer can encode"
    return None


def check_messages(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"'messages[{i}]' must be an object with string 'role' and 'content'"
    return None


INPUT_KEYS = frozenset({"prompt", "messages", "generation", "template", *PROMPT_ALIASES, "texts"})
"""Keys an input record uses as model inputs or settings in every task (a task's own fields aside)."""


def carried_fields(obj: dict[str, Any], consumed: Iterable[str], template: str | None = None) -> dict[str, Any] | None:
    """The fields of input object `obj` that are not model inputs: not the id, the prompt or messages (under any
    configured name, `consumed`), a generation override, the columns `template` fills, or a task's fields. They
    travel into the record's row, so a run can be scored later against a reference the input carried. Only
    JSON values travel (a dataset's decoded image column does not); None when there are none. An OpenAI batch
    request carries nothing (its line is the request)."""
    if openai.is_openai_request(obj):
        return None
    skip = {*INPUT_KEYS, *GENERATION_KEYS, *consumed, *template_fields(template)}
    out = {k: v for k, v in obj.items() if k not in skip and is_json_value(v)}
    return out or None


def template_fields(template: str | None) -> set[str]:
    """The column names `input.template` fills (`{question}` → question)."""
    if template is None:
        return set()
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        return set()


def is_json_value(value: Any, depth: int = 0) -> bool:
    """A plain JSON value (str, number, bool, null, or lists and objects of them), at most 32 levels deep."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(is_json_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v, depth + 1) for k, v in value.items())
    return False


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _FieldsOnly(string.Formatter):
    """str.format that fills plain `{name}` fields only: `{x.attr}` or `{x[0]}` would let a template reach
    into Python objects (`{q.__class__.__mro__}`)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise ValueError(f"template field {{{field_name}}} is not a plain column name")
        return super().get_field(field_name, args, kwargs)


def fill_template(template: str, fields: dict[str, Any]) -> str:
    """`input.template` filled from a record's fields; raises ValueError/KeyError naming what is wrong."""
    return _FieldsOnly().vformat(template, (), fields)
