"""Pieces of the variation contract (`GenerativeModule.vary`) that every generator family shares.

`vary(batch, strength, generator)` returns, for each flow, a valid flow near it of the same
class: strength 0 is the flow itself, 1 a fresh sample of its class. Each family has its own
way of being "near" (diffusion: SDEdit, the transformer: a kept prefix or kept packets, the
cVAE-GAN: a path in its noise space, `cvae_vary`); what they share is here: reading
`strength` (`strengths`) and giving back, untouched, the flows asked for at strength 0
(`keep_unvaried`), so that "0 = the flow itself" holds exactly, whatever rounding a family's
round trip through its own representation does. `run_variation` is the frame of every
family's `vary` around those: strengths read, the module in eval mode, the output snapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from tsda.data.batch import FlowBatch
from tsda.generators.regions import eval_mode

if TYPE_CHECKING:
    from tsda.generators.base import GenerativeModule


def strengths(strength: float | torch.Tensor, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """`strength` (a number, or one per flow) as a `(B,)` float32 tensor on `device`.

    Raises:
        ValueError: naming `strength`: not a scalar or a `(B,)` tensor, or a value outside
            [0, 1] (NaN included).
    """
    if not isinstance(strength, torch.Tensor):
        # a number is checked here and filled in on the device: no host-to-device copy
        value = float(strength)
        if not 0.0 <= value <= 1.0:  # False for NaN
            raise ValueError(f"strength must be in [0, 1], got values from {value} to {value}")
        return torch.full((batch_size,), value, dtype=torch.float32, device=device)
    s = strength.to(device=device, dtype=torch.float32)
    if s.ndim == 0:
        s = s.expand(batch_size)
    if s.shape != (batch_size,):
        raise ValueError(
            f"strength must be a number or a ({batch_size},) tensor (one per flow), got shape {tuple(s.shape)}"
        )
    inside = ((s >= 0) & (s <= 1)).all()  # 0-d bool, False for NaN
    if s.device.type != "cpu":
        # reading the check back would stall the device once per call (every training batch of
        # fresh variations): an accelerator asserts it on the device instead
        torch._assert_async(inside, "strength must be in [0, 1]")
    elif not bool(inside):
        raise ValueError(f"strength must be in [0, 1], got values from {s.min().item()} to {s.max().item()}")
    return s.contiguous()


def keep_unvaried(varied: FlowBatch, batch: FlowBatch, strength: torch.Tensor) -> FlowBatch:
    """`varied` with the rows of `batch` put back where `strength (B,)` is 0, labelled
    `batch.labels`, on `batch`'s device (selected on the device: no host sync)."""
    varied = varied.to(batch.device)
    zero = (strength == 0).to(batch.device)  # (B,)
    x = torch.where(zero[:, None, None], batch.x, varied.x.to(batch.x.dtype))  # (B, 3, L)
    return FlowBatch(x, torch.where(zero, batch.lengths, varied.lengths), batch.labels)


def run_variation(
    module: GenerativeModule,
    batch: FlowBatch,
    strength: float | torch.Tensor,
    vary: Callable[[FlowBatch, torch.Tensor], torch.Tensor],
) -> FlowBatch:
    """What every `vary` does around its family's own `vary(flows, s) -> x (B, 3, L)`:
    read `strength` (`strengths`), move `batch` to the module's device, run `vary` with
    the module in eval mode (its mode restored after), snap the result to valid flows
    (`FlowCodec.snap`) and put back the flows of strength 0 (`keep_unvaried`)."""
    s = strengths(strength, len(batch), module.device)  # (B,)
    with eval_mode(module):
        x = vary(batch.to(module.device), s)  # (B, 3, L)
    return keep_unvaried(module.codec.snap(x), batch, s)


def cvae_vary(
    generate: Callable[[torch.Tensor], torch.Tensor],
    encode: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    strength: torch.Tensor,
    prior_noise: torch.Tensor,
) -> torch.Tensor:
    """The cVAE-GAN's variation of flows `x (B, 3, L)`, not yet snapped: `(B, 3, L)`.

        z_s = z_enc + s (z_prior - z_enc),    out = G(z_s) + (1 - s) (x - G(z_enc))

    with `z_enc = encode(x) (B, Z)` the encoder's mean of each flow, `z_prior =
    prior_noise (B, Z)` a draw of its class's noise prior and `G = generate` (noise `(B, Z)`
    -> flows `(B, 3, L)`, the class and any conditioning latent bound in). Why the
    residual: a GAN does not reconstruct a flow exactly, so `G(z_s)` alone would start, at
    s = 0, from the reconstruction `G(z_enc)` rather than the flow. Adding back what the
    reconstruction misses, faded by `1 - s`, makes s = 0 the flow itself, s = 1 the fresh
    sample `G(z_prior)`, and everything between continuous in s (up to the hard direction
    and length that `FlowCodec.snap` reads from the sum).
    """
    s = strength[:, None]  # (B, 1)
    z_enc = encode(x)  # (B, Z)
    z_s = torch.lerp(z_enc, prior_noise, s)  # (B, Z), exactly z_prior at s = 1
    return generate(z_s) + (1 - s)[:, :, None] * (x - generate(z_enc))
