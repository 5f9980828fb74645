"""Batched building blocks shared by the augmentations (pure torch, any device).

Every function works on whole batches (`x (B, C, L)`, `lengths (B,)`), draws randomness
only from the `torch.Generator` it is given, and never modifies its inputs in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from tsda.data.batch import CHANNELS, DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.seeds import cumsum

# -- random draws --------------------------------------------------------------------------


def uniform(
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device,
    low: float | torch.Tensor = 0.0,
    high: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """`shape` float32 draws from U[low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def randint_upto(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-row integers uniform in `[0, high]` (`high (B,)` int64 >= 0) -> `(B,)` int64."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return torch.minimum((u * (high + 1)).long(), high)


def feature_draw(alters: Mapping[str, float], n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`(B, 3)` bool: which features of each flow are altered, each True with its
    probability in `alters` (the paper's table: 1, 0.5 or 0), drawn independently."""
    p = torch.tensor([float(alters.get(c, 0.0)) for c in CHANNELS], device=device)  # (3,)
    return torch.rand((n, len(CHANNELS)), generator=generator, device=device) < p


def sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`(n,)` float32 draws from Beta(alpha, alpha) = G1 / (G1 + G2), G ~ Gamma(alpha).

    Gamma draws use Marsaglia and Tsang's method (batched, 4 proposals per draw; each
    is accepted with probability above 0.95, so a draw is left without one with
    probability below 1e-5 and then takes the mode-like value d), with the
    `U^(1/alpha)` boost for alpha < 1. torch's own Gamma and
    Beta samplers take no generator, hence this function.
    """
    g = _sample_gamma(alpha, 2 * n, generator, device).view(2, n)  # (2, n)
    return g[0] / (g[0] + g[1]).clamp_min(1e-30)


def _sample_gamma(
    alpha: float, n: int, generator: torch.Generator, device: torch.device, tries: int = 4
) -> torch.Tensor:
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn((tries, n), generator=generator, device=device)
    u = torch.rand((tries, n), generator=generator, device=device)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
    first = ok.int().argmax(0, keepdim=True)  # (1, n) first accepted proposal (0 if none)
    draws = torch.where(ok.any(0), (d * v).gather(0, first)[0], d)  # (n,)
    if alpha < 1.0:
        boost = torch.rand(n, generator=generator, device=device).clamp_min(1e-30)
        draws = draws * boost ** (1.0 / alpha)
    return draws


# -- layout --------------------------------------------------------------------------------


def positions(n_packets: int, device: torch.device) -> torch.Tensor:
    """`(1, L)` int64 packet positions."""
    return torch.arange(n_packets, device=device)[None, :]


def finish(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero every position `>= lengths` and the first packet's iat: `x (B, 3, L)`."""
    real = positions(x.shape[2], x.device) < lengths[:, None]  # (B, L)
    x = x * real[:, None, :]
    x[:, IAT, 0] = 0.0
    return x


def gather_packets(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Packets `src (B, L')` of `x (B, C, M)` -> `(B, C, L')` (`src` within [0, M))."""
    return x.gather(2, src[:, None, :].expand(-1, x.shape[1], -1))


def compact_index(keep: torch.Tensor, n_packets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each output packet comes from when the kept packets move to the front.

    Args:
        keep: `(B, M)` bool, the packets that stay.
        n_packets: `L` of the result.

    Returns:
        `src (B, L)` int64 source positions (meaningful below `lengths`) and
        `lengths (B,)` = min(kept packets, L).
    """
    counts = keep.long().cumsum(1)  # (B, M) kept packets up to each position
    want = torch.arange(1, n_packets + 1, device=keep.device).expand(keep.shape[0], n_packets).contiguous()
    src = torch.searchsorted(counts, want).clamp_max(keep.shape[1] - 1)  # (B, L)
    return src, counts[:, -1].clamp_max(n_packets)


def compact(x: torch.Tensor, keep: torch.Tensor, n_packets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept packets `keep (B, M)` of `x (B, C, M)` to the front, in order, and cut
    to `n_packets`: returns `x (B, C, L)` zero from `lengths` on, and `lengths (B,)`."""
    src, lengths = compact_index(keep, n_packets)
    real = positions(n_packets, x.device) < lengths[:, None]  # (B, L)
    return gather_packets(x, src) * real[:, None, :], lengths


def interleave_means(x: torch.Tensor) -> torch.Tensor:
    """Insert a packet between every pair of neighbours: `x (B, C, L)` -> `(B, C, 2L-1)`.

    Even positions `2i` hold packet `i`; odd positions `2i+1` hold the mean of packets `i`
    and `i+1` for size and iat, and packet `i`'s direction (the mean of -1 and +1 is no
    direction). For a flow of `n` real packets the first `2n-1` positions are real.
    """
    b, c, length = x.shape
    ext = x.new_zeros(b, c, 2 * length - 1)
    ext[..., 0::2] = x
    mid = (x[..., :-1] + x[..., 1:]) / 2  # (B, C, L-1)
    mid[:, DIRECTION] = x[:, DIRECTION, :-1]
    ext[..., 1::2] = mid
    return ext


def zero_packet_values(x: torch.Tensor, where: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """Set values to the flow encoding's zero where `where (B, 3, L)` is True.

    Size and iat become 0. A direction cannot be 0 on a real packet, so it becomes +1:
    client to server, which is 0 in tcbench's (and the paper's) 0/1 direction encoding.
    With `real (B, L)` only real packets' directions change (padding stays all zero).
    """
    out = x.masked_fill(where, 0.0)
    hit = where[:, DIRECTION] if real is None else where[:, DIRECTION] & real
    out[:, DIRECTION].masked_fill_(hit, 1.0)
    return out


# -- real time -----------------------------------------------------------------------------


def flow_times(x: torch.Tensor, codec: FlowCodec) -> torch.Tensor:
    """`(B, L)` float64 seconds since each flow's first packet (padding: the last time)."""
    return cumsum(codec.gaps_from_iat(x[:, IAT].double()), 1)


def last_time(times: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`(B,)` time of each flow's last real packet."""
    return times.gather(1, (lengths - 1).clamp_min(0)[:, None])[:, 0]


def drop_packets(
    batch: FlowBatch, drop: torch.Tensor, codec: FlowCodec, times: torch.Tensor | None = None
) -> FlowBatch:
    """Remove packets `drop (B, L)` in real time and re-pack the rest to the front.

    Survivors keep their arrival times (`times (B, L)`, from `flow_times` when not
    given), so a survivor's gap grows by the gaps of the packets dropped just before it;
    the first survivor becomes the flow's start (gap 0). A flow that would lose every
    packet is left unchanged.
    """
    x = batch.x
    times = flow_times(x, codec) if times is None else times
    real = batch.mask()  # (B, L)
    keep = real & ~drop
    keep = torch.where(keep.any(1, keepdim=True), keep, real)
    src, lengths = compact_index(keep, x.shape[2])
    kept_times = times.gather(1, src)  # (B, L) seconds
    gaps = torch.diff(kept_times, dim=1, prepend=kept_times[:, :1])  # (B, L) first gap 0
    out = gather_packets(x, src)
    out[:, IAT] = codec.iat_from_gaps(gaps).to(x.dtype)
    return batch.replace(x=finish(out, lengths), lengths=lengths)


# -- value changes -------------------------------------------------------------------------


def alter_values(batch: FlowBatch, proposal: torch.Tensor, chosen: torch.Tensor, channels: slice) -> FlowBatch:
    """Take `proposal (B, k, L)` for the features `channels` (k of them) on the real
    packets of the flows where `chosen (B, k)` is True.

    Sizes are clipped to [0, 1] (at most one MTU), iat to >= 0; padding and the first
    packet's iat stay 0. Amplitude augmentations never pass the direction channel.
    """
    take = chosen[:, :, None] & batch.mask()[:, None, :]  # (B, k, L)
    x = batch.x.clone()
    x[:, channels] = torch.where(take, proposal, x[:, channels])
    x[:, SIZE].clamp_(0.0, 1.0)
    x[:, IAT].clamp_(min=0.0)
    x[:, IAT, 0] = 0.0
    return batch.replace(x=x)


# -- mixing --------------------------------------------------------------------------------


def partners(labels: torch.Tensor, same_class: bool, generator: torch.Generator) -> torch.Tensor:
    """`(B,)` index of another flow of the batch for each flow (a random derangement).

    With `same_class` the partner has the same label; a flow alone in its class in this
    batch is its own partner.
    """
    b = labels.shape[0]
    keys = torch.rand(b, generator=generator, device=labels.device, dtype=torch.float64)
    if same_class:
        keys = keys + labels.double()  # groups by label, random order inside a group
    order = keys.argsort()  # (B,)
    idx = torch.arange(b, device=labels.device)
    if same_class:
        _, counts = torch.unique_consecutive(labels[order], return_counts=True)
        starts = counts.cumsum(0) - counts
        group_start = starts.repeat_interleave(counts)  # (B,)
        group_size = counts.repeat_interleave(counts)  # (B,)
    else:
        group_start, group_size = torch.zeros_like(idx), torch.full_like(idx, b)
    following = group_start + (idx - group_start + 1) % group_size  # (B,) in sorted order
    return order[following][order.argsort()]


def mix_labels(
    batch: FlowBatch, other: FlowBatch, own: torch.Tensor, same_class: bool, num_classes: int | None
) -> FlowBatch:
    """Labels of `batch` after mixing in `other` with weight `1 - own (B,)` on each flow.

    Same-class mixing keeps the labels (and any soft labels). Across classes the soft
    labels become `own * targets + (1 - own) * other targets` (`(B, K)`) and the hard
    label is the dominant flow's (the flow's own at `own >= 0.5`).
    """
    if same_class:
        return batch
    if num_classes is None:
        raise ValueError("num_classes is required to mix flows of different classes")
    w = own[:, None].to(batch.x.dtype)  # (B, 1)
    soft = w * batch.targets(num_classes) + (1.0 - w) * other.targets(num_classes)  # (B, K)
    labels = torch.where(own >= 0.5, batch.labels, other.labels)
    return batch.replace(labels=labels, soft_labels=soft)


def check_mixing(owner: str, same_class: bool, num_classes: int | None) -> None:
    """Mixing across classes needs `num_classes` (the width of the soft labels)."""
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"{owner}.num_classes must be >= 2, got {num_classes}")
    if not same_class and num_classes is None:
        raise ValueError(f"{owner}.num_classes is required when same_class is False (soft labels need K)")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise `ValueError` naming `name` unless `value` is finite and > 0 (>= 0 with `allow_zero`)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")


def check_at_most(name: str, value: float, bound: float) -> None:
    """Raise `ValueError` naming `name` when `value > bound` (outputs would stop being
    valid, decodable flows beyond it)."""
    if value > bound:
        raise ValueError(f"{name} must be <= {bound} (beyond it flows stop being valid), got {value}")


def check_range(name: str, low: float, high: float, low_name: str, high_name: str, minimum: float = 0.0) -> None:
    """Raise `ValueError` unless `minimum <= low <= high` (both finite)."""
    if not (math.isfinite(low) and math.isfinite(high)) or low < minimum:
        raise ValueError(f"{name}.{low_name} must be finite and >= {minimum}, got {low}")
    if high < low:
        raise ValueError(f"{name}.{high_name} must be >= {low_name} ({low}), got {high}")


def time_codec(owner: str, iat_unit: float, iat_max: float) -> FlowCodec:
    """The codec whose iat formula time-based augmentations invert (must match the data's)."""
    check_positive(f"{owner}.iat_unit", iat_unit)
    if not math.isfinite(iat_max) or iat_max <= iat_unit:
        raise ValueError(f"{owner}.iat_max must be finite and > iat_unit ({iat_unit}), got {iat_max}")
    return FlowCodec(iat_unit=iat_unit, iat_max=iat_max)
