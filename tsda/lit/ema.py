"""The exponential moving average of a generator's weights that sampling uses (cGAN and
diffusion share it): torch's `AveragedModel` with decay `decay`, optionally ramped up over
the first updates as `min(decay, (1 + n) / (10 + n))` after `n` updates, so that an early
average does not lag far behind the trained weights."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def check_ema_decay(decay: float) -> None:
    """`model.ema_decay` is in [0, 1) (the one check; generator constructors call it first)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"model.ema_decay must be in [0, 1), got {decay}")


def _ema(decay: float, ramp: bool, averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    d = min(decay, (1.0 + float(n)) / (10.0 + float(n))) if ramp else decay
    return averaged + (current - averaged) * (1.0 - d)


def ema_of(module: nn.Module, decay: float, ramp: bool = False) -> AveragedModel:
    """An EMA copy of `module` (weights and buffers, no gradients): `.module` is the
    averaged network; call `.update_parameters(module)` after each optimiser step (the
    first call copies). Raises ValueError unless `decay` is in [0, 1)."""
    check_ema_decay(decay)
    return AveragedModel(module, avg_fn=partial(_ema, decay, ramp), use_buffers=True).requires_grad_(False)
