"""Seeded random generators: every random draw in tsda comes from a `torch.Generator` made
here from a seed, never from torch's global state; and `cumsum`, deterministic on CUDA too.
A leaf module (imports nothing from tsda)."""

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


def cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """`torch.cumsum(x, dim)`, deterministic everywhere: CUDA's floating-point cumsum has no
    deterministic kernel (under `torch.use_deterministic_algorithms(True)`, what
    `--trainer.deterministic true` sets, it raises; with `"warn"` it warns on every call),
    so there the running sum is taken one position at a time (`sequential_cumsum`: the
    same additions in the same order, so the same values); elsewhere `torch.cumsum`."""
    if x.is_cuda and x.is_floating_point() and torch.are_deterministic_algorithms_enabled():
        return sequential_cumsum(x, dim)
    return torch.cumsum(x, dim)


def sequential_cumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The running sum of `x` along `dim` as elementwise additions, first position first,
    accumulated in float64 and cast back (as the CPU kernel accumulates floats); one small
    kernel per position, so meant for short axes (a flow's L <= 64 packets)."""
    parts = x.to(torch.float64 if x.is_floating_point() else x.dtype).unbind(dim)
    out = [parts[0]]
    for part in parts[1:]:
        out.append(out[-1] + part)
    return torch.stack(out, dim).to(x.dtype)
