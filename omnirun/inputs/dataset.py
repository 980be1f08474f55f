"""Hugging Face datasets (`input.dataset`): a `save_to_disk` folder, a local data file (parquet, JSON/JSONL,
CSV/TSV, text, arrow; plain or compressed with gzip, bz2, xz or zstd), a folder or glob of shards
(`data/*.parquet`), or a hub name; read whole, or as a stream with `input.streaming=true`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs import compressed
from omnirun.inputs.guard import guarded
from omnirun.inputs.jsonl import new_record, texts_of
from omnirun.inputs.records import Inputs, Record, Records, carried_fields, fill_template, unencodable

if TYPE_CHECKING:
    from omnirun.inputs.records import InputSpec


def read_dataset(cfg: InputConfig, base: GenerationConfig | None = None, *, spec: InputSpec | None = None) -> Inputs:
    """The rows of `input.dataset` as records (at most `input.limit`; a stream stops reading there), read
    lazily after a first pass that keeps none (`Records.scan`; a stream is read twice). A stream that breaks
    part-way keeps the rows before the break and ends with one error record. `spec`: the columns
    a non-generation task reads (None: the prompt or the messages). Every later read is checked against the
    first (the row count and a rolling hash, `guard`): rows that change during the run stop it."""
    assert cfg.dataset is not None
    ds = undecoded_media(load_dataset_any(cfg.dataset, cfg.split, streaming=cfg.streaming))
    if cfg.limit is not None:
        ds = ds.take(cfg.limit) if is_stream(ds) else ds.select(range(min(cfg.limit, len(ds))))
    columns = column_names(ds, cfg.dataset)
    uses_messages = check_columns(cfg, columns) if spec is None else check_task_columns(cfg, columns, spec)
    opener = lambda: dataset_records(ds, cfg, uses_messages, base, spec)  # noqa: E731
    guard = guarded(opener, f"input.dataset={cfg.dataset!r}")  # a later read must give the same rows
    return Inputs(Records.scan(guard.open), "dataset", fingerprint(ds, cfg.dataset))


def undecoded_media(ds: Any) -> Any:
    """The dataset with its Image and Audio columns left as `{bytes, path}`: the task decodes each record's
    media itself (`inputs.media`), so one unreadable file is that record's error row, rows stay small, and audio
    needs no torchcodec."""
    import datasets

    features = getattr(ds, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image | datasets.Audio) and getattr(feature, "decode", False):
            ds = ds.cast_column(name, type(feature)(decode=False))
    return ds


def dataset_records(
    ds: Any, cfg: InputConfig, uses_messages: bool, base: GenerationConfig | None, spec: InputSpec | None
) -> Iterator[Record]:
    """The rows as records, as they are read; a break after some rows ends with one error record, a break
    before any is InputError."""
    assert cfg.dataset is not None
    n = 0
    try:
        for index, row in enumerate(iter_rows(ds)):
            yield row_record(index, row, cfg, uses_messages, base, spec)
            n += 1
            if cfg.limit is not None and n >= cfg.limit:  # a stream may read ahead of its take()
                return
    except StreamBreak as exc:
        if not n:
            raise InputError(unreadable(cfg.dataset, str(exc))) from None
        message = f"row {n}: input.dataset={cfg.dataset!r} stopped being readable ({exc})"
        yield Record(n, str(n), error=f"{message}; the rows before it (0 to {n - 1}) were read")


def check_columns(cfg: InputConfig, columns: list[str]) -> bool:
    """Whether rows are read as conversations (`input.messages_field`); InputError when neither the prompt
    column nor the messages column is there (and no template is given)."""
    uses_messages = cfg.messages_field in columns and cfg.template is None and cfg.field not in columns
    if not uses_messages and cfg.template is None and cfg.field not in columns:
        raise InputError(
            f"input.field={cfg.field!r} is not a column of {cfg.dataset!r}; columns: {', '.join(sorted(columns))} "
            "(set input.field, input.messages_field or input.template)"
        )
    return uses_messages


def check_task_columns(cfg: InputConfig, columns: list[str], spec: InputSpec) -> bool:
    """InputError when a column a non-generation task requires is missing (its prompt may also come from
    `input.field` or `input.template`); rows are never conversations for such a task."""
    has_prompt = cfg.template is not None or cfg.field in columns
    missing = [n for n in spec.required if n not in columns and not (n == "prompt" and has_prompt)]
    if missing:
        raise InputError(
            f"task={spec.task} reads {', '.join(missing)} from each row, and input.dataset={cfg.dataset!r} has no "
            f"such column; columns: {', '.join(sorted(columns))} (set input.field or input.template for the prompt)"
        )
    return False


def row_record(
    index: int,
    row: dict[str, Any],
    cfg: InputConfig,
    uses_messages: bool,
    base: GenerationConfig | None,
    spec: InputSpec | None = None,
) -> Record:
    """One row as a record: its prompt (from `input.field` or `input.template`) or conversation, its id, and
    for a non-generation task every column, of which the task's `spec` picks its fields."""
    default_id = str(index)
    obj: dict[str, Any] = dict(row) if spec is not None else {}
    if uses_messages:
        obj["messages"] = row[cfg.messages_field]
    elif cfg.template is not None:
        try:
            obj["prompt"] = fill_template(cfg.template, row)
        except (KeyError, IndexError, ValueError) as exc:
            return Record(index, default_id, error=f"row {index}: input.template cannot be filled ({exc})")
    elif spec is None or cfg.field in row:
        obj["prompt"] = row.get(cfg.field)
    if cfg.id_field in row:
        obj["id"] = row[cfg.id_field]
    record = new_record(index, default_id, obj, "id", base, spec)
    if record.error is None:
        record.error = unencodable(record.prompt, *texts_of(record.fields))
    if record.error:
        record.error = f"row {index}: {record.error}"
    consumed = [cfg.id_field, cfg.field, cfg.messages_field, *(spec.names if spec else ())]
    record.carried = carried_fields(row, consumed, cfg.template)
    return record


def is_stream(ds: Any) -> bool:
    import datasets

    return isinstance(ds, datasets.IterableDataset)


def column_names(ds: Any, name: str) -> list[str]:
    """The dataset's columns; a stream whose features are not declared shows them in its first row."""
    if ds.column_names is not None:
        return list(ds.column_names)
    try:
        return list(next(iter(ds.take(1)), {}))
    except Exception as exc:
        raise InputError(unreadable(name, root_cause(exc))) from exc


class StreamBreak(Exception):
    """Reading the rows failed part-way; the message is one line naming the cause."""


def iter_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows; any failure while reading them (a truncated shard, a dropped connection, a row the
    builder cannot parse) becomes StreamBreak, so the rows before it are kept."""
    rows = iter(ds)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise StreamBreak(root_cause(exc)) from exc
        yield row


def fingerprint(ds: Any, name: str) -> str | None:
    """The dataset's own fingerprint; for a stream of local files, the sha256 of their bytes (a hub stream has
    none: hashing it would mean downloading it)."""
    if not is_stream(ds):
        return getattr(ds, "_fingerprint", None)
    files = local_files(name)
    if not files:
        return None
    return hashlib.sha256("".join(compressed.file_sha256(f) for f in files).encode()).hexdigest()


def local_files(name: str) -> list[Path]:
    path = Path(name).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if is_glob(name):
        return [Path(p) for p in resolve(name)]
    return []


DATA_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".parquet": ("parquet", {}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".txt": ("text", {}),
    ".arrow": ("arrow", {}),
}
COMPRESSED = ", ".join(compressed.SUFFIXES)


def load_dataset_any(name: str, split: str, streaming: bool = False) -> Any:
    """`name` loaded with the datasets library: a `save_to_disk` folder, a local data file, a folder or glob
    of data files, or a hub dataset; a `Dataset`, or an `IterableDataset` when `streaming`. Any failure is
    one InputError naming input.dataset, the cause and the fix."""
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        if path.is_file():
            return load_file(name, path, split, streaming)
        if path.is_dir():
            return datasets.load_dataset(str(path), split=split, streaming=streaming)
        if is_glob(name):
            return load_glob(name, split, streaming)
        if name.startswith((".", "/", "~")):
            raise InputError(f"input.dataset={name!r}: no such file or folder")
        return datasets.load_dataset(name, split=split, streaming=streaming)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(unreadable(name, root_cause(exc), split)) from exc


def unreadable(name: str, cause: str, split: str | None = None) -> str:
    """The one-line message for a dataset that cannot be read: the key, the value, the cause and the fix."""
    what = f"input.dataset={name!r}" + (f" (split {split!r})" if split else "")
    if Path(name).expanduser().exists() or is_glob(name):
        fix = (
            "check the file (a truncated download? a ragged CSV row?), or give a JSONL or CSV file as input.path, "
            "which turns bad lines into error rows"
        )
    else:
        fix = "offline? Use a local file or a save_to_disk folder"
    return f"{what} could not be read: {cause}; {fix}"


def load_file(name: str, path: Path, split: str, streaming: bool) -> Any:
    """One local data file. The builder comes from the name (under any compression suffix), else from the
    content; a file whose compression does not match its name is read through a link that names it right
    (datasets goes by the name)."""
    import datasets

    builder, kwargs = builder_for(name, path)
    if compressed.true_name(path) != path.name:
        path = renamed_link(path)
    return datasets.load_dataset(builder, data_files=str(path), split=split, streaming=streaming, **kwargs)


def builder_for(name: str, path: Path) -> tuple[str, dict[str, Any]]:
    """The datasets builder for a file: by its data suffix (`x.jsonl.zst`: json), else by its first bytes
    (parquet's magic number, or JSON's opening brace or bracket)."""
    suffix = compressed.data_suffix(path.name)
    if suffix in DATA_BUILDERS:
        return DATA_BUILDERS[suffix]
    if compressed.is_parquet(path):
        return DATA_BUILDERS[".parquet"]
    if compressed.head(path).lstrip()[:1] in (b"{", b"["):
        return DATA_BUILDERS[".json"]
    raise InputError(
        f"input.dataset={name!r}: unknown file type {suffix or '(no suffix)'}; name it with one of "
        f"{', '.join(DATA_BUILDERS)}, optionally compressed ({COMPRESSED})"
    )


def renamed_link(path: Path) -> Path:
    """A symbolic link to `path` under its true name, in a folder of the temp dir keyed by the file's absolute
    path (the same link on every run, so datasets' cache finds its earlier copy)."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    link = Path(tempfile.gettempdir()) / "omnirun-inputs" / key / compressed.true_name(path)
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() or link.resolve() != path.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
    except OSError as exc:
        raise InputError(
            f"input.dataset={str(path)!r}: its content does not match its name; rename it to "
            f"{compressed.true_name(path)!r} ({exc.strerror or exc})"
        ) from exc
    return link


def is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def resolve(pattern: str) -> list[str]:
    """The files a glob matches, as datasets resolves data_files (hidden and `_`-prefixed files left out)."""
    from datasets.data_files import resolve_pattern

    return resolve_pattern(os.path.abspath(os.path.expanduser(pattern)), base_path="")


def load_glob(name: str, split: str, streaming: bool) -> Any:
    """Shards matched by a glob (`data/*.parquet`, `shards/**/*.jsonl.gz`), read with one builder: the one
    their data suffix names. InputError when nothing matches or the matches mix formats."""
    import datasets

    try:
        files = resolve(name)
    except FileNotFoundError:
        raise InputError(
            f"input.dataset={name!r} matches no file (relative to {os.getcwd()}); check the pattern"
        ) from None
    suffixes = sorted({compressed.data_suffix(f) or "(no suffix)" for f in files})
    if len({str(DATA_BUILDERS.get(s, s)) for s in suffixes}) != 1 or not set(suffixes) <= DATA_BUILDERS.keys():
        raise InputError(
            f"input.dataset={name!r} matches {len(files)} files of kinds {', '.join(suffixes)}; narrow the pattern "
            f"to files of one kind: one of {', '.join(DATA_BUILDERS)}, optionally compressed ({COMPRESSED})"
        )
    builder, kwargs = DATA_BUILDERS[suffixes[0]]
    pattern = os.path.abspath(os.path.expanduser(name))
    return datasets.load_dataset(builder, data_files=pattern, split=split, streaming=streaming, **kwargs)


def root_cause(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause (datasets wraps a parser's error in DatasetGenerationError,
    whose own message says nothing)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
