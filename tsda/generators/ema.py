"""The exponential moving average of a generator's weights that sampling uses (cGAN and
diffusion share it): torch's `AveragedModel` with decay `decay`, optionally ramped up over
the first updates as `min(decay, (1 + n) / (10 + n))` after `n` updates, so that an early
average does not lag far behind the trained weights.

The update runs after every optimiser step, so it reads nothing back from the device:
`AveragedModel.update_parameters` asks its on-device count `n_averaged` (`bool`, `float`)
once per tensor, and on CUDA each ask waits for the device. `EMA` keeps the count on the
host as well (read from the buffer once after construction or a state-dict load), computes
the decay as a Python float and updates all tensors with one `torch._foreach_lerp_`. Its
state dict is `AveragedModel`'s (`module.*`, `n_averaged`): checkpoints load either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def check_ema_decay(decay: float) -> None:
    """`model.ema_decay` is in [0, 1) (the one check; generator constructors call it first)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"model.ema_decay must be in [0, 1), got {decay}")


class EMA(AveragedModel):
    """An EMA copy of a module, weights and buffers (`AveragedModel` with `use_buffers`):
    after `n` updates, `update_parameters(model)` sets each tensor `a` of the copy to
    `a + (1 - d) (m - a)` with `m` the model's, `d = decay` or, with `ramp`,
    `min(decay, (1 + n) / (10 + n))`; the first update copies."""

    def __init__(self, module: nn.Module, decay: float, ramp: bool = False) -> None:
        super().__init__(module, use_buffers=True)
        self.decay, self.ramp = float(decay), bool(ramp)
        self._count: int | None = 0  # updates so far, on the host (None: read `n_averaged` once)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._count = None

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)
        n = self._count
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach().to(a.device) for a, t in zip(mine, [*model.parameters(), *model.buffers()])]
        if n == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            weight = 1.0 - (min(self.decay, (1.0 + n) / (10.0 + n)) if self.ramp else self.decay)
            floats = [i for i, a in enumerate(mine) if a.is_floating_point()]
            torch._foreach_lerp_([mine[i] for i in floats], [theirs[i] for i in floats], weight)
            for a, m in zip(mine, theirs):  # integer buffers (e.g. BatchNorm's count), as AveragedModel
                if not a.is_floating_point():
                    a.copy_(a + (m - a) * weight)
        self.n_averaged += 1
        self._count = n + 1


def ema_of(module: nn.Module, decay: float, ramp: bool = False) -> EMA:
    """An EMA copy of `module` (weights and buffers, no gradients): `.module` is the
    averaged network; call `.update_parameters(module)` after each optimiser step (the
    first call copies). Raises ValueError unless `decay` is in [0, 1)."""
    check_ema_decay(decay)
    return EMA(module, decay, ramp).requires_grad_(False)
