"""Masking augmentations (the paper's second family): zero values; every feature may be
altered (p = 1 for size, direction and iat).

"Zero" is the value 0 in the paper's feature encoding: size 0, iat 0 and, for direction,
tcbench's 0 = client to server, which is +1 in tsda's encoding (a real packet cannot
have direction 0; that marks padding). Packets are never removed: lengths do not change.
"""

from __future__ import annotations

import torch

from tsda.augment.base import Augmentation, _check_probability
from tsda.augment.ops import positions, randint_upto, zero_packet_values
from tsda.data.batch import FlowBatch

_ALL = {"size": 1.0, "direction": 1.0, "iat": 1.0}


def _masked(batch: FlowBatch, where: torch.Tensor) -> FlowBatch:
    """Zero the values `where (B, 3, L)` on real packets (padding and first iat stay 0)."""
    return batch.replace(x=zero_packet_values(batch.x, where, batch.mask()))


class BernoulliMask(Augmentation):
    """Zero values with a fixed probability (paper: "zero values with a fixed probability").

    Each value (packet x feature) is zeroed independently with probability `p`.

    Args:
        p: probability that a value is zeroed. Default 0.1: about 2 of 20 packets per
            feature, the same number of values per feature as WindowMask's 2-packet window.
    """

    family = "mask"
    alters = _ALL

    def __init__(self, p: float = 0.1) -> None:
        _check_probability("BernoulliMask.p", p)
        self.p = p

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        hit = torch.rand(batch.x.shape, generator=generator, device=batch.device) < self.p  # (B, 3, L)
        return _masked(batch, hit)


class WindowMask(Augmentation):
    """Zero a segment of `window` packets at a random start (paper: "zero a segment of 2
    packets at a random start"), every feature of those packets.

    The start is uniform over the positions where the window fits inside the flow's real
    packets (a flow shorter than the window is masked whole).

    Args:
        window: packets in the segment. Default 2, the paper's.
    """

    family = "mask"
    alters = _ALL

    def __init__(self, window: int = 2) -> None:
        if window < 1:
            raise ValueError(f"WindowMask.window must be >= 1, got {window}")
        self.window = window

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        start = randint_upto((batch.lengths - self.window).clamp_min(0), generator)  # (B,)
        pos = positions(batch.n_packets, batch.device)  # (1, L)
        hit = (pos >= start[:, None]) & (pos < start[:, None] + self.window)  # (B, L)
        return _masked(batch, hit[:, None, :].expand_as(batch.x))
