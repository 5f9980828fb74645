"""`FlowTable`: flows in real units (bytes, seconds), padded to a common packet count.

Directions follow tcbench's convention: 0 = client to server (upstream), 1 = server to
client (downstream). Every array is padded with zeros after `lengths[i]` packets; the
lengths say what is real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FlowTable:
    """A set of labelled flows.

    Attributes:
        labels: `(N,)` int64 class index into `class_names`.
        class_names: name of each class (an app).
        sizes: `(N, P)` float64 payload bytes of the first `P` packets, 0 on padding.
        directions: `(N, P)` int8, 0 = client to server, 1 = server to client, 0 on padding.
        times: `(N, P)` float64 seconds since the flow's first packet, 0 on padding.
        lengths: `(N,)` int64 number of real packets stored (at most `P`).
        packets: `(N,)` int64 packets in the whole flow (at least `lengths`).
        meta: extra per-flow columns (e.g. `capture`), each `(N,)`.
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    sizes: np.ndarray
    directions: np.ndarray
    times: np.ndarray
    lengths: np.ndarray
    packets: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.class_names = tuple(str(c) for c in self.class_names)
        n = len(self.labels)
        for name in ("sizes", "directions", "times"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"FlowTable.{name} must have shape (N={n}, P), got {arr.shape}")
        if not (self.sizes.shape == self.directions.shape == self.times.shape):
            raise ValueError(
                "FlowTable sizes, directions and times must share one shape, got "
                f"{self.sizes.shape}, {self.directions.shape}, {self.times.shape}"
            )
        for name in ("lengths", "packets"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"FlowTable.{name} must have shape ({n},)")
        for key, col in self.meta.items():
            if len(col) != n:
                raise ValueError(f"FlowTable.meta[{key!r}] has {len(col)} rows, expected {n}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError("FlowTable.labels must index into class_names")

    @property
    def n_flows(self) -> int:
        return len(self.labels)

    @property
    def max_packets(self) -> int:
        """`P`, the padded packet count."""
        return int(self.sizes.shape[1])

    def __len__(self) -> int:
        return self.n_flows

    def class_counts(self) -> np.ndarray:
        """`(K,)` flows per class."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def take(self, index: np.ndarray | Sequence[int]) -> FlowTable:
        """Rows `index` (integer positions or a boolean mask), same classes."""
        idx = np.asarray(index)
        return FlowTable(
            labels=self.labels[idx],
            class_names=self.class_names,
            sizes=self.sizes[idx],
            directions=self.directions[idx],
            times=self.times[idx],
            lengths=self.lengths[idx],
            packets=self.packets[idx],
            meta={k: v[idx] for k, v in self.meta.items()},
        )

    def truncate(self, n_packets: int) -> FlowTable:
        """Keep the first `n_packets` packets (padding with zeros when flows are shorter)."""
        if n_packets < 1:
            raise ValueError(f"n_packets must be >= 1, got {n_packets}")
        p = self.max_packets

        def fit(a: np.ndarray) -> np.ndarray:
            if n_packets <= p:
                return a[:, :n_packets].copy()
            return np.pad(a, ((0, 0), (0, n_packets - p)))

        return FlowTable(
            labels=self.labels,
            class_names=self.class_names,
            sizes=fit(self.sizes),
            directions=fit(self.directions),
            times=fit(self.times),
            lengths=np.minimum(self.lengths, n_packets),
            packets=self.packets,
            meta=dict(self.meta),
        )

    def with_classes(self, keep: np.ndarray) -> FlowTable:
        """Drop classes not in `keep` (`(K,)` bool) and renumber labels densely."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        rows = keep[self.labels]
        out = self.take(rows)
        out.labels = new_index[out.labels].astype(np.int64)
        out.class_names = tuple(c for c, k in zip(self.class_names, keep) if k)
        return out

    def relabel(self, class_names: Sequence[str]) -> tuple[FlowTable, dict[str, int]]:
        """Map labels onto `class_names` by name.

        Returns the table restricted to flows whose class is in `class_names`, and the
        number of flows left out per unknown class.
        """
        position = {name: i for i, name in enumerate(class_names)}
        mapping = np.array([position.get(c, -1) for c in self.class_names], dtype=np.int64)
        new_labels = mapping[self.labels] if len(self.labels) else self.labels
        known = new_labels >= 0
        dropped = {c: int(n) for c, n, m in zip(self.class_names, self.class_counts(), mapping) if m < 0 and n > 0}
        out = self.take(known)
        out.labels = new_labels[known]
        out.class_names = tuple(class_names)
        return out, dropped

    @staticmethod
    def concat(tables: Sequence[FlowTable]) -> FlowTable:
        """Stack tables with identical classes and packet counts."""
        if not tables:
            raise ValueError("FlowTable.concat needs at least one table")
        names = tables[0].class_names
        for t in tables[1:]:
            if t.class_names != names:
                raise ValueError("FlowTable.concat: tables have different class_names")
            if t.max_packets != tables[0].max_packets:
                raise ValueError("FlowTable.concat: tables have different packet counts")
        keys = set(tables[0].meta)
        for t in tables[1:]:
            keys &= set(t.meta)
        return FlowTable(
            labels=np.concatenate([t.labels for t in tables]),
            class_names=names,
            sizes=np.concatenate([t.sizes for t in tables]),
            directions=np.concatenate([t.directions for t in tables]),
            times=np.concatenate([t.times for t in tables]),
            lengths=np.concatenate([t.lengths for t in tables]),
            packets=np.concatenate([t.packets for t in tables]),
            meta={k: np.concatenate([t.meta[k] for t in tables]) for k in sorted(keys)},
        )
