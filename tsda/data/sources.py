"""Readers and writers of flow tables.

The Parquet schema is tcbench's curated one: a label column (`app`), list columns
`pkts_size` (payload bytes), `pkts_dir` (0 = client to server, 1 = server to client),
`timetofirst` (seconds since the flow's first packet) and, optionally, `packets` (packets
in the whole flow). Column names are configurable. FG-Net D1 as shipped in
`../shared/data/fgnet/d1.parquet` uses the same names.

Every reader check raises `FlowDataError` (a `ValueError`) naming file, column and row.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tsda.data.table import FlowTable
from tsda.errors import TsdaError
from tsda.runs import atomic_path


class FlowDataError(TsdaError):
    """Bad input data: the message names the file, the column and the row."""


@dataclass(frozen=True)
class ParquetColumns:
    """Column names of a tcbench-style flow table."""

    label: str = "app"
    sizes: str = "pkts_size"
    directions: str = "pkts_dir"
    times: str = "timetofirst"
    packets: str | None = "packets"


def _first_bad_row(offsets: np.ndarray, bad_values: np.ndarray) -> int:
    pos = int(np.flatnonzero(bad_values)[0])
    return int(np.searchsorted(offsets, pos, side="right") - 1)


def _rows(offsets: np.ndarray, bad_values: np.ndarray) -> np.ndarray:
    """`(N,)` bool: rows holding at least one bad value (`offsets (N+1,)`)."""
    row_of_value = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.bincount(row_of_value[bad_values], minlength=len(offsets) - 1) > 0


def _list_column(table: pa.Table, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`(offsets (N+1,), values (total,))` of a list column, checked for nulls."""
    col = table.column(name)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise FlowDataError(f"{path}: column {name!r} must be a list column, got {col.type}")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise FlowDataError(f"{path}: column {name!r} row {row} is null")
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values
    if values.null_count:
        bad = values.is_null().to_numpy(zero_copy_only=False)
        raise FlowDataError(f"{path}: column {name!r} row {_first_bad_row(offsets - offsets[0], bad)} holds a null")
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise FlowDataError(f"{path}: column {name!r} must hold numbers, got {values.type}")
    vals = values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], vals.astype(np.float64)


def _labels(table: pa.Table, name: str, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    col = table.column(name)
    if not (
        pa.types.is_string(col.type)
        or pa.types.is_large_string(col.type)
        or pa.types.is_integer(col.type)
        or pa.types.is_dictionary(col.type)
    ):
        raise FlowDataError(f"{path}: label column {name!r} must be strings or integers, got {col.type}")
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise FlowDataError(f"{path}: label column {name!r} row {row} is null (empty class)")
    raw = np.asarray(arr.to_numpy(zero_copy_only=False)).astype(str)
    empty = np.char.str_len(np.char.strip(raw)) == 0
    if empty.any():
        raise FlowDataError(f"{path}: label column {name!r} row {int(np.flatnonzero(empty)[0])} is an empty class name")
    names, labels = np.unique(raw, return_inverse=True)
    return labels.astype(np.int64), tuple(names.tolist())


def _pad(offsets: np.ndarray, values: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Gather ragged `values` into `(N, width)` zero-padded rows."""
    pos = np.arange(width)[None, :]
    real = pos < lengths[:, None]  # (N, width)
    out = np.zeros((len(lengths), width), dtype=np.float64)
    out[real] = values[(offsets[:-1, None] + pos)[real]]
    return out


def read_parquet(
    path: str | os.PathLike[str],
    columns: ParquetColumns = ParquetColumns(),
    max_packets: int = 64,
    meta_columns: tuple[str, ...] = (),
    invalid_rows: Literal["error", "drop"] = "error",
    row_index: str | None = None,
) -> FlowTable:
    """Read a tcbench-style Parquet file into a `FlowTable` padded to `max_packets`.

    Meta columns the file lacks are left out. With `row_index`, `meta[row_index]` holds
    each row's position in the file (int64), which rows left out by `invalid_rows="drop"`
    would otherwise hide (an enlarged file's `source_row` refers to file rows).

    Raises:
        FileNotFoundError: the file does not exist.
        FlowDataError: a column is missing or of the wrong type; one row's lists differ in
            length; a size or time is negative or NaN; times decrease within a flow;
            directions are not 0/1; a label is null or empty. With
            `invalid_rows="drop"` the row-level problems (lengths, values, order) leave
            the row out with a warning instead; a missing column or null label still raises.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"flow table not found: {path}")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FlowDataError(f"{path}: not a readable Parquet file ({exc})") from exc
    wanted = [columns.label, columns.sizes, columns.directions, columns.times]
    for name in wanted:
        if name not in schema.names:
            raise FlowDataError(
                f"{path}: missing column {name!r} (columns: {', '.join(schema.names)}); "
                "set the column names with --data.*_column"
            )
    optional = [c for c in (columns.packets, *meta_columns) if c and c in schema.names]
    table = pq.read_table(path, columns=wanted + optional)

    labels, class_names = _labels(table, columns.label, path)
    s_off, sizes = _list_column(table, columns.sizes, path)
    d_off, dirs = _list_column(table, columns.directions, path)
    t_off, times = _list_column(table, columns.times, path)
    lens = np.diff(s_off)
    n = len(lens)
    problems: list[tuple[np.ndarray, str]] = []  # (bad rows (N,) bool, what is wrong)
    for name, off in ((columns.directions, d_off), (columns.times, t_off)):
        problems.append((np.diff(off) != lens, f"column {name!r} and {columns.sizes!r} differ in length"))
    for name, off, vals in ((columns.sizes, s_off, sizes), (columns.times, t_off, times)):
        problems.append((_rows(off, ~np.isfinite(vals) | (vals < 0)), f"column {name!r} holds a negative or NaN value"))
    problems.append(
        (
            _rows(d_off, (dirs != 0) & (dirs != 1)),
            f"column {columns.directions!r} holds a value other than 0 (client to server) or 1 (server to client)",
        )
    )
    step = np.diff(times, prepend=0.0)
    step[t_off[:-1][np.diff(t_off) > 0]] = 0.0  # the first packet of each row
    problems.append((_rows(t_off, step < 0), f"column {columns.times!r}: times decrease"))
    invalid = np.zeros(n, dtype=bool)
    dropped: dict[str, int] = {}
    for rows, what in problems:
        if rows.any() and invalid_rows == "error":
            raise FlowDataError(
                f"{path}: row {int(np.flatnonzero(rows)[0])}: {what} "
                f"({int(rows.sum())} such rows; --data.invalid_rows drop leaves them out)"
            )
        if rows.any():
            dropped[what] = int((rows & ~invalid).sum())
        invalid |= rows
    if dropped:
        warnings.warn(f"{path}: left out {int(invalid.sum())} invalid rows: {dropped}", stacklevel=2)
    lens = np.minimum.reduce([lens, np.diff(d_off), np.diff(t_off)])

    lengths = np.minimum(lens, max_packets).astype(np.int64)
    if columns.packets and columns.packets in table.column_names:
        packets = table.column(columns.packets).to_numpy(zero_copy_only=False).astype(np.int64)
        packets = np.maximum(packets, lens)
    else:
        packets = lens.astype(np.int64)
    meta = {
        c: np.asarray(table.column(c).to_numpy(zero_copy_only=False)) for c in meta_columns if c in table.column_names
    }
    if row_index:
        meta[row_index] = np.arange(n, dtype=np.int64)
    out = FlowTable(
        labels=labels,
        class_names=class_names,
        sizes=_pad(s_off, sizes, lengths, max_packets),
        directions=_pad(d_off, dirs, lengths, max_packets).astype(np.int8),
        times=_pad(t_off, times, lengths, max_packets),
        lengths=lengths,
        packets=packets,
        meta=meta,
    )
    return out.take(~invalid) if invalid.any() else out


def parquet_rows(path: str | os.PathLike[str]) -> int:
    """Rows of a Parquet file (from its footer; nothing else is read)."""
    return int(pq.read_metadata(path).num_rows)


def _ragged(values: np.ndarray, lengths: np.ndarray, type_: pa.DataType) -> pa.Array:
    real = np.arange(values.shape[1])[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[real]).cast(type_))


def table_to_arrow(
    table: FlowTable,
    columns: ParquetColumns = ParquetColumns(),
    extra: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """The tcbench-style Arrow table of `table` (meta and `extra` columns appended)."""
    lengths = table.lengths.astype(np.int64)
    data: dict[str, pa.Array] = {
        columns.label: pa.array(np.asarray(table.class_names, dtype=object)[table.labels], pa.string()),
        columns.sizes: _ragged(np.rint(table.sizes), lengths, pa.int32()),
        columns.directions: _ragged(table.directions, lengths, pa.int8()),
        columns.times: _ragged(table.times, lengths, pa.float64()),
    }
    if columns.packets:
        data[columns.packets] = pa.array(table.packets.astype(np.int32))
    for key, col in {**table.meta, **(extra or {})}.items():
        if key in data:
            raise ValueError(f"extra column {key!r} collides with a flow column")
        data[key] = pa.array(np.asarray(col))
    return pa.table(data)


def write_parquet(
    table: FlowTable,
    path: str | os.PathLike[str],
    columns: ParquetColumns = ParquetColumns(),
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write `table` in the tcbench schema, atomically (temporary file, then rename)."""
    path = Path(path)
    arrow = table_to_arrow(table, columns, extra)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path
