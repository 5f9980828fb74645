"""Order augmentations (the paper's third family): move, drop, insert or swap packets;
every feature may be altered (p = 1 for size, direction and iat).

Packets move whole (size, direction and iat together). Unless a class says otherwise a
packet's iat is treated as one of its values, as the paper treats its feature series:
it moves with the packet, and an inserted packet gets the mean of its neighbours'. The
first packet's iat is then set to 0 (the codec's rule). After dropping or inserting,
real packets are re-packed to the front, `lengths` updated, and padding is only at the end.
"""

from __future__ import annotations

import torch

from tsda.augment.base import Augmentation, _check_probability
from tsda.augment.mixing import PairAugmentation
from tsda.augment.ops import (
    check_mixing,
    check_positive,
    compact,
    drop_packets,
    finish,
    flow_times,
    gather_packets,
    interleave_means,
    last_time,
    mix_labels,
    positions,
    randint_upto,
    time_codec,
    zero_packet_values,
)
from tsda.data.batch import IAT, FlowBatch

_ALL = {"size": 1.0, "direction": 1.0, "iat": 1.0}


class Interpolation(Augmentation):
    """Insert the mean between each pair of neighbours, then take `L` consecutive values
    from a random start (the paper's rule, verbatim).

    A flow of `n` packets becomes `2n - 1` (sizes and iats of inserted packets are the
    neighbours' means, directions the earlier neighbour's); the window of `L` starts
    uniformly in `[0, 2n - 1 - L]` (at 0 when fewer than `L` remain, which keeps them all).
    No parameter: the rule fixes everything.
    """

    family = "order"
    alters = _ALL

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        length = batch.n_packets
        ext = interleave_means(batch.x)  # (B, 3, 2L-1)
        m = 2 * batch.lengths - 1  # (B,) real positions of ext
        start = randint_upto((m - length).clamp_min(0), generator)  # (B,)
        src = (start[:, None] + positions(length, batch.device)).clamp_max(ext.shape[2] - 1)  # (B, L)
        lengths = torch.minimum(m - start, torch.full_like(m, length))
        return batch.replace(x=finish(gather_packets(ext, src), lengths), lengths=lengths)


class Flip(Augmentation):
    """Reverse the series (paper: "reverse the series").

    The packets come in reverse order and the times are mirrored (`t' = T - t`), so the
    gap before reversed packet `i` is the gap that followed original packet `n - 1 - i`:
    the iat series is the reversed series of gaps, first gap 0. Applying Flip twice gives
    the flow back. No parameter.
    """

    family = "order"
    alters = _ALL

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        x, n = batch.x, batch.lengths[:, None]
        pos = positions(batch.n_packets, batch.device)  # (1, L)
        out = gather_packets(x, (n - 1 - pos).clamp_min(0))  # (B, 3, L)
        out[:, IAT] = x[:, IAT].gather(1, (n - pos).clamp(0, batch.n_packets - 1))
        return batch.replace(x=finish(out, batch.lengths))


class PacketLoss(Augmentation):
    """Drop the packets that arrive inside a random interval of length `dt`, pad with
    zeros (the paper's rule), in real time.

    The interval starts uniformly between the flow's first and last packet times. The
    survivors keep their arrival times (a survivor's gap absorbs the dropped gaps before
    it); a flow that would lose every packet is left unchanged.

    Args:
        dt: interval length in seconds. Default 0.05 s: about one round trip of a mobile
            path, so a loss burst takes out the packets of one exchange (tcbench's own
            packet loss, `TcbenchPacketLoss`, uses a 0.2 s window centred on its instant).
        iat_unit, iat_max: the data's `FlowCodec` iat settings (defaults as the codec's).
    """

    family = "order"
    alters = _ALL

    def __init__(self, dt: float = 0.05, iat_unit: float = 1e-3, iat_max: float = 10.0) -> None:
        check_positive("PacketLoss.dt", dt)
        self._codec = time_codec("PacketLoss", iat_unit, iat_max)
        self.dt, self.iat_unit, self.iat_max = dt, iat_unit, iat_max

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        times = flow_times(batch.x, self._codec)  # (B, L) seconds
        end = last_time(times, batch.lengths)  # (B,)
        t0 = torch.rand(end.shape, generator=generator, device=batch.device, dtype=times.dtype) * end
        drop = (times >= t0[:, None]) & (times <= t0[:, None] + self.dt)  # (B, L)
        return drop_packets(batch, drop, self._codec, times)


class Translation(Augmentation):
    """Shift the series left or right from a random start (paper: "shift the series left
    or right from a random start").

    Each flow draws a shift `s ~ U{1..max_shift}` and a side (left or right, p = 0.5).
    Left: the flow starts at its packet `s` (the first `s` packets leave; at most `n - 1`
    so one packet stays), as if observed from later on. Right: `s` zero packets (size 0,
    iat 0, direction client to server: the paper's zero, like handshake packets without
    payload) come first and the last packets beyond `L` leave.

    Args:
        max_shift: largest shift in packets. Default 4: at most 20 % of the 20 packets,
            so most of the early flow the classifier relies on survives.
    """

    family = "order"
    alters = _ALL

    def __init__(self, max_shift: int = 4) -> None:
        if max_shift < 1:
            raise ValueError(f"Translation.max_shift must be >= 1, got {max_shift}")
        self.max_shift = max_shift

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        n, dev = batch.lengths, batch.device
        s = 1 + randint_upto(torch.full_like(n, self.max_shift - 1), generator)  # (B,)
        right = torch.rand(n.shape, generator=generator, device=dev) < 0.5
        shift = torch.where(right, -s, torch.minimum(s, n - 1))  # (B,) source offset
        src = positions(batch.n_packets, dev) + shift[:, None]  # (B, L)
        out = gather_packets(batch.x, src.clamp(0, batch.n_packets - 1))
        out = zero_packet_values(out, (src < 0)[:, None, :].expand_as(out))
        lengths = (n - shift).clamp(1, batch.n_packets)
        return batch.replace(x=finish(out, lengths), lengths=lengths)


class Wrap(Augmentation):
    """Interpolate or drop packets according to a random indicator (the paper's rule).

    Each packet draws an indicator: drop it (p / 2; never the first packet, so the flow
    keeps its start), insert after it the mean of it and its successor (p / 2, as
    Interpolation does), or keep it (1 - p). The result is re-packed and cut to `L`.

    Args:
        p: probability that a packet is dropped or followed by an inserted one. Default
            0.2: about 2 drops and 2 insertions in 20 packets, a mild local time warp.
    """

    family = "order"
    alters = _ALL

    def __init__(self, p: float = 0.2) -> None:
        _check_probability("Wrap.p", p)
        self.p = p

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        b, length, dev = len(batch), batch.n_packets, batch.device
        u = torch.rand((b, length), generator=generator, device=dev)
        pos = positions(length, dev)
        real = batch.mask()  # (B, L)
        drop = (u < self.p / 2) & (pos > 0)
        insert = (u >= self.p / 2) & (u < self.p) & (pos + 1 < batch.lengths[:, None])
        keep = torch.zeros((b, 2 * length - 1), dtype=torch.bool, device=dev)
        keep[:, 0::2] = real & ~drop
        keep[:, 1::2] = insert[:, :-1]
        x, lengths = compact(interleave_means(batch.x), keep, length)
        return batch.replace(x=finish(x, lengths), lengths=lengths)


class Permutation(Augmentation):
    """Cut into segments of random sizes and shuffle them (the paper's rule).

    `n_segments - 1` cut points are drawn without replacement among the `n - 1` gaps
    between real packets (fewer segments when the flow is shorter), and the segments are
    put in a random order, each keeping its packets' order.

    Args:
        n_segments: segments per flow. Default 4, as in Um et al. (2017), who introduced
            segment permutation for time series.
    """

    family = "order"
    alters = _ALL

    def __init__(self, n_segments: int = 4) -> None:
        if n_segments < 2:
            raise ValueError(f"Permutation.n_segments must be >= 2, got {n_segments}")
        self.n_segments = n_segments

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        b, length, dev = len(batch), batch.n_packets, batch.device
        k = self.n_segments
        pos = positions(length, dev)  # (1, L)
        real = batch.mask()
        # 1. cut before packet j (1 <= j < n): the k - 1 largest random keys
        can_cut = (pos >= 1) & real
        keys = torch.where(can_cut, torch.rand((b, length), generator=generator, device=dev), -1.0)
        top_keys, top_pos = keys.topk(min(k - 1, length), dim=1)  # (B, k-1)
        cut = ((top_pos[..., None] == pos[None]) & (top_keys[..., None] >= 0)).any(1)  # (B, L)
        segment = cut.long().cumsum(1)  # (B, L) in 0..k-1
        # 2. a random rank per segment; packets sorted by (rank, position), padding last
        rank = torch.rand((b, k), generator=generator, device=dev).argsort(1).argsort(1)  # (B, k)
        key = torch.where(real, rank.gather(1, segment) * length + pos, k * length + pos)
        out = gather_packets(batch.x, key.argsort(1))
        return batch.replace(x=finish(out, batch.lengths))


class CutMix(PairAugmentation):
    """Patch a segment of one sample with the same segment of another (the paper's rule).

    Each flow draws a partner from the batch (of the same class by default) and a
    segment length `w ~ U{1..floor(max_fraction * m)}` at a start uniform in
    `[0, m - w]`, with `m` the shorter flow's length; packets `start..start+w-1` are the
    partner's (all features). Lengths do not change; a flow too short for one packet
    within `max_fraction` (`max_fraction * m < 1`) is left unchanged. Across classes (`same_class=False`)
    the soft labels weigh each class by its share of the flow's packets.

    Args:
        max_fraction: largest share of the shorter flow that is patched, in (0, 1].
            Default 0.5: the flow keeps at least half its own packets, so its label
            stays the dominant one.
        same_class: draw partners of the same class (labels unchanged). Default True:
            the paper counts CutMix among label-preserving augmentations.
        num_classes: K, required when `same_class` is False (width of the soft labels).
    """

    family = "order"
    alters = _ALL

    def __init__(self, max_fraction: float = 0.5, same_class: bool = True, num_classes: int | None = None) -> None:
        if not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"CutMix.max_fraction must be in (0, 1], got {max_fraction}")
        check_mixing("CutMix", same_class, num_classes)
        self.max_fraction, self.same_class, self.num_classes = max_fraction, same_class, num_classes

    def mix(self, batch: FlowBatch, other: FlowBatch, generator: torch.Generator) -> FlowBatch:
        m = torch.minimum(batch.lengths, other.lengths)  # (B,)
        w_max = (m.double() * self.max_fraction).long()  # (B,) 0 when too short to patch
        w = torch.where(w_max >= 1, 1 + randint_upto((w_max - 1).clamp_min(0), generator), 0)
        start = randint_upto(m - w, generator)  # (B,)
        pos = positions(batch.n_packets, batch.device)
        patch = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, L)
        x = finish(torch.where(patch[:, None, :], other.x, batch.x), batch.lengths)
        own = 1.0 - w.double() / batch.lengths.double()  # (B,)
        return mix_labels(batch, other, own, self.same_class, self.num_classes).replace(x=x)
