"""tcbench's three time-based augmentations (from Horowitz et al.'s flowpic study, as tcbench
implements them for packet series), applied in real time.

The encoded iat channel is decoded to seconds with the `FlowCodec` formula, changed, and
encoded back; packets that leave are removed and the rest re-packed (their arrival
times unchanged, see `tsda.augment.ops.drop_packets`). `iat_unit` and `iat_max` must be
the data's codec settings (the defaults are the codec's).
"""

from __future__ import annotations

import torch

from tsda.augment.base import Augmentation
from tsda.augment.ops import (
    check_positive,
    check_range,
    drop_packets,
    finish,
    flow_times,
    last_time,
    time_codec,
    uniform,
)
from tsda.data.batch import IAT, FlowBatch

_MOVES = {"size": 1.0, "direction": 1.0, "iat": 1.0}


class ChangeRTT(Augmentation):
    """Multiply the times by `alpha ~ U[low, high]` (tcbench: change RTT, "times x alpha,
    alpha ~ U[0.5, 1.5]"): every gap of a flow scales by the same factor.

    Args:
        low, high: range of alpha. Default 0.5 to 1.5, tcbench's.
        iat_unit, iat_max: the data's `FlowCodec` iat settings.
    """

    family = "time"
    alters = {"size": 0.0, "direction": 0.0, "iat": 1.0}

    def __init__(self, low: float = 0.5, high: float = 1.5, iat_unit: float = 1e-3, iat_max: float = 10.0) -> None:
        check_range("ChangeRTT", low, high, "low", "high")
        self._codec = time_codec("ChangeRTT", iat_unit, iat_max)
        self.low, self.high, self.iat_unit, self.iat_max = low, high, iat_unit, iat_max

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        alpha = uniform((len(batch), 1), generator, batch.device, self.low, self.high)  # (B, 1)
        gaps = self._codec.gaps_from_iat(batch.x[:, IAT].double()) * alpha  # (B, L) seconds
        x = batch.x.clone()
        x[:, IAT] = self._codec.iat_from_gaps(gaps).to(x.dtype)
        return batch.replace(x=finish(x, batch.lengths))


class TimeShift(Augmentation):
    """Add `delta ~ U[-max_shift, max_shift]` seconds to the times and drop the packets
    pushed before 0 (tcbench: time shift).

    Gaps do not see a uniform shift, so in tsda's encoding only a negative shift acts:
    it removes the packets of the flow's first `|delta|` seconds and the first survivor
    becomes the start. A flow that would lose every packet is left unchanged.

    Args:
        max_shift: largest |delta| in seconds. Default 1.0, tcbench's.
        iat_unit, iat_max: the data's `FlowCodec` iat settings.
    """

    family = "time"
    alters = _MOVES

    def __init__(self, max_shift: float = 1.0, iat_unit: float = 1e-3, iat_max: float = 10.0) -> None:
        check_positive("TimeShift.max_shift", max_shift)
        self._codec = time_codec("TimeShift", iat_unit, iat_max)
        self.max_shift, self.iat_unit, self.iat_max = max_shift, iat_unit, iat_max

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        times = flow_times(batch.x, self._codec)  # (B, L) seconds
        delta = uniform((len(batch), 1), generator, batch.device, -self.max_shift, self.max_shift)
        return drop_packets(batch, times + delta.double() < 0, self._codec, times)


class TcbenchPacketLoss(Augmentation):
    """Drop the packets within `+-half_window` seconds of a random instant (tcbench:
    packet loss, "drop packets within +-0.1 s of a random time").

    The instant is uniform between the flow's first and last packet times. A flow that
    would lose every packet is left unchanged.

    Args:
        half_window: seconds on each side of the instant. Default 0.1, tcbench's.
        iat_unit, iat_max: the data's `FlowCodec` iat settings.
    """

    family = "time"
    alters = _MOVES

    def __init__(self, half_window: float = 0.1, iat_unit: float = 1e-3, iat_max: float = 10.0) -> None:
        check_positive("TcbenchPacketLoss.half_window", half_window)
        self._codec = time_codec("TcbenchPacketLoss", iat_unit, iat_max)
        self.half_window, self.iat_unit, self.iat_max = half_window, iat_unit, iat_max

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        times = flow_times(batch.x, self._codec)  # (B, L) seconds
        end = last_time(times, batch.lengths)  # (B,)
        t0 = torch.rand(end.shape, generator=generator, device=batch.device, dtype=times.dtype) * end
        drop = (times - t0[:, None]).abs() <= self.half_window  # (B, L)
        return drop_packets(batch, drop, self._codec, times)
