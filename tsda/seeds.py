"""Seeded random generators: every random draw in tsda comes from a `torch.Generator` made
here from a seed, never from torch's global state. A leaf module (imports nothing from tsda)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def seeded_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A `torch.Generator` on `device` (default CPU) seeded with `seed`."""
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build networks inside this block to draw their initial weights from `seed`: torch's
    layer initialisers only use the global generator, so the block forks it (the state
    outside is left as it was) and seeds the fork."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
