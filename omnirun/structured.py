"""Structured output: the `response_format` a run or a record asks for (OpenAI's shapes, plus a regex), checked
into one normal form before anything loads; the constrained decoder both backends share; and the check of an
output against its format (`output_problem`, `valid_rate`).

Constrained decoding uses llguidance (a Rust library, no dependencies of its own): a format becomes a grammar
(`grammar`), the grammar is compiled once per tokenizer (`Grammars`), and each row of a batch gets its own
matcher, which says which tokens may come next (`RowConstraints.masks`); the backends set the others to -inf
before sampling. JSON is written in one layout, as Python's `json.dumps` writes it (`", "` and `": "`, no other
whitespace): free whitespace lets a model pad an answer with blanks until max_new_tokens runs out. A schema may
override that with llguidance's `x-guidance` key, e.g. `{"x-guidance": {"whitespace_flexible": true}, ...}`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omnirun.errors import ConfigError

TYPES = ("text", "json_object", "json_schema", "regex")
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How constrained JSON is laid out (llguidance's JSON compile options)."""
ANY_OBJECT = {"type": "object"}
"""The schema `json_object` stands for: any JSON object."""


def check_response_format(value: Any, key: str = "generation.response_format") -> dict[str, Any] | None:
    """`value` as a plain dict `{type: ...}` (None for free text); ConfigError naming `key` when it is malformed
    or when the constrained decoder cannot compile it (an invalid schema, a regex with look-around)."""
    if value is None:
        return None
    if isinstance(value, str):
        import yaml

        with contextlib.suppress(yaml.YAMLError):
            value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping such as {{type: json_object}}, got {value!r}")
    fmt = plain(value)
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
    problem = compile_problem(canonical(fmt))
    if problem is not None:
        raise ConfigError(f"{key}: {problem}")
    return fmt


def plain(value: Any) -> Any:
    """`value` with every mapping a dict (string keys) and every other sequence than a string a list, recursively
    (a config framework's containers become the JSON values a schema is made of)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def canonical(fmt: Mapping[str, Any]) -> str:
    """The format as compact JSON: the key every compiled grammar is cached under. Key order is kept, not sorted:
    a schema's properties are generated in the order it lists them."""
    return json.dumps(fmt, separators=(",", ":"), ensure_ascii=False, default=str)


def schema_of(fmt: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a format asks for (`json_object`: any object); None for a regex."""
    if fmt["type"] == "json_object":
        return ANY_OBJECT
    if fmt["type"] == "json_schema":
        return dict(fmt["json_schema"]["schema"])
    return None


@functools.lru_cache(maxsize=256)
def grammar(key: str, after: str | None = None) -> str:
    """The llguidance grammar for the format whose `canonical` JSON is `key` (ValueError when malformed). With
    `after` (a reasoning model's closing thinking delimiter, `omnirun.reasoning`), the format applies to the
    answer only: any text up to the first `after` comes first (the thinking, free), then optional whitespace,
    then the format."""
    from llguidance import LLMatcher

    fmt = json.loads(key)
    schema = schema_of(fmt)
    if after is not None:
        if schema is None:
            answer = "/" + fmt["pattern"].replace("/", "\\/") + "/"
        else:
            answer = "%json " + json.dumps({"x-guidance": JSON_OPTIONS, **schema})
        close = re.escape(after).replace("/", "\\/")
        lark = f"start: think gap answer\nthink[lazy]: /(?s:.*){close}/\ngap: /[ \\t\\r\\n]*/\nanswer: {answer}\n"
        return str(LLMatcher.grammar_from_lark(lark))
    if schema is None:
        return str(LLMatcher.grammar_from_regex(fmt["pattern"]))
    return str(LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=256)
def compile_problem(key: str) -> str | None:
    """Why the format `key` (canonical JSON) cannot be enforced, with the fix; None when it can (or when llguidance
    is not installed: generation then says so). Needs no tokenizer, so a run can check its format before loading."""
    try:
        from llguidance import LLMatcher
    except ImportError:
        return None
    fmt = json.loads(key)
    schema = schema_of(fmt)
    if schema is not None and (problem := schema_problem(schema)):
        return f"json_schema.schema is not a valid JSON schema: {problem}; fix the schema"
    try:
        message = str(LLMatcher.validate_grammar(grammar(key)))
    except ValueError as exc:
        message = str(exc)
    if not message:
        from omnirun.satisfiable import never_matches

        if never_matches(grammar(key)):
            what = f"pattern {fmt['pattern']!r}" if schema is None else "the schema"
            return f"{what} can never be matched: no output satisfies it; fix the {what.split()[0]}"
        return None
    if schema is None:
        return (
            f"pattern {fmt['pattern']!r} is not supported by the constrained decoder ({short(message)}); rewrite it "
            "without look-around or back-references"
        )
    return f"the schema cannot be enforced by the constrained decoder ({short(message)}); simplify the schema"


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What makes `schema` invalid under its metaschema (with the `jsonschema` package; None without it)."""
    try:
        import jsonschema
    except ImportError:
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"{exc.message}" + (f" (at {where})" if where else "")
    return None


def short(message: str) -> str:
    """The line of a (multi-line) llguidance message that says what is wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    error = next((line.removeprefix("error: ") for line in lines if line.startswith("error:")), None)
    return error or (lines[0] if lines else message)


class FormatError(ValueError):
    """A response_format the constrained decoder cannot serve with this tokenizer."""


class Grammars:
    """The constrained decoder for one tokenizer: its llguidance tokenizer, and every format compiled once (a
    template matcher; each row gets a copy). Backends keep one per loaded tokenizer, so a run compiles each
    distinct format once."""

    def __init__(self, tokenizer: Any, eos: Iterable[int]) -> None:
        self.tokenizer = tokenizer
        """An `llguidance.LLTokenizer`."""
        self.eos = frozenset(int(t) for t in eos)
        self.compiled: dict[tuple[str, str | None], Any] = {}
        """(canonical format, thinking delimiter) -> template matcher, or the error message it failed with."""

    def matcher(self, fmt: Mapping[str, Any], after: str | None = None) -> Any:
        """A fresh matcher for `fmt` (applied after the closing thinking delimiter `after`, when given);
        FormatError when it does not compile."""
        from llguidance import LLMatcher

        key = canonical(fmt)
        template = self.compiled.get((key, after))
        if template is None:
            try:
                template = LLMatcher(self.tokenizer, grammar(key, after), log_level=0)
                if template.is_error():
                    template = short(template.get_error())
            except ValueError as exc:
                template = short(str(exc))
            self.compiled[(key, after)] = template
        if isinstance(template, str):
            raise FormatError(f"response_format {fmt['type']} cannot be compiled: {template}")
        return template.deep_copy()

    def rows(self, formats: Sequence[Mapping[str, Any] | None], after: str | None = None) -> RowConstraints:
        """A matcher for each row with a format (None for free rows); `after`: see `matcher`."""
        matchers = [None if f is None else self.matcher(f, after) for f in formats]
        return RowConstraints(matchers, self.eos, int(self.tokenizer.vocab_size))


class RowConstraints:
    """The matchers of one batch, one per row (None: the row is free text). Feed each row's sampled tokens to
    `advance`; `masks` says which tokens each live row may take next. A row is done once it produced an
    end-of-sequence token (its later tokens are padding)."""

    def __init__(self, matchers: list[Any | None], eos: Iterable[int], vocab_size: int) -> None:
        self.matchers = matchers
        self.eos = frozenset(eos)
        self.vocab_size = vocab_size
        self.done = [m is None for m in matchers]
        self.problems: dict[int, str] = {}
        """row -> why its matcher gave up (a token the grammar refused): the row goes on unconstrained."""

    def live(self) -> list[int]:
        """The rows still constrained."""
        return [row for row, done in enumerate(self.done) if not done]

    def advance(self, row: int, token: int) -> None:
        """Row `row` produced `token`."""
        matcher = self.matchers[row]
        if self.done[row] or matcher is None:
            return
        if token in self.eos:
            self.done[row] = True
        elif not matcher.consume_token(token):
            self.problems[row] = str(matcher.get_error()) or f"token {token} refused"
            self.done[row] = True

    def masks(self, rows: Sequence[int], width: int) -> Any:
        """A (len(rows), width) numpy bool array: the tokens each row may take next (ids past the tokenizer's
        vocabulary never)."""
        import numpy as np

        words = (self.vocab_size + 31) // 32
        bits = np.zeros((len(rows), words), dtype=np.int32)
        for i, row in enumerate(rows):
            matcher = self.matchers[row]
            assert matcher is not None
            matcher.unsafe_compute_mask_ptr(bits[i].ctypes.data, words * 4)
        allowed = np.unpackbits(bits.view(np.uint8), axis=1, bitorder="little")[:, :width].astype(bool)
        if allowed.shape[1] < width:  # logits wider than the vocabulary (padded embeddings)
            allowed = np.pad(allowed, ((0, 0), (0, width - allowed.shape[1])))
        return allowed


# ------------------------------------------------------------------------------------------ checking outputs
def output_problem(text: str, fmt: Mapping[str, Any] | None) -> str | None:
    """Why `text` does not follow `fmt`; None when it does (always for free text). JSON must parse (`json_object`:
    to an object); `json_schema` is then validated with the `jsonschema` package when installed, else by
    `basic_problem`; a regex must match the whole text (`re.fullmatch`)."""
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt["type"] == "regex":
        return None if re.fullmatch(fmt["pattern"], text) else f"does not match {fmt['pattern']!r}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    schema = schema_of(fmt)
    assert schema is not None
    return instance_problem(value, schema)


def instance_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `value` does not validate against `schema` (None when it does)."""
    try:
        import jsonschema
    except ImportError:
        return basic_problem(value, schema)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.path)
    return error.message + (f" (at {where})" if where else "")


JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def basic_problem(value: Any, schema: Mapping[str, Any], at: str = "") -> str | None:
    """The check used without `jsonschema`: `type`, `enum`, `const`, `properties`, `required`,
    `additionalProperties`, `items`, `minItems` / `maxItems`, `minLength` / `maxLength`, `minimum` / `maximum`
    and `pattern` (re.search); other keywords (`$ref`, `anyOf`, `format`, ...) are not checked."""
    where = f" (at {at})" if at else ""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        is_bool = isinstance(value, bool)
        if not any(isinstance(value, JSON_TYPES.get(t, ())) and (t == "boolean" or not is_bool) for t in allowed):
            return f"{value!r} is not of type {types!r}{where}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{value!r} is not one of {schema['enum']!r}{where}"
    if "const" in schema and value != schema["const"]:
        return f"{value!r} is not {schema['const']!r}{where}"
    size: float | None = None
    low, high = "minimum", "maximum"
    if isinstance(value, str):
        size, low, high = len(value), "minLength", "maxLength"
    elif isinstance(value, list):
        size, low, high = len(value), "minItems", "maxItems"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        size = value
    if size is not None and low in schema and size < schema[low]:
        return f"{value!r} is below {low} {schema[low]}{where}"
    if size is not None and high in schema and size > schema[high]:
        return f"{value!r} is above {high} {schema[high]}{where}"
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{value!r} does not match {schema['pattern']!r}{where}"
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            if problem := basic_problem(item, schema["items"], f"{at}/{i}"):
                return problem
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                return f"{name!r} is a required property{where}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = properties.get(name, extra if isinstance(extra, Mapping) else None)
            if sub is None and extra is False:
                return f"additional property {name!r} is not allowed{where}"
            if isinstance(sub, Mapping) and (problem := basic_problem(item, sub, f"{at}/{name}")):
                return problem
    return None


def is_valid(text: str, fmt: Mapping[str, Any] | None) -> bool:
    """Whether `text` follows `fmt` (see `output_problem`)."""
    return output_problem(text, fmt) is None


def valid_counts(pairs: Iterable[tuple[Mapping[str, Any] | None, str | None]]) -> dict[str, tuple[int, int]]:
    """{format type: (outputs that follow their format, outputs)} over (format, output) pairs; free-text rows
    and rows without an output (error rows) are not counted."""
    counts: dict[str, tuple[int, int]] = {}
    for fmt, text in pairs:
        if fmt is None or fmt.get("type") in (None, "text") or text is None:
            continue
        valid, total = counts.get(fmt["type"], (0, 0))
        counts[fmt["type"]] = (valid + is_valid(text, fmt), total + 1)
    return counts


def valid_rate(pairs: Iterable[tuple[Mapping[str, Any] | None, str | None]]) -> dict[str, float]:
    """{format type: share of outputs (0..1) that follow their format}, e.g. {"json_schema": 0.95}; empty when
    no row asked for a format (see `valid_counts` for what is counted)."""
    return {kind: valid / total for kind, (valid, total) in valid_counts(pairs).items()}
