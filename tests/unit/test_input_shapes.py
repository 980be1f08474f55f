"""Real-world input shapes: compressed files (gzip, bz2, xz, zstd; told by content, not name), JSON arrays and
CSV through input.path, shards by folder or glob, streamed datasets, and broken files (truncated streams, ragged
rows, huge lines) that keep what could be read and say in one line what went wrong."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from omnirun import inputs
from omnirun.config import InputConfig
from omnirun.errors import InputError
from omnirun.inputs import compressed

from samples import must

COMPRESS = {
    "gzip": gzip.compress,
    "bz2": lambda data: bz2.compress(data, 1),  # 100 kB blocks: a cut file still holds whole blocks
    "xz": lzma.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
SUFFIX = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst"}


def jsonl(n: int, start: int = 0) -> bytes:
    """n distinct prompt lines (varied enough that compression does not shrink them to a few bytes)."""
    return b"".join(
        json.dumps({"prompt": f"prompt {i} {hashlib.md5(str(i).encode()).hexdigest()}"}).encode() + b"\n"
        for i in range(start, start + n)
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read(**kw: Any) -> inputs.Inputs:
    return inputs.read(InputConfig(**kw))


def one_line_error(**kw: Any) -> str:
    with pytest.raises(InputError) as info:
        read(**kw)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# Compressed JSONL through input.path


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_compressed_jsonl_keeps_line_numbers_and_error_rows(tmp_path: Path, kind: str) -> None:
    body = b'{"prompt": "first"}\nnot json\n\n{"id": "q4", "prompt": "fourth"}\r\n{"prompt": ""}\n'
    plain = inputs.read(InputConfig(path=str(write(tmp_path / "plain.jsonl", body))))
    path = write(tmp_path / f"in.jsonl{SUFFIX[kind]}", COMPRESS[kind](body))
    data = read(path=str(path))
    assert [(r.id, r.prompt, r.error) for r in data.records] == [(r.id, r.prompt, r.error) for r in plain.records]
    assert [r.id for r in data.records] == ["1", "2", "q4", "5"]
    assert "line 2: not valid JSON" in must(data.records[1].error)
    assert data.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()  # the stored bytes, not the text


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_compression_is_told_by_content_not_name(tmp_path: Path, kind: str) -> None:
    body = jsonl(3)
    misnamed = read(path=str(write(tmp_path / "data.jsonl", COMPRESS[kind](body))))
    plain_as_gz = read(path=str(write(tmp_path / "plain.jsonl.gz", body)))
    assert [r.prompt for r in misnamed.records] == [r.prompt for r in plain_as_gz.records]
    assert len(misnamed.records) == 3 and not misnamed.problems


LOOKALIKES = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00", b"BZh91AY&SY", b"\x28\xb5\x2f\xfd\x00", b"PAR1", b"["]


@pytest.mark.parametrize("first", LOOKALIKES)
def test_plain_file_that_starts_like_another_format_stays_jsonl(tmp_path: Path, first: bytes) -> None:
    path = write(tmp_path / "in.jsonl", first + b"\n" + jsonl(2))
    data = read(path=str(path))
    assert [r.error is None for r in data.records] == [False, True, True]
    assert must(data.records[0].error).startswith("line 1: ")


def test_concatenated_streams_are_all_read(tmp_path: Path) -> None:
    gz = write(tmp_path / "cat.jsonl.gz", gzip.compress(jsonl(2)) + gzip.compress(jsonl(3, start=2)) + b"\0" * 8)
    zst = write(tmp_path / "cat.jsonl.zst", COMPRESS["zstd"](jsonl(2)) + COMPRESS["zstd"](jsonl(3, start=2)))
    for path in (gz, zst):
        assert [r.id for r in read(path=str(path)).records] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("kind", list(COMPRESS))
def test_truncated_stream_keeps_the_lines_before_the_break(tmp_path: Path, kind: str) -> None:
    whole = COMPRESS[kind](jsonl(5000))
    path = write(tmp_path / f"cut.jsonl{SUFFIX[kind]}", whole[: len(whole) * 3 // 4])
    data = read(path=str(path))
    *good, last = data.records
    assert len(good) > 100 and all(r.error is None for r in good)
    assert [r.id for r in good] == [str(i) for i in range(1, len(good) + 1)]
    assert last.id == str(len(good) + 1) and f"line {len(good) + 1}" in must(last.error)
    assert "cut.jsonl" in must(last.error) and "ends early" in must(last.error)
    assert data.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_stream_cut_before_any_line_is_one_input_error(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.jsonl.gz", gzip.compress(jsonl(1))[:12])
    message = one_line_error(path=str(path))
    assert "input.path=" in message and "cut.jsonl.gz" in message and "ends early" in message


def test_corrupt_stream_is_an_error_record(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(jsonl(5000)))
    whole[len(whole) // 2 : len(whole) // 2 + 64] = b"\xff" * 64
    data = read(path=str(write(tmp_path / "bad.jsonl.gz", bytes(whole))))
    assert "corrupt gzip data" in must(data.records[-1].error) and "bad.jsonl.gz" in must(data.records[-1].error)
    assert data.records[0].error is None


def test_limit_stops_before_a_later_break(tmp_path: Path) -> None:
    whole = gzip.compress(jsonl(5000))
    data = read(path=str(write(tmp_path / "cut.jsonl.gz", whole[: len(whole) // 2])), limit=10)
    assert len(data.records) == 10 and not data.problems


def test_huge_line_is_an_error_record_and_reading_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compressed, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(compressed, "CHUNK", 64)
    body = b'{"prompt": "a"}\n{"prompt": "' + b"x" * 5000 + b'"}\n{"prompt": "c"}\n'
    data = read(path=str(write(tmp_path / "huge.jsonl.xz", lzma.compress(body))))
    assert [r.id for r in data.records] == ["1", "2", "3"]
    assert "line 2: 5,015 bytes, over the 1,000-byte limit" in must(data.records[1].error)
    assert data.records[2].prompt == "c"


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200).map(lambda b: b.replace(b"a", b"\r").replace(b"b", b"\n")), chunk=st.integers(1, 9))
def test_lines_split_as_bytes_splitlines_whatever_the_chunking(data: bytes, chunk: int) -> None:
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    assert list(compressed.split_lines(compressed.whole_line_endings(chunks), keepends=False)) == data.splitlines()


# JSON arrays through input.path


@pytest.mark.parametrize("suffix", [".json", ".json.zst"])
def test_json_array_elements_become_records(tmp_path: Path, suffix: str) -> None:
    body = b'[\n  {"prompt": "x"},\n  {"prompt": ""},\n  3,\n  {"id": "Y", "prompt": "y", "max_new_tokens": 4}\n]\n'
    path = write(tmp_path / f"arr{suffix}", COMPRESS["zstd"](body) if suffix.endswith(".zst") else body)
    data = read(path=str(path))
    assert [r.id for r in data.records] == ["1", "2", "3", "Y"]
    assert data.records[0].prompt == "x" and data.records[3].overrides == {"max_new_tokens": 4}
    assert data.records[1].error == "element 2 (line 3): 'prompt' is empty"
    assert "element 3 (line 4): expected a JSON object" in must(data.records[2].error)
    assert data.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_array_syntax_error_keeps_the_elements_before(tmp_path: Path) -> None:
    data = read(path=str(write(tmp_path / "a.json", b'[{"prompt": "x"},\n{"prompt": oops}, {"prompt": "z"}]')))
    assert data.records[0].prompt == "x"
    assert "element 2 (line 2): not valid JSON" in must(data.records[1].error) and len(data.records) == 2


def test_truncated_compressed_array_keeps_the_elements_before(tmp_path: Path) -> None:
    body = json.dumps([{"prompt": f"p{i} {hashlib.md5(str(i).encode()).hexdigest()}"} for i in range(3000)])
    whole = gzip.compress(body.encode())
    data = read(path=str(write(tmp_path / "a.json.gz", whole[: len(whole) // 2])))
    *good, last = data.records
    assert len(good) > 100 and not any(r.error for r in good)
    assert "a.json.gz" in must(last.error) and "ends early" in must(last.error)


@pytest.mark.parametrize(
    ("body", "message"), [(b" [ ] ", "is an empty JSON array"), (b"[oops, 1]", "is not a valid JSON array")]
)
def test_unusable_json_array_is_one_input_error(tmp_path: Path, body: bytes, message: str) -> None:
    assert message in one_line_error(path=str(write(tmp_path / "a.json", body)))


def test_jsonl_whose_first_line_is_an_array_stays_jsonl(tmp_path: Path) -> None:
    data = read(path=str(write(tmp_path / "a.jsonl", b'[1]\n{"prompt": "z"}\n')))
    assert "line 1: expected a JSON object" in must(data.records[0].error) and data.records[1].prompt == "z"


# CSV through input.path


def test_csv_rows_with_ragged_rows_as_errors(tmp_path: Path) -> None:
    body = b'id,question,temperature\nq1,"what is\nup",x\nq2,hi\n\nq4,,0.5\nq5,ok,0.1,extra\nq6,fine,0\n'
    path = write(tmp_path / "q.csv.bz2", bz2.compress(body))
    data = read(path=str(path), field="question")
    assert [r.id for r in data.records] == ["q1", "4", "q4", "7", "q6"]
    assert data.records[0].prompt == "what is\nup" and data.records[0].overrides == {}  # csv values are text
    assert must(data.records[1].error).startswith("line 4: 2 fields where the header has 3")
    assert data.records[2].error == "line 6: 'prompt' is empty"
    assert must(data.records[3].error).startswith("line 7: 4 fields")
    templated = read(path=str(path), template="Q: {question}", limit=1)
    assert [r.prompt for r in templated.records] == ["Q: what is\nup"]


def test_tsv_and_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "q.tsv", b"text\tn\nhello, world\t1\n")
    assert read(path=str(path), field="text").records[0].prompt == "hello, world"
    message = one_line_error(path=str(path))
    assert "input.field='prompt' is not a column" in message and "text, n" in message


def test_csv_invalid_utf8_and_truncation(tmp_path: Path) -> None:
    body = b"prompt\nok\nbad \xff byte\n" + b"".join(f"row {i} {i * 7919}\n".encode() for i in range(20000))
    whole = gzip.compress(body)
    data = read(path=str(write(tmp_path / "q.csv.gz", whole[: len(whole) // 2])))
    assert data.records[0].prompt == "ok" and data.records[1].error == "line 3: invalid UTF-8"
    assert "ends early" in must(data.records[-1].error) and data.records[-2].error is None


# Misc input.path


def test_folder_and_parquet_given_as_path_say_what_to_use(tmp_path: Path) -> None:
    import datasets

    assert "use input.dataset" in one_line_error(path=str(tmp_path))
    datasets.Dataset.from_dict({"prompt": ["a"]}).to_parquet(str(tmp_path / "d.parquet"))
    assert "input.dataset=" in one_line_error(path=str(tmp_path / "d.parquet"))


# Datasets: compressed files, shards, streaming


def to_file(tmp_path: Path, name: str, rows: dict[str, list[object]]) -> Path:
    import datasets

    ds = datasets.Dataset.from_dict(rows)
    path = tmp_path / name
    suffix = compressed.data_suffix(name)
    if suffix == ".parquet":
        ds.to_parquet(str(path))
        return path
    plain = tmp_path / f"plain{suffix}"
    if suffix == ".csv":
        ds.to_csv(str(plain), index=False)
    else:
        ds.to_json(str(plain))
    kind = compressed.compression_named(name)
    path.write_bytes(COMPRESS[kind](plain.read_bytes()) if kind else plain.read_bytes())
    return path


@pytest.mark.parametrize("name", ["d.jsonl.gz", "d.jsonl.zst", "d.csv.bz2", "d.json.xz"])
@pytest.mark.parametrize("streaming", [False, True])
def test_dataset_from_compressed_files(tmp_path: Path, name: str, streaming: bool) -> None:
    path = to_file(tmp_path, name, {"prompt": ["a", "b", "c"], "id": ["x", "y", "z"]})
    data = read(dataset=str(path), streaming=streaming)
    assert [(r.id, r.prompt) for r in data.records] == [("x", "a"), ("y", "b"), ("z", "c")]
    assert data.fingerprint


@pytest.mark.parametrize("streaming", [False, True])
def test_dataset_misnamed_files_read_by_content(tmp_path: Path, streaming: bool) -> None:
    body = b'{"prompt": "a"}\n{"prompt": "b"}\n'
    gz_as_plain = write(tmp_path / "gz.jsonl", gzip.compress(body))
    plain_as_gz = write(tmp_path / "plain.jsonl.gz", body)
    for path in (gz_as_plain, plain_as_gz):
        assert [r.prompt for r in read(dataset=str(path), streaming=streaming).records] == ["a", "b"]


def test_dataset_file_without_suffix_is_sniffed(tmp_path: Path) -> None:
    write(tmp_path / "blob", gzip.compress(b'{"prompt": "a"}\n'))
    assert read(dataset=str(tmp_path / "blob")).records[0].prompt == "a"
    write(tmp_path / "notes", b"just some text")
    assert "unknown file type" in one_line_error(dataset=str(tmp_path / "notes"))


@pytest.mark.parametrize("streaming", [False, True])
def test_parquet_shards_by_glob_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    shards = tmp_path / "data"
    shards.mkdir()
    for k in range(3):
        to_file(shards, f"train-{k}.parquet", {"question": [f"q{k}a", f"q{k}b"]})
    monkeypatch.chdir(tmp_path)
    by_glob = read(dataset="data/*.parquet", field="question", streaming=streaming)
    by_folder = read(dataset=str(shards), field="question", streaming=streaming)
    expected = [f"q{k}{x}" for k in range(3) for x in "ab"]
    assert sorted(must(r.prompt) for r in by_glob.records) == expected
    assert sorted(must(r.prompt) for r in by_folder.records) == expected


def test_jsonl_gz_shards_by_glob(tmp_path: Path) -> None:
    for k in range(2):
        write(tmp_path / f"s{k}.jsonl.gz", gzip.compress(jsonl(3, start=3 * k)))
    write(tmp_path / "notes.txt", b"not a shard")
    data = read(dataset=str(tmp_path / "*.jsonl.gz"))
    assert len(data.records) == 6 and not data.problems


def test_glob_matching_nothing_or_mixed_kinds(tmp_path: Path) -> None:
    assert "matches no file" in one_line_error(dataset=str(tmp_path / "*.parquet"))
    write(tmp_path / "a.jsonl", jsonl(1))
    write(tmp_path / "b.csv", b"prompt\nx\n")
    message = one_line_error(dataset=str(tmp_path / "*"))
    assert "kinds .csv, .jsonl" in message and "narrow the pattern" in message


def test_streaming_stops_at_the_limit(tmp_path: Path) -> None:
    write(tmp_path / "s0.jsonl.gz", gzip.compress(jsonl(3)))
    whole = gzip.compress(jsonl(5000, start=3))
    write(tmp_path / "s1.jsonl.gz", whole[: len(whole) // 2])  # never reached: the limit comes first
    data = read(dataset=str(tmp_path / "*.jsonl.gz"), streaming=True, limit=2)
    assert [must(r.prompt)[:8] for r in data.records] == ["prompt 0", "prompt 1"] and not data.problems


def test_stream_breaking_part_way_keeps_the_rows_before(tmp_path: Path) -> None:
    write(tmp_path / "s0.jsonl.gz", gzip.compress(jsonl(3)))
    whole = gzip.compress(jsonl(5000, start=3))
    write(tmp_path / "s1.jsonl.gz", whole[: len(whole) // 2])
    data = read(dataset=str(tmp_path / "*.jsonl.gz"), streaming=True)
    assert [r.error is None for r in data.records] == [True, True, True, False]
    assert "row 3: input.dataset=" in must(data.records[3].error) and "EOFError" in must(data.records[3].error)


def test_streaming_fingerprint_is_a_content_hash(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl.gz", gzip.compress(jsonl(3)))
    first = read(dataset=str(path), streaming=True).fingerprint
    assert first == read(dataset=str(path), streaming=True, limit=1).fingerprint
    write(path, gzip.compress(jsonl(3, start=1)))
    assert read(dataset=str(path), streaming=True).fingerprint != first


@pytest.mark.parametrize("streaming", [False, True])
def test_dataset_bad_files_are_one_line_errors(tmp_path: Path, streaming: bool) -> None:
    parquet = to_file(tmp_path, "d.parquet", {"text": ["a"], "n": [1]})
    message = one_line_error(dataset=str(parquet), streaming=streaming)
    assert "input.field='prompt' is not a column" in message and "n, text" in message
    ragged = write(tmp_path / "r.csv", b"prompt,x\na,1\nb,2,3\n")
    message = one_line_error(dataset=str(ragged), streaming=streaming)
    assert "input.dataset=" in message and "Expected 2 fields in line 3" in message and "input.path" in message
    whole = gzip.compress(jsonl(50))
    cut = write(tmp_path / "cut.jsonl.gz", whole[: len(whole) // 2])
    message = one_line_error(dataset=str(cut), streaming=streaming)
    assert "cut.jsonl.gz" in message and "EOFError" in message
