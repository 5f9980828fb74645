"""Offline dataset enlargement: a training split plus K augmented copies of every flow.

The result is a `FlowTable` in real units (decoded with `FlowCodec.decode`) with two
extra columns: `augmentation` (what made the row: "original", or the augmentation's
repr) and `source_row` (the row of the original it came from, 0..N-1, in the same
file). Generators train on it; the Parquet source reads it back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from tsda.augment.base import Augmentation
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import write_parquet
from tsda.data.table import FlowTable
from tsda.seeds import seeded_generator

ORIGINAL = "original"


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


def augment_table(table: FlowTable, codec: FlowCodec, augmentation: Augmentation,
                  generator: torch.Generator, chunk: int = 65536) -> FlowTable:
    """One augmented copy of every flow of `table`, batched `chunk` flows at a time.

    Soft labels of cross-class mixing are not stored: a row keeps the hard label
    (the dominant class).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    batch = codec.encode(table)
    parts = [augmentation(batch.index(torch.arange(i, min(i + chunk, len(batch)))), generator)
             for i in range(0, len(batch), chunk)]
    return _decoded(FlowBatch.cat(parts) if parts else batch, codec, table)


def enlarge(table: FlowTable, codec: FlowCodec, augmentation: Augmentation, copies: int,
            seed: int = 0) -> tuple[FlowTable, dict[str, np.ndarray]]:
    """The flows of `table` (encoded and decoded, so truncated to `L` packets like the
    copies) followed by `copies` augmented copies of each, and the extra columns.

    Returns:
        the enlarged table (`(K + 1) N` rows: originals first, then copy 1 of every flow,
        copy 2, ...), and `{"augmentation": (rows,) str, "source_row": (rows,) int64}`.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    if len(table) == 0:
        raise ValueError("enlarge: the table has no flow")
    generator = seeded_generator(seed)
    originals = _decoded(codec.encode(table), codec, table)
    tables = [originals] + [augment_table(table, codec, augmentation, generator) for _ in range(copies)]
    n = len(table)
    names = np.array([ORIGINAL] + [repr(augmentation)] * copies, dtype=object)
    extra = {
        "augmentation": np.repeat(names, n),
        "source_row": np.tile(np.arange(n, dtype=np.int64), copies + 1),
    }
    return FlowTable.concat(tables), extra


def enlarge_to_parquet(table: FlowTable, codec: FlowCodec, augmentation: Augmentation, copies: int,
                       out: str | os.PathLike[str], seed: int = 0) -> Path:
    """`enlarge` and write the result atomically in the tcbench Parquet schema."""
    enlarged, extra = enlarge(table, codec, augmentation, copies, seed)
    return write_parquet(enlarged, out, extra=extra)
