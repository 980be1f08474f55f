"""Data parallelism across processes: `accelerate launch --num_processes N -m omnirun ...` (or `torchrun`).

Each rank takes a contiguous shard of the records, generates it with its own copy of the model (its own GPU
when there are several, or a share of the CPU), and writes `outputs.rank<R>.jsonl`. Rank 0 creates the run
directory and shares its path; at the end it concatenates the shards in rank order, which is input order,
into one `outputs.jsonl` and writes the metrics for all ranks.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omnirun.rundir import RunDir

T = TypeVar("T")


@dataclass(frozen=True)
class Rank:
    index: int
    world: int
    local_index: int
    state: Any
    """accelerate's PartialState (process group set up on gloo for CPU, nccl for GPUs)."""

    @property
    def is_main(self) -> bool:
        return self.index == 0


def current() -> Rank | None:
    """This process's rank when started by a multi-process launcher, else None (single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes <= 1:
        return None
    if torch.cuda.is_available():
        torch.cuda.set_device(state.local_process_index)
    return Rank(state.process_index, state.num_processes, state.local_process_index, state)


def shard(items: list[T], rank: Rank | None, unit: int = 1) -> list[T]:
    """A contiguous block of `items` for this rank (`shard_bounds`)."""
    first, last = shard_bounds(len(items), rank, unit)
    return items[first:last]


def shard_bounds(n: int, rank: Rank | None, unit: int = 1) -> tuple[int, int]:
    """The positions [first, last) of this rank's contiguous block of `n` items, made of whole `unit`s (blocks
    in rank order cover the items in order), so records can be read lazily from there. With `unit` = the
    task's batching window, every rank forms exactly the batches a single process would, so the outputs are
    the same."""
    if rank is None:
        return 0, n
    units = -(-n // unit)
    first, last = rank.index * units // rank.world, (rank.index + 1) * units // rank.world
    return min(first * unit, n), min(last * unit, n)


def from_main(value: T, rank: Rank | None) -> T:
    """Rank 0's `value`, on every rank."""
    if rank is None:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather(value: T, rank: Rank | None) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if rank is None:
        return [value]
    from accelerate.utils import gather_object

    return list(gather_object([value]))


def barrier(rank: Rank | None) -> None:
    if rank is not None:
        rank.state.wait_for_everyone()


def merge_shards(run_dir: Path, world: int) -> Path:
    """Concatenate outputs.rank*.jsonl in rank order into outputs.jsonl and remove the shards."""
    run = RunDir(run_dir)
    target = run.outputs
    parts = [run.shard(r) for r in range(world)]
    with target.open("wb") as out:
        for part in parts:
            if part.exists():
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)  # in chunks: a shard is never held in memory
    for part in parts:
        part.unlink(missing_ok=True)
    return target
