"""Random raw flows and encoded batches for the augmentation tests (sizes above the MTU, zero,
tiny and long gaps, every length), and a seeded generator."""

from __future__ import annotations

import numpy as np
import torch

from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec

#: classes of the random flows
K = 3


def flows(seed: int, b: int, length: int) -> tuple[np.ndarray, ...]:
    """Random raw flows: sizes (some above the MTU), directions, times (zero, tiny, and
    over-10 s gaps), lengths in 1..L and labels in 0..K-1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, b)
    sizes = rng.integers(1, 1700, (b, length)).astype(float)
    dirs = rng.integers(0, 2, (b, length))
    scale = 10.0 ** rng.uniform(-4, 0.5, (b, 1))  # per-flow gap scale: 0.1 ms .. 3 s
    gaps = rng.exponential(1.0, (b, length)) * scale * (rng.random((b, length)) > 0.1)
    gaps[:, 0] = 0.0
    return sizes, dirs, np.cumsum(gaps, 1), lengths, rng.integers(0, K, b)


def make_batch(seed: int = 0, b: int = 64, length: int = 20) -> FlowBatch:
    sizes, dirs, times, lengths, labels = flows(seed, b, length)
    x, ln = FlowCodec(n_packets=length).encode_arrays(sizes, dirs, times, lengths)
    return FlowBatch(x, ln, torch.from_numpy(labels))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
