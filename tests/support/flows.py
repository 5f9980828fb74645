"""Tiny valid flow tables for tests, built in memory (no dataset needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsda.data.table import FlowTable


def random_table(
    counts: Sequence[int] = (30, 20, 10),
    max_packets: int = 32,
    seed: int = 0,
    min_len: int = 3,
    max_len: int = 40,
    flows_per_capture: int = 5,
    names: Sequence[str] | None = None,
) -> FlowTable:
    """A valid `FlowTable` of random flows: `counts[k]` flows of class `k`.

    Sizes are whole bytes in [1, 1460], directions 0/1, times non-decreasing from 0; each
    flow has `packets` in [min_len, max_len] (stored up to `max_packets`); `meta["capture"]`
    groups consecutive flows of a class by `flows_per_capture`.
    """
    rng = np.random.default_rng(seed)
    n = int(sum(counts))
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)  # (N,)
    packets = rng.integers(min_len, max_len + 1, size=n).astype(np.int64)  # (N,)
    lengths = np.minimum(packets, max_packets)
    real = np.arange(max_packets)[None, :] < lengths[:, None]  # (N, P)
    sizes = rng.integers(1, 1461, size=(n, max_packets)).astype(np.float64) * real
    directions = rng.integers(0, 2, size=(n, max_packets)).astype(np.int8) * real
    gaps = rng.lognormal(-5.0, 2.0, size=(n, max_packets)) * real  # (N, P) seconds
    gaps[:, 0] = 0.0
    times = np.cumsum(gaps, axis=1) * real
    within = np.concatenate([np.arange(c) for c in counts]) // flows_per_capture
    capture = np.array([f"c{k}-{w}" for k, w in zip(labels, within)], dtype=object)
    return FlowTable(
        labels=labels,
        class_names=tuple(names) if names else tuple(f"app{k}" for k in range(len(counts))),
        sizes=sizes,
        directions=directions,
        times=times,
        lengths=lengths,
        packets=packets,
        meta={"capture": capture},
    )
