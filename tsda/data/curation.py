"""Curation (the tcbench rules) and train/val/test splits, including a split stored in the
file itself (`split="column"`: an enlarged dataset written by `tsda augment enlarge`).

A stored split is a column (`split` by default) holding `train`, `val` or `test` per row.
An enlarged file also has `source_row`: the row (0-based, in the file) of the original a
row was made from; an original points at itself. The rules a stored split must keep
(`check_stored_split`): only the three values; `source_row` inside the file and pointing at
an original; validation and test rows are untouched originals; a copy is in its original's
split. So augmented copies of one flow never straddle splits. Curation of such a file
(`curate_stored`) goes by original: a copy is kept or dropped with its original.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from tsda.data.sources import FlowDataError
from tsda.data.table import FlowTable

SplitKind = Literal["stratified", "group", "none", "column"]
SPLIT_KINDS: tuple[str, ...] = get_args(SplitKind)
#: the values of a stored split column
STORED_SPLITS: tuple[str, ...] = ("train", "val", "test")
#: an enlarged file's column: the file row of each row's original (originals: their own row)
SOURCE_ROW = "source_row"
#: meta key the datamodule fills with each row's position in the file it was read from
FILE_ROW = "_file_row"


def curate(table: FlowTable, min_packets: int = 10, min_class_size: int = 100, n_packets: int = 20) -> FlowTable:
    """Keep flows with more than `min_packets` packets, then classes with more than
    `min_class_size` such flows, truncated to the first `n_packets` packets."""
    if min_packets < 0 or min_class_size < 0:
        raise ValueError("min_packets and min_class_size must be >= 0")
    kept = table.take(table.packets > min_packets)
    kept = kept.with_classes(kept.class_counts() > min_class_size)
    if kept.n_flows == 0:
        raise ValueError(f"curation left no flow (min_packets={min_packets}, min_class_size={min_class_size})")
    return kept.truncate(n_packets)


def split_indices(
    table: FlowTable,
    kind: SplitKind = "stratified",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    group_column: str = "capture",
) -> dict[str, np.ndarray]:
    """Row indices of `train`, `val` and `test`.

    `stratified`: class-stratified random split. `group`: flows sharing a `group_column`
    value (a capture) never straddle splits; classes are balanced across splits as far as
    the groups allow (sklearn's StratifiedGroupKFold). `none`: every flow is test.
    """
    n = table.n_flows
    everything = np.arange(n)
    if kind == "none":
        return {"train": everything[:0], "val": everything[:0], "test": everything}
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum below 1")
    y = table.labels
    if kind == "stratified":
        rest, test = train_test_split(everything, test_size=test_fraction, stratify=y, random_state=seed)
        train, val = train_test_split(
            rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=seed
        )
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    if kind == "group":
        if group_column not in table.meta:
            raise ValueError(
                f"split='group' needs the column {group_column!r}; the table has "
                f"{sorted(table.meta) or 'no metadata columns'}"
            )
        groups = table.meta[group_column]
        n_folds = max(2, round(1 / min(val_fraction, test_fraction)))
        folds = list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(everything, y, groups))
        test = folds[0][1]
        val = folds[1][1]
        train = np.setdiff1d(everything, np.concatenate([test, val]))
        return {"train": train, "val": np.sort(val), "test": np.sort(test)}
    if kind == "column":
        raise ValueError("split='column' reads the split stored in the table: use stored_split_indices")
    raise ValueError(f"unknown split {kind!r}: choose one of {', '.join(SPLIT_KINDS)}")


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a class-stratified random `fraction` of `labels` (every class kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        m = max(1, round(fraction * len(rows)))
        keep.append(rng.choice(rows, size=m, replace=False))
    return np.sort(np.concatenate(keep))


def stratified_cap(table: FlowTable, max_flows: int, seed: int = 0) -> FlowTable:
    """At most `max_flows` flows, keeping every class's share (all flows when fewer)."""
    if max_flows < 1:
        raise ValueError(f"max_flows must be >= 1, got {max_flows}")
    if len(table) <= max_flows:
        return table
    return table.take(stratified_fraction(table.labels, max_flows / len(table), seed))


# -- a split stored in the file ------------------------------------------------------------
def file_rows(table: FlowTable) -> np.ndarray:
    """`(N,)` each row's position in its file (`meta[FILE_ROW]`; else 0..N-1)."""
    return np.asarray(table.meta.get(FILE_ROW, np.arange(len(table))), dtype=np.int64)


def source_rows(table: FlowTable) -> np.ndarray:
    """`(N,)` the file row of each row's original (`meta[SOURCE_ROW]`; else the row itself)."""
    return np.asarray(table.meta[SOURCE_ROW], dtype=np.int64) if SOURCE_ROW in table.meta else file_rows(table)


def holds_copies(table: FlowTable) -> bool:
    """Whether some row is an augmented copy of another (`source_row` not its own row)."""
    return SOURCE_ROW in table.meta and bool((source_rows(table) != file_rows(table)).any())


def _original_positions(table: FlowTable, n_rows: int) -> np.ndarray:
    """`(N,)` the table position of each row's original, -1 where the original is absent."""
    position = np.full(n_rows, -1, dtype=np.int64)
    position[file_rows(table)] = np.arange(len(table))
    return position[source_rows(table)]


def check_stored_split(table: FlowTable, split_column: str, source: str, n_rows: int | None = None) -> None:
    """Refuse a stored split that could leak: see the module docstring for the rules.

    Args:
        table: the file's rows as read (`meta[split_column]`, optionally `meta[SOURCE_ROW]`
            and `meta[FILE_ROW]`).
        split_column: the split column's name (`--data.split_column`).
        source: the file, for messages.
        n_rows: rows in the file (more than `len(table)` when invalid rows were left out).

    Raises:
        FlowDataError: the column is missing or holds other values; a `source_row` is not an
            integer, points outside the file or at a copy; a validation/test row is a copy;
            a copy is in another split than its original. The message names the file, the
            column and the first bad row (its row in the file).
    """
    if split_column not in table.meta:
        raise FlowDataError(
            f"{source}: --data.split column needs the column {split_column!r}, which the file "
            "lacks (name it with --data.split_column; tsda augment enlarge writes 'split')"
        )
    split = np.asarray(table.meta[split_column]).astype(str)
    rows = file_rows(table)
    bad = ~np.isin(split, STORED_SPLITS)
    if bad.any():
        values = sorted(set(split[bad].tolist()))
        raise FlowDataError(
            f"{source}: column {split_column!r} holds {values[:5]} (first at row "
            f"{int(rows[bad][0])}); a stored split is one of {', '.join(STORED_SPLITS)}"
        )
    if SOURCE_ROW not in table.meta:
        return
    raw = np.asarray(table.meta[SOURCE_ROW])
    if not np.issubdtype(raw.dtype, np.integer):
        raise FlowDataError(f"{source}: column {SOURCE_ROW!r} must hold row numbers (integers), got {raw.dtype}")
    src, n_rows = raw.astype(np.int64), len(table) if n_rows is None else n_rows

    def refuse(rows_bad: np.ndarray, what: str) -> None:
        if rows_bad.any():
            i = int(np.flatnonzero(rows_bad)[0])
            raise FlowDataError(
                f"{source}: column {SOURCE_ROW!r} row {int(rows[i])} (source_row {int(src[i])}): "
                f"{what} ({int(rows_bad.sum())} such rows)"
            )

    refuse((src < 0) | (src >= n_rows), f"points outside the file (rows 0..{n_rows - 1})")
    copy = src != rows
    refuse(
        copy & (split != "train"),
        f"a {split_column!r} val/test row is an augmented copy; validation and test rows must be untouched originals",
    )
    original = _original_positions(table, n_rows)  # (N,) -1: the original was left out
    present = original >= 0
    refuse(
        copy & present & (source_rows(table)[np.maximum(original, 0)] != src), "points at a copy, not at an original"
    )
    refuse(
        copy & present & (split[np.maximum(original, 0)] != split),
        f"a copy in another {split_column!r} than its original (copies must not straddle splits)",
    )


def curate_stored(table: FlowTable, min_packets: int = 10, n_packets: int = 20, n_rows: int | None = None) -> FlowTable:
    """`curate` for a file with a stored split, by original: a row is kept when its original
    (`source_row`) was read and has more than `min_packets` packets. Classes are not dropped
    (`min_class_size` does not apply): a stored split was curated when it was made, and an
    enlarged slice of the training split (`tsda augment enlarge --data.train_fraction 0.1`)
    holds fewer flows per class than the source did, so counting again would drop classes,
    with their validation and test flows, that the protocol keeps. Rows keep their file
    order, so the stored split survives unchanged."""
    if min_packets < 0:
        raise ValueError("min_packets must be >= 0")
    original = _original_positions(table, len(table) if n_rows is None else n_rows)  # (N,)
    ok = original >= 0
    ok[ok] = table.packets[original[ok]] > min_packets
    kept = table.take(ok)
    if kept.n_flows == 0:
        raise ValueError(f"curation left no flow (min_packets={min_packets}; judged by original flows)")
    return kept.truncate(n_packets)


def stored_split_indices(table: FlowTable, split_column: str) -> dict[str, np.ndarray]:
    """Row indices of `train`, `val` and `test` as the column `split_column` says."""
    split = np.asarray(table.meta[split_column]).astype(str)
    return {name: np.flatnonzero(split == name) for name in STORED_SPLITS}


def group_fraction(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a class-stratified random `fraction` of the groups of `groups (N,)`, all
    rows of each chosen group (an original with all its copies). A group's class is that of
    its first row; with one row per group this is `stratified_fraction(labels, ...)`."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    chosen = stratified_fraction(labels[first], fraction, seed)  # group numbers
    return np.flatnonzero(np.isin(inverse, chosen))
