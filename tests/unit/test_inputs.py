"""Reading JSONL files and datasets: good records kept in order with ids, bad ones become error records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnirun import inputs
from omnirun.config import InputConfig
from omnirun.errors import InputError

from samples import must


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def test_jsonl_ids_prompts_messages_and_overrides(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            '{"prompt": "first"}',
            "",
            '{"id": "q2", "prompt": "second", "max_new_tokens": 7}',
            '{"messages": [{"role": "user", "content": "hi"}], "generation": {"temperature": 0.1}}',
        ],
    )
    data = inputs.read(InputConfig(path=str(path)))
    assert data.source == "jsonl"
    assert [r.id for r in data.records] == ["1", "q2", "4"]
    assert [r.index for r in data.records] == [0, 1, 2]
    assert data.records[0].prompt == "first"
    assert data.records[1].overrides == {"max_new_tokens": 7}
    assert data.records[2].messages == [{"role": "user", "content": "hi"}]
    assert data.records[2].overrides == {"temperature": 0.1}
    assert data.fingerprint == inputs.sha256(path.read_bytes())
    assert not data.problems


def test_jsonl_bad_lines_become_errors_naming_the_line(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl",
        [
            '{"prompt": "ok"}',
            '{"prompt": "unterminated',
            '{"prompt": ""}',
            '{"prompt": 3}',
            '{"text": "no prompt"}',
            b'{"prompt": "\xff\xfe"}',
            "[1, 2]",
            '{"messages": [{"role": "user"}]}',
            '{"prompt": "x", "temperature": -2}',
            '{"prompt": "last"}',
        ],
    )
    data = inputs.read(InputConfig(path=str(path)))
    errors = {r.id: r.error for r in data.records}
    assert errors["1"] is None and errors["10"] is None
    assert "line 2: not valid JSON" in must(errors["2"])
    assert "line 3: 'prompt' is empty" in must(errors["3"])
    assert "line 4: 'prompt' must be a string" in must(errors["4"])
    assert "line 5: missing 'prompt'" in must(errors["5"])
    assert "line 6: invalid UTF-8" in must(errors["6"])
    assert "line 7: expected a JSON object" in must(errors["7"])
    assert "line 8: 'messages[0]'" in must(errors["8"])
    assert "line 9: bad generation override" in must(errors["9"]) and "temperature" in must(errors["9"])
    assert len(data.problems) == 8


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "is empty"), (b"\n\n", "is empty"), (b"hello\nworld\n", "is not JSONL")],
)
def test_unreadable_inputs_stop_at_once(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "in.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        inputs.read(InputConfig(path=str(path)))


def test_limit_and_single_prompt(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [json.dumps({"prompt": f"p{i}"}) for i in range(10)])
    assert len(inputs.read(InputConfig(path=str(path), limit=3)).records) == 3
    one = inputs.read(InputConfig(prompt="hello"))
    assert one.source == "prompt" and one.records[0].prompt == "hello"
    default = inputs.read(InputConfig())
    assert default.records[0].prompt == inputs.DEFAULT_PROMPT
    assert inputs.read(InputConfig(), interactive_when_empty=True).source == "interactive"
    assert inputs.read(InputConfig(prompt="x"), interactive_when_empty=True).source == "prompt"


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import datasets

    folder = tmp_path_factory.mktemp("ds") / "saved"
    ds = datasets.Dataset.from_dict(
        {"question": ["What is 1+1?", "Name a fruit.", "Say hi."], "qid": ["a", "b", "c"], "prompt": ["x", "y", "z"]}
    )
    ds.save_to_disk(str(folder))
    return folder


def test_dataset_from_disk_with_field_template_and_ids(saved_dataset: Path) -> None:
    by_field = inputs.read(InputConfig(dataset=str(saved_dataset), field="question", id_field="qid"))
    assert by_field.source == "dataset"
    assert [r.prompt for r in by_field.records] == ["What is 1+1?", "Name a fruit.", "Say hi."]
    assert [r.id for r in by_field.records] == ["a", "b", "c"]
    assert by_field.fingerprint
    templated = inputs.read(InputConfig(dataset=str(saved_dataset), template="Q: {question}\nA:", limit=2))
    assert [r.prompt for r in templated.records] == ["Q: What is 1+1?\nA:", "Q: Name a fruit.\nA:"]


def test_dataset_missing_column_names_the_columns(saved_dataset: Path) -> None:
    with pytest.raises(InputError, match="input.field='text' is not a column.*question"):
        inputs.read(InputConfig(dataset=str(saved_dataset), field="text"))


def test_dataset_bad_template_row_is_an_error_record(saved_dataset: Path) -> None:
    data = inputs.read(InputConfig(dataset=str(saved_dataset), template="{missing}"))
    assert all("input.template cannot be filled" in must(r.error) for r in data.records)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_dataset_from_local_files(tmp_path: Path, suffix: str) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"prompt": ["a", "b"], "other": [1, 2]})
    path = tmp_path / f"data{suffix}"
    {".parquet": ds.to_parquet, ".csv": ds.to_csv, ".jsonl": ds.to_json}[suffix](str(path))
    data = inputs.read(InputConfig(dataset=str(path)))
    assert [r.prompt for r in data.records] == ["a", "b"]


def test_dataset_messages_column(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "chat"
    datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}]]}).save_to_disk(str(folder))
    data = inputs.read(InputConfig(dataset=str(folder)))
    assert data.records[0].messages == [{"role": "user", "content": "hi"}]


def test_missing_local_dataset_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        inputs.read(InputConfig(dataset=str(tmp_path / "nothing")))


GOOD = st.builds(
    lambda p, i: json.dumps({"id": f"g{i}", "prompt": p, "__good__": True}),
    st.text(min_size=1).filter(lambda s: s.strip()),
    st.integers(0, 10**6),
)


JUNK = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s).map(str.encode),
    st.builds(json.dumps, st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)).map(
        str.encode
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(GOOD.map(str.encode), JUNK), min_size=1, max_size=20))
def test_fuzz_reader_never_crashes_and_keeps_every_good_record(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    good = [json.loads(x) for x in lines if b'"__good__": true' in x]
    try:
        data = inputs.read(InputConfig(path=str(path)))
    except InputError:
        assert not good  # only a file with no good record may be refused as a whole
        return
    kept = {(r.id, r.prompt) for r in data.records if r.error is None}
    for obj in good:
        assert (obj["id"], obj["prompt"]) in kept
