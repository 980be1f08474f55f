"""Hugging Face datasets: a `save_to_disk` folder, a local data file or folder, or a hub name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnirun.config import GenerationConfig, InputConfig
from omnirun.errors import InputError
from omnirun.inputs.records import Inputs, Record, fill_template, make_record


def read_dataset(cfg: InputConfig, base: GenerationConfig | None = None) -> Inputs:
    """A `save_to_disk` folder, a local data file or folder (parquet/json/jsonl/csv), or a hub dataset name."""
    assert cfg.dataset is not None
    ds = load_dataset_any(cfg.dataset, cfg.split)
    if cfg.limit is not None:
        ds = ds.select(range(min(cfg.limit, len(ds))))
    columns = set(ds.column_names)
    uses_messages = cfg.messages_field in columns and cfg.template is None and cfg.field not in columns
    if not uses_messages and cfg.template is None and cfg.field not in columns:
        raise InputError(
            f"input.field={cfg.field!r} is not a column of {cfg.dataset!r}; columns: {', '.join(sorted(columns))} "
            "(set input.field, input.messages_field or input.template)"
        )
    records = []
    for index, row in enumerate(ds):
        default_id = str(index)
        if uses_messages:
            obj = {"messages": row[cfg.messages_field]}
        elif cfg.template is not None:
            try:
                obj = {"prompt": fill_template(cfg.template, row)}
            except (KeyError, IndexError, ValueError) as exc:
                records.append(Record(index, default_id, error=f"row {index}: input.template cannot be filled ({exc})"))
                continue
        else:
            obj = {"prompt": row[cfg.field]}
        if cfg.id_field in row:
            obj["id"] = row[cfg.id_field]
        record = make_record(index, default_id, obj, base=base)
        if record.error:
            record.error = f"row {index}: {record.error}"
        records.append(record)
    return Inputs(records, "dataset", getattr(ds, "_fingerprint", None))


DATA_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".txt": "text"}


def load_dataset_any(name: str, split: str) -> Any:
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        if path.is_file():
            builder = DATA_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise InputError(f"input.dataset={name!r}: unknown file type; use one of {', '.join(DATA_BUILDERS)}")
            return datasets.load_dataset(builder, data_files=str(path), split=split)
        if path.is_dir():
            return datasets.load_dataset(str(path), split=split)
        if name.startswith((".", "/", "~")):
            raise InputError(f"input.dataset={name!r}: no such file or folder")
        return datasets.load_dataset(name, split=split)
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(
            f"input.dataset={name!r} (split {split!r}) could not be read: {first}. "
            "Offline? Use a local file or a save_to_disk folder"
        ) from exc
