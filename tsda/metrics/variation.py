"""Fidelity of variations of real flows (`tsda sample --vary FILE`): the file says, per
variation, the row of FILE it was made from (`source_row`) and its `strength`.

A variation should stay near its own flow, the more so the smaller the strength, without
being a copy of it; what `tsda evaluate` reports besides the metrics of any generated set
is, per strength (`variation_distances` on flattened flows, the space of
`memorisation_input`): the distance of each variation to its source, and, apart from that,
to the nearest other training flow (its source left out of the search, so a variation that
merely reproduces its source does not pass for one near the data).

The source rows index the real data file (`tsda evaluate --data.path`, which must be the
FILE that was varied): sources are looked up there by file row (`FILE_ROW`), and a
variation whose class differs from its source's shows that another file was varied.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tsda.data.codec import FlowCodec
from tsda.data.curation import SOURCE_ROW, file_rows
from tsda.data.table import FlowTable
from tsda.errors import TsdaError
from tsda.metrics.discriminative import flat_features
from tsda.metrics.distances import variation_distances

#: the column of `tsda sample --vary` files giving each variation's strength
STRENGTH = "strength"
#: the columns a variation file adds to the tcbench schema (read with its flows as meta)
VARIATION_COLUMNS = (SOURCE_ROW, STRENGTH)


def is_variation_file(table: FlowTable) -> bool:
    """Whether `table` (read with `VARIATION_COLUMNS` as meta) holds variations of real
    flows: both columns, as `tsda sample --vary` writes them (an enlarged file of `tsda
    augment enlarge` has a `source_row` too, into itself, and no strength)."""
    return SOURCE_ROW in table.meta and STRENGTH in table.meta


def variation_fidelity(
    real: FlowTable, train: FlowTable, variations: FlowTable, codec: FlowCodec, where: str = "variations"
) -> dict[str, Any]:
    """Distances of variations to their sources and to the other training flows.

    Args:
        real: the real file's flows (every row that may be a source), `meta[FILE_ROW]`
            (`tsda.data.curation`) the file row of each (absent: row i is file row i).
        train: the training flows, the nearest-neighbour reference (`meta[FILE_ROW]`).
        variations: `meta[SOURCE_ROW]` and `meta[STRENGTH]`, on the classes of `real`.
        where: names the variations in errors (e.g. `--synthetic FILE`).

    Returns:
        `n_variations`, `n_sources`, `sources_in_train` (the share of variations whose
        source is among `train`), `all` (`tsda.metrics.distances.variation_distances` over
        every variation) and `by_strength` (the same per strength, keyed as written, "0.25").

    Raises:
        TsdaError: a source row the real file does not hold, or classes that differ
            between variations and their sources (another file was varied).
    """
    if real.class_names != variations.class_names or real.class_names != train.class_names:
        raise ValueError("variation_fidelity: real, training and variation flows must share their classes")
    source_row = np.asarray(variations.meta[SOURCE_ROW], dtype=np.int64)  # (M,)
    real_rows = file_rows(real)
    position = np.full(max(int(real_rows.max(initial=-1)), int(source_row.max(initial=-1))) + 1, -1)
    position[real_rows] = np.arange(len(real))
    source = position[np.clip(source_row, 0, None)]  # (M,) row of `real`, -1 if none
    source[source_row < 0] = -1
    if (source < 0).any():
        bad = int(source_row[np.argmax(source < 0)])
        raise TsdaError(
            f"{where}: source_row {bad} is no row of the real data ({int((source < 0).sum())} such "
            "variations): evaluate variations against the file they were made from (--data.path)"
        )
    mismatch = real.labels[source] != variations.labels
    if mismatch.any():
        raise TsdaError(
            f"{where}: {int(mismatch.sum())} variations are of another class than their source_row in the "
            "real data: evaluate variations against the file they were made from (--data.path)"
        )
    train_rows = file_rows(train)
    train_position = np.full(max(len(position), int(train_rows.max(initial=-1)) + 1), -1)
    train_position[train_rows] = np.arange(len(train))
    in_train = train_position[source_row]  # (M,) the source's row among the training flows, -1 if none

    def flat(table: FlowTable) -> np.ndarray:  # (N, 3L + 1) as memorisation_input
        return flat_features(codec.encode(table.truncate(codec.n_packets)))

    train_f, source_f, variation_f = flat(train), flat(real.take(source)), flat(variations)
    result: dict[str, Any] = {
        "n_variations": len(variations),
        "n_sources": len(np.unique(source_row)),
        "sources_in_train": float((in_train >= 0).mean()),
        "all": variation_distances(train_f, source_f, variation_f, in_train),
    }
    strength = np.asarray(variations.meta[STRENGTH], dtype=np.float64)  # (M,)
    result["by_strength"] = {
        f"{s:g}": variation_distances(
            train_f, source_f[strength == s], variation_f[strength == s], in_train[strength == s]
        )
        for s in np.unique(strength)
    }
    return result
