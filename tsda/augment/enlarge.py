"""Offline dataset enlargement: a dataset's flows plus K augmented copies of every training flow.

The result is a `FlowTable` in real units (decoded with `FlowCodec.decode`) with three
extra columns: `augmentation` (what made the row: "original", or the augmentation's
repr), `source_row` (the row, in the same file, of the original a row came from; an
original points at itself) and the stored split (`split`: `train`, `val` or `test`).
Validation and test rows are untouched originals; only training flows get copies, which
are training rows. `FlowDataModule(split="column")` (`--data.split column`) reads the
file back with that split, so copies never straddle splits; generators and classifiers
train on it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tsda.augment.base import Augmentation
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.curation import FILE_ROW, SOURCE_ROW, STORED_SPLITS
from tsda.data.sources import write_parquet
from tsda.data.table import FlowTable
from tsda.seeds import seeded_generator

ORIGINAL = "original"
#: the extra column naming what made each row
AUGMENTATION = "augmentation"


def _decoded(batch: FlowBatch, codec: FlowCodec, source: FlowTable) -> FlowTable:
    """`batch` in real units, with `source`'s whole-flow packet counts and meta columns.

    An augmented flow keeps its original's total packet count (`packets`): the
    augmentation changed its first `L` packets, not how long the flow was, so curation
    (`packets > min_packets`) keeps or drops a copy with its original.
    """
    table = codec.decode(batch, source.class_names)
    table.packets = np.maximum(source.packets, table.lengths)
    table.meta = {k: v.copy() for k, v in source.meta.items()}
    return table


def augment_table(
    table: FlowTable, codec: FlowCodec, augmentation: Augmentation, generator: torch.Generator, chunk: int = 65536
) -> FlowTable:
    """One augmented copy of every flow of `table`, batched `chunk` flows at a time.

    Soft labels of cross-class mixing are not stored: a row keeps the hard label
    (the dominant class).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch = codec.encode(table)
    parts = [
        augmentation(batch.index(torch.arange(i, min(i + chunk, len(batch)))), generator)
        for i in range(0, len(batch), chunk)
    ]
    return _decoded(FlowBatch.cat(parts) if parts else batch, codec, table)


def enlarge(
    table: FlowTable,
    codec: FlowCodec,
    augmentation: Augmentation,
    copies: int,
    seed: int = 0,
    split: np.ndarray | None = None,
    split_column: str = "split",
) -> tuple[FlowTable, dict[str, np.ndarray]]:
    """The flows of `table` (encoded and decoded, so truncated to `L` packets like the
    copies) followed by `copies` augmented copies of each training flow, and the extra
    columns.

    Args:
        table: the flows, `N` rows (meta columns of an earlier enlargement are dropped).
        split: `(N,)` each flow's split, `train`, `val` or `test`; None = every flow is
            training. Only training flows are copied.
        split_column: the name of the stored split column.

    Returns:
        the enlarged table (`N + K T` rows for `T` training flows: the `N` originals in
        their order, then copy 1 of every training flow, copy 2, ...), and
        `{"augmentation": (rows,) str, "source_row": (rows,) int64, split_column: (rows,) str}`.

    Raises:
        ValueError: `copies < 0`, an empty table, a bad `split`, or copies of no training flow.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if len(table) == 0:
        raise ValueError("enlarge: the table has no flow")
    n = len(table)
    split = np.full(n, "train", dtype=object) if split is None else np.asarray(split, dtype=object)
    if split.shape != (n,) or not np.isin(split.astype(str), STORED_SPLITS).all():
        raise ValueError(f"enlarge: split must be ({n},) values of {STORED_SPLITS}")
    train_rows = np.flatnonzero(split == "train")
    if copies and len(train_rows) == 0:
        raise ValueError("enlarge: no training flow to copy")
    dropped = (AUGMENTATION, SOURCE_ROW, FILE_ROW, split_column)
    table = replace(table, meta={k: v for k, v in table.meta.items() if k not in dropped})
    generator = seeded_generator(seed)
    originals = _decoded(codec.encode(table), codec, table)
    train = table.take(train_rows)
    tables = [originals] + [augment_table(train, codec, augmentation, generator) for _ in range(copies)]
    t = len(train_rows)
    extra = {
        AUGMENTATION: np.array([ORIGINAL] * n + [repr(augmentation)] * (copies * t), dtype=object),
        SOURCE_ROW: np.concatenate([np.arange(n), np.tile(train_rows, copies)]).astype(np.int64),
        split_column: np.concatenate([split, np.full(copies * t, "train", dtype=object)]),
    }
    return FlowTable.concat(tables), extra


def enlarge_to_parquet(
    table: FlowTable,
    codec: FlowCodec,
    augmentation: Augmentation,
    copies: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    split: np.ndarray | None = None,
    split_column: str = "split",
) -> Path:
    """`enlarge` and write the result atomically in the tcbench Parquet schema."""
    enlarged, extra = enlarge(table, codec, augmentation, copies, seed, split, split_column)
    return write_parquet(enlarged, out, extra=extra)
