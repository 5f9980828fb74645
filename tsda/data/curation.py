"""Curation (the tcbench rules) and train/val/test splits."""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from tsda.data.table import FlowTable

SplitKind = Literal["stratified", "group", "none"]


def curate(
    table: FlowTable, min_packets: int = 10, min_class_size: int = 100, n_packets: int = 20
) -> FlowTable:
    """Keep flows with more than `min_packets` packets, then classes with more than
    `min_class_size` such flows, truncated to the first `n_packets` packets."""
    if min_packets < 0 or min_class_size < 0:
        raise ValueError("min_packets and min_class_size must be >= 0")
    kept = table.take(table.packets > min_packets)
    kept = kept.with_classes(kept.class_counts() > min_class_size)
    if kept.n_flows == 0:
        raise ValueError(
            f"curation left no flow (min_packets={min_packets}, min_class_size={min_class_size})"
        )
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
        n_folds = max(2, int(round(1 / min(val_fraction, test_fraction))))
        folds = list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(everything, y, groups))
        test = folds[0][1]
        val = folds[1][1]
        train = np.setdiff1d(everything, np.concatenate([test, val]))
        return {"train": train, "val": np.sort(val), "test": np.sort(test)}
    raise ValueError(f"unknown split {kind!r}: choose stratified, group or none")


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
        m = max(1, int(round(fraction * len(rows))))
        keep.append(rng.choice(rows, size=m, replace=False))
    return np.sort(np.concatenate(keep))


def stratified_cap(table: FlowTable, max_flows: int, seed: int = 0) -> FlowTable:
    """At most `max_flows` flows, keeping every class's share (all flows when fewer)."""
    if max_flows < 1:
        raise ValueError(f"max_flows must be >= 1, got {max_flows}")
    if len(table) <= max_flows:
        return table
    return table.take(stratified_fraction(table.labels, max_flows / len(table), seed))
