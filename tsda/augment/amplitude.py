"""Amplitude augmentations (the paper's first family): change values, never order or direction.

They act on the encoded values the classifier sees (size / MTU in [0, 1], log-scaled
iat), as the paper applies them to its feature series. Which features a flow has altered
is drawn per flow from the paper's table: size with p = 0.5 and iat with p = 0.5
(Constant WrapUp: iat only, p = 1); direction never. Results are clipped to valid
values (size in [0, 1], i.e. at most one MTU; iat >= 0); padding and the first packet's
iat stay 0.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch

from tsda.augment.base import Augmentation
from tsda.augment.ops import (
    alter_values,
    check_at_most,
    check_positive,
    check_range,
    feature_draw,
    positions,
    uniform,
)
from tsda.data.batch import CHANNELS, FlowBatch

_HALF = {"size": 0.5, "direction": 0.0, "iat": 0.5}
#: largest noise scale (encoded units: 1 = the whole size range) and largest iat factor;
#: beyond them an encoded iat can leave the range a decoded gap can hold
MAX_SIGMA = 1.0
MAX_FACTOR = 4.0


class _Amplitude(Augmentation):
    """Draw the altered features per flow, let `propose` change the values of the
    features this class may alter, keep the proposal where drawn, clip to valid values."""

    family = "amplitude"

    @abstractmethod
    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        """New `(B, k, L)` values for `values (B, k, L)`, the k features with p > 0."""

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        channels = _channels(self.alters)
        chosen = feature_draw(self.alters, len(batch), generator, batch.device)[:, channels]  # (B, k)
        proposal = self.propose(batch.x[:, channels], batch, generator)  # (B, k, L)
        return alter_values(batch, proposal, chosen, channels)


def _channels(alters: dict[str, float]) -> slice:
    """The channels with p > 0 as a slice (a view, no copy): (size, iat) or (iat,)."""
    idx = [i for i, c in enumerate(CHANNELS) if alters[c] > 0]
    step = idx[1] - idx[0] if len(idx) > 1 else 1
    if idx != list(range(idx[0], idx[-1] + 1, step)):
        raise ValueError(f"altered channels {idx} are not evenly spaced")
    return slice(idx[0], idx[-1] + 1, step)


class GaussianNoise(_Amplitude):
    """Add Gaussian noise to every value (paper: "add Gaussian noise to every value").

    Args:
        sigma: standard deviation in encoded units. Default 0.05: 5 % of the size range
            (73 bytes) and, on iat, a factor of about e^(0.05 x 9.2) = 1.6 on (1 + gap / 1 ms),
            small enough to keep a flow recognisable.
    """

    alters = _HALF

    def __init__(self, sigma: float = 0.05) -> None:
        check_positive("GaussianNoise.sigma", sigma, allow_zero=True)
        check_at_most("GaussianNoise.sigma", sigma, MAX_SIGMA)
        self.sigma = sigma

    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        return values + torch.randn(values.shape, generator=generator, device=values.device) * self.sigma


class SpikeNoise(_Amplitude):
    """Add |Gaussian| noise to at most `max_spikes` non-zero values of each altered feature
    (paper: "add |Gaussian| noise to at most 3 non-zero values").

    Each flow and feature draws its number of spikes uniformly in 1..`max_spikes` and
    places them on distinct non-zero values (fewer when it has fewer non-zero values).

    Args:
        max_spikes: at most this many spikes per flow and feature. Default 3, the paper's.
        sigma: scale of the |N(0, sigma)| spikes in encoded units. Default 0.2: a spike
            averages 0.16 (about 230 bytes, or a x4 gap), visibly larger than GaussianNoise.
    """

    alters = _HALF

    def __init__(self, max_spikes: int = 3, sigma: float = 0.2) -> None:
        if max_spikes < 1:
            raise ValueError(f"SpikeNoise.max_spikes must be >= 1, got {max_spikes}")
        check_positive("SpikeNoise.sigma", sigma, allow_zero=True)
        check_at_most("SpikeNoise.sigma", sigma, MAX_SIGMA)
        self.max_spikes, self.sigma = max_spikes, sigma

    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        b, c, length = values.shape
        dev, k = values.device, min(self.max_spikes, length)
        eligible = (values != 0) & batch.mask()[:, None, :]  # (B, k', L)
        keys = torch.where(eligible, torch.rand(values.shape, generator=generator, device=dev), -1.0)
        top = keys.topk(k, dim=2).values  # (B, k', k) largest keys first
        count = 1 + (torch.rand((b, c, 1), generator=generator, device=dev) * k).long()  # in 1..k
        threshold = top.gather(2, count - 1)  # (B, k', 1) the count-th largest key
        spiked = eligible & (keys >= threshold)  # count values (fewer if fewer are non-zero)
        return values + torch.randn(values.shape, generator=generator, device=dev).abs() * self.sigma * spiked


class GaussianWrapUp(_Amplitude):
    """Multiply all values by a smooth Gaussian-shaped curve (paper: "multiply all values
    by a smooth Gaussian-shaped curve").

    The curve is `1 + a exp(-(i - mu)^2 / (2 width^2))` over packet positions `i`, one per
    flow and feature, with `a ~ U[-amplitude, amplitude]` and its centre `mu` uniform over
    the flow's real packets: a bump (or dip) on a few neighbouring packets.

    Args:
        amplitude: largest relative change at the bump's centre, in [0, 1) so the curve
            stays positive. Default 0.3: sizes change by at most 30 %, like the common
            magnitude-warping sigma of 0.2-0.3 (Um et al. 2017).
        width: standard deviation of the bump in packets. Default 3.0: the 7 packets
            within one width of the centre get at least 60 % of the peak change, a local
            distortion of a 20-packet flow rather than a global rescaling.
    """

    alters = _HALF

    def __init__(self, amplitude: float = 0.3, width: float = 3.0) -> None:
        if not 0.0 <= amplitude < 1.0:
            raise ValueError(f"GaussianWrapUp.amplitude must be in [0, 1), got {amplitude}")
        check_positive("GaussianWrapUp.width", width)
        self.amplitude, self.width = amplitude, width

    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        (b, c, length), dev = values.shape, values.device
        a = uniform((b, c, 1), generator, dev, -self.amplitude, self.amplitude)
        mu = uniform((b, c, 1), generator, dev) * batch.lengths[:, None, None]  # (B, k, 1)
        pos = positions(length, dev)[None].float()  # (1, 1, L)
        return values * (1.0 + a * torch.exp(-0.5 * ((pos - mu) / self.width) ** 2))  # (B, k, L)


class SineWrapUp(_Amplitude):
    """Multiply all values by a sinusoid (paper: "multiply all values by a sinusoid").

    The curve is `1 + a sin(2 pi f i / L + phi)` over packet positions `i`, one per flow
    and feature, with `a ~ U[0, amplitude]`, `f ~ U[min_cycles, max_cycles]` cycles over
    the `L` positions and phase `phi ~ U[0, 2 pi)`.

    Args:
        amplitude: largest relative change, in [0, 1) so the curve stays positive.
            Default 0.3, as GaussianWrapUp.
        min_cycles, max_cycles: range of the frequency in cycles per `L` packets.
            Default 0.5 to 2: from one slow swell to two oscillations over the flow.
    """

    alters = _HALF

    def __init__(self, amplitude: float = 0.3, min_cycles: float = 0.5, max_cycles: float = 2.0) -> None:
        if not 0.0 <= amplitude < 1.0:
            raise ValueError(f"SineWrapUp.amplitude must be in [0, 1), got {amplitude}")
        check_range("SineWrapUp", min_cycles, max_cycles, "min_cycles", "max_cycles")
        self.amplitude, self.min_cycles, self.max_cycles = amplitude, min_cycles, max_cycles

    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        (b, c, length), dev = values.shape, values.device
        a = uniform((b, c, 1), generator, dev, 0.0, self.amplitude)
        f = uniform((b, c, 1), generator, dev, self.min_cycles, self.max_cycles)
        phi = uniform((b, c, 1), generator, dev, 0.0, 2 * math.pi)
        pos = positions(length, dev)[None].float()  # (1, 1, L)
        return values * (1.0 + a * torch.sin(2 * math.pi * f * pos / length + phi))  # (B, k, L)


class ConstantWrapUp(_Amplitude):
    """Multiply all IATs by one uniformly drawn factor (paper: "multiply all IATs by one
    uniformly drawn factor"; iat only, p = 1).

    The factor `s ~ U[low, high]` multiplies the encoded iat, so a gap `g` becomes
    `u ((1 + g/u)^s - 1)` with `u` = 1 ms: a power warp of the gaps, unlike tcbench's
    ChangeRTT which scales the seconds linearly.

    Args:
        low, high: range of the factor. Default 0.8 to 1.2: a 100 ms gap becomes 39 to
            253 ms, about the spread of ChangeRTT's x0.5 to x1.5.
    """

    alters: ClassVar[dict[str, float]] = {"size": 0.0, "direction": 0.0, "iat": 1.0}

    def __init__(self, low: float = 0.8, high: float = 1.2) -> None:
        check_range("ConstantWrapUp", low, high, "low", "high")
        check_at_most("ConstantWrapUp.high", high, MAX_FACTOR)
        self.low, self.high = low, high

    def propose(self, values: torch.Tensor, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        return values * uniform((len(batch), 1, 1), generator, values.device, self.low, self.high)
