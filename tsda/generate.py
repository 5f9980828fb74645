"""Sampling a trained generator into flows: which labels to draw (`plan_labels`), seeded
batched sampling (`sample_flows`) and decoding to a `FlowTable` (`to_table`;
`unlabelled_table` for an unconditional generator's unlabelled flows); `tsda sample`
(`tsda/commands/sample.py`) writes them as Parquet. Labelling an unconditional generator's
flows with a classifier: `tsda.labelling`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tsda.data.batch import FlowBatch
from tsda.data.table import FlowTable
from tsda.generators.base import GenerativeModule
from tsda.seeds import seeded_generator

#: the class of flows an unconditional generator drew without a labeller
UNLABELLED = "unlabelled"


def plan_labels(
    class_names: Sequence[str],
    n: int | None = None,
    per_class: int | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """`(N,)` int64 classes to generate, grouped by class (class-balanced).

    `per_class` flows of each class (of `labels`, or every class), or `n` flows spread as
    evenly as possible over them (the first `n % k` classes get one more).

    Raises:
        ValueError: neither or both of `n` and `per_class`, a count < 1, an unknown label.
    """
    if (n is None) == (per_class is None):
        raise ValueError("give exactly one of --n and --per_class")
    if (n is not None and n < 1) or (per_class is not None and per_class < 1):
        raise ValueError("--n and --per_class must be >= 1")
    names = list(class_names)
    if labels:
        unknown = [name for name in labels if name not in names and not name.isdigit()]
        if unknown:
            raise ValueError(f"--labels: unknown classes {unknown}; the generator knows {names}")
        chosen = [int(name) if name not in names else names.index(name) for name in labels]
        if any(c >= len(names) for c in chosen):
            raise ValueError(f"--labels: class index out of range (K={len(names)})")
    else:
        chosen = list(range(len(names)))
    k = len(chosen)
    if per_class is not None:
        counts = [per_class] * k
    else:
        assert n is not None  # exactly one of the two (checked above)
        counts = [n // k + (i < n % k) for i in range(k)]
    return np.repeat(np.asarray(chosen, dtype=np.int64), counts)


def sample_flows(
    model: GenerativeModule,
    labels: np.ndarray,
    seed: int = 0,
    batch_size: int = 1024,
    progress: bool = False,
    **options: Any,
) -> FlowBatch:
    """Sample `labels (N,)` in batches from one seeded generator; the batch on CPU.

    The same seed, labels and batch size give the same flows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    g = seeded_generator(seed, model.device)
    y = torch.as_tensor(labels, dtype=torch.long)
    parts = []
    starts = range(0, len(y), batch_size)
    for start in tqdm(starts, desc="sampling", unit="batch", disable=not progress):
        batch = model.sample(y[start : start + batch_size].to(model.device), g, **options)
        parts.append(batch.to("cpu"))
    return FlowBatch.cat(parts)


def to_table(model: GenerativeModule, batch: FlowBatch) -> FlowTable:
    """Decode a sampled batch to real units with the model's codec and class names."""
    return model.codec.decode(batch, tuple(model.class_names))


def unlabelled_table(model: GenerativeModule, batch: FlowBatch) -> FlowTable:
    """Decode flows of an unconditional generator drawn without a labeller: one class,
    `UNLABELLED` (the tcbench schema needs a label; the requested labels mean nothing)."""
    return model.codec.decode(batch.replace(labels=torch.zeros_like(batch.labels)), (UNLABELLED,))
