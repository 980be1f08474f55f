"""A fuzzer over input records, driving the real runner (CLI in-process) on a tiny model with a chat template.

For every generated input file: exit 0, one row per input line in input order, every known-good record has an
output, and every row has either an output or an error (never both, never neither).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clirun import omnirun, only_run_dir

ANY_TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)  # surrogates, controls


SAFE_TEXT = st.text(alphabet="abcdefghij klmnop?.,", min_size=1, max_size=30).filter(lambda s: s.strip() != "")


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
)


JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=6
)


PARAMS = ("max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "do_sample", "num_beams",
          "repetition_penalty", "no_repeat_ngram_size", "length_penalty", "early_stopping")  # fmt: skip


GOOD_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": st.integers(1, 4),
        "temperature": st.floats(0.1, 1.5),
        "top_k": st.integers(0, 50),
        "do_sample": st.booleans(),
        "repetition_penalty": st.floats(0.5, 2.0),
    },
)


@st.composite
def good_record(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict(draw(GOOD_PARAMS))
    if record.get("do_sample") is False:
        record.pop("temperature", None)
    if draw(st.booleans()):
        record["prompt"] = draw(SAFE_TEXT)
    else:
        record["messages"] = [{"role": "user", "content": draw(SAFE_TEXT)}]
    if draw(st.booleans()):
        record["id"] = draw(JSON_SCALARS.filter(lambda v: v is not None))
    return record


@st.composite
def any_record(draw: Any) -> Any:
    record = draw(st.dictionaries(st.sampled_from(["prompt", "messages", "id", *PARAMS]), JSON_VALUES, max_size=5))
    if draw(st.booleans()):
        record["prompt"] = draw(ANY_TEXT)
    return record if draw(st.integers(0, 9)) else draw(JSON_VALUES)  # now and then not an object at all


LINES = st.lists(
    st.one_of(good_record().map(lambda r: (True, r)), any_record().map(lambda r: (False, r))), min_size=1, max_size=6
)


"""(known good, the line's JSON value) pairs."""


def expected_id(obj: Any, lineno: int) -> str:
    raw = str(obj["id"]) if isinstance(obj, dict) and obj.get("id") is not None else str(lineno)
    return re.sub("[\ud800-\udfff]", "\ufffd", raw)  # outputs.jsonl is strict UTF-8 JSON: U+FFFD in its place


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines=LINES, bom=st.booleans(), batch=st.sampled_from(["1", "4"]))
def test_every_line_gets_exactly_one_row(
    tmp_path_factory: Any, tiny_llama: Path, lines: list[tuple[bool, Any]], bom: bool, batch: str
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    text = "".join(json.dumps(obj) + "\n" for _, obj in lines)  # ensure_ascii: surrogates travel as escapes
    (tmp / "in.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("ascii"))
    code = omnirun(
        tmp / "out", f"model.name={tiny_llama}", f"input.path={tmp / 'in.jsonl'}", "task=chat",
        "generation.max_new_tokens=3", f"task.batch_size={batch}",
    )  # fmt: skip
    if len(lines) == 1 and isinstance(lines[0][1], list):  # one line holding a list: a JSON array file
        elements = lines[0][1]
        if not any(isinstance(e, dict) for e in elements):
            assert code == 2  # an array with no object in it, refused before the model loads
            return
        assert code == 0
        rows = [json.loads(line) for line in (only_run_dir(tmp / "out") / "outputs.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [expected_id(e, n) for n, e in enumerate(elements, start=1)]
        return
    if all(not isinstance(obj, dict) for _, obj in lines):
        assert code == 2  # no line is a JSON object: not JSONL at all, refused before the model loads
        return
    assert code == 0
    raw = (only_run_dir(tmp / "out") / "outputs.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    rows = [json.loads(line) for line in raw]
    assert [r["id"] for r in rows] == [expected_id(obj, n) for n, (_, obj) in enumerate(lines, start=1)]
    for row in rows:
        assert (row["output"] is None) != (row["error"] is None), row
    for row, (good, _) in zip(rows, lines, strict=True):
        if good:
            assert row["error"] is None and row["output"] is not None, row
