"""Seeded random generators: every random draw in tsda comes from a `torch.Generator` made
here from a seed, never from torch's global state. A leaf module (imports nothing from tsda)."""

from __future__ import annotations

import torch


def seeded_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A `torch.Generator` on `device` (default CPU) seeded with `seed`."""
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(seed))
