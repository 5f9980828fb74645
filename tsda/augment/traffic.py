"""tcbench's three time-based augmentations (from Horowitz et al.'s flowpic study, as tcbench
implements them for packet series), applied in real time.

The encoded iat channel is decoded to seconds with the `FlowCodec` formula, changed, and
encoded back; packets that leave are removed and the rest re-packed (their arrival
times unchanged, see `tsda.augment.ops.drop_packets`). The iat formula is the data's:
with `iat_unit` / `iat_max` left unset, each takes the codec of the run it is set up in
(`Augmentation.setup`; `FlowCodec`'s defaults until then); set, they are checked against it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from tsda.augment.base import Augmentation, AugmentContext
from tsda.augment.ops import (
    check_at_most,
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
from tsda.data.codec import FlowCodec

_MOVES = {"size": 1.0, "direction": 1.0, "iat": 1.0}
#: largest time factor of ChangeRTT and largest shift / window (seconds) of the others:
#: beyond them gaps leave any range a flow's codec can hold
MAX_FACTOR = 100.0
MAX_SECONDS = 3600.0


class _TimeBased(Augmentation):
    """Base of the augmentations that work in seconds through the data's iat formula.

    Args:
        iat_unit, iat_max: the `FlowCodec` iat settings; None (default) = the data's,
            taken at `setup`; given values must equal the data's.
    """

    family = "time"

    def __init__(self, iat_unit: float | None, iat_max: float | None) -> None:
        default = FlowCodec()
        self._codec = time_codec(
            self.name,
            default.iat_unit if iat_unit is None else iat_unit,
            default.iat_max if iat_max is None else iat_max,
        )
        self.iat_unit, self.iat_max = iat_unit, iat_max

    def setup(self, context: AugmentContext) -> None:
        codec = context.codec
        if codec is None:
            return
        for name in ("iat_unit", "iat_max"):
            mine, data = getattr(self, name), getattr(codec, name)
            if mine is not None and mine != data:
                raise ValueError(
                    f"{self.name}.{name} = {mine} differs from the data's codec ({name} = {data}); "
                    f"leave it unset to use the data's"
                )
        self._codec = time_codec(self.name, codec.iat_unit, codec.iat_max)


class ChangeRTT(_TimeBased):
    """Multiply the times by `alpha ~ U[low, high]` (tcbench: change RTT, "times x alpha,
    alpha ~ U[0.5, 1.5]"): every gap of a flow scales by the same factor.

    Args:
        low, high: range of alpha, at most `MAX_FACTOR`. Default 0.5 to 1.5, tcbench's.
        iat_unit, iat_max: see `_TimeBased` (default: the data's codec).
    """

    alters: ClassVar[dict[str, float]] = {"size": 0.0, "direction": 0.0, "iat": 1.0}

    def __init__(
        self, low: float = 0.5, high: float = 1.5, iat_unit: float | None = None, iat_max: float | None = None
    ) -> None:
        check_range("ChangeRTT", low, high, "low", "high")
        check_at_most("ChangeRTT.high", high, MAX_FACTOR)
        super().__init__(iat_unit, iat_max)
        self.low, self.high = low, high

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        alpha = uniform((len(batch), 1), generator, batch.device, self.low, self.high)  # (B, 1)
        gaps = self._codec.gaps_from_iat(batch.x[:, IAT].double()) * alpha  # (B, L) seconds
        x = batch.x.clone()
        x[:, IAT] = self._codec.iat_from_gaps(gaps).to(x.dtype)
        return batch.replace(x=finish(x, batch.lengths))


class TimeShift(_TimeBased):
    """Add `delta ~ U[-max_shift, max_shift]` seconds to the times and drop the packets
    pushed before 0 (tcbench: time shift).

    Gaps do not see a uniform shift, so in tsda's encoding only a negative shift acts:
    it removes the packets of the flow's first `|delta|` seconds and the first survivor
    becomes the start. A flow that would lose every packet is left unchanged.

    Args:
        max_shift: largest |delta| in seconds, at most `MAX_SECONDS`. Default 1.0, tcbench's.
        iat_unit, iat_max: see `_TimeBased` (default: the data's codec).
    """

    alters = _MOVES

    def __init__(self, max_shift: float = 1.0, iat_unit: float | None = None, iat_max: float | None = None) -> None:
        check_positive("TimeShift.max_shift", max_shift)
        check_at_most("TimeShift.max_shift", max_shift, MAX_SECONDS)
        super().__init__(iat_unit, iat_max)
        self.max_shift = max_shift

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        times = flow_times(batch.x, self._codec)  # (B, L) seconds
        delta = uniform((len(batch), 1), generator, batch.device, -self.max_shift, self.max_shift)
        return drop_packets(batch, times + delta.double() < 0, self._codec, times)


class TcbenchPacketLoss(_TimeBased):
    """Drop the packets within `+-half_window` seconds of a random instant (tcbench:
    packet loss, "drop packets within +-0.1 s of a random time").

    The instant is uniform between the flow's first and last packet times. A flow that
    would lose every packet is left unchanged.

    Args:
        half_window: seconds on each side of the instant, at most `MAX_SECONDS`. Default
            0.1, tcbench's.
        iat_unit, iat_max: see `_TimeBased` (default: the data's codec).
    """

    alters = _MOVES

    def __init__(self, half_window: float = 0.1, iat_unit: float | None = None, iat_max: float | None = None) -> None:
        check_positive("TcbenchPacketLoss.half_window", half_window)
        check_at_most("TcbenchPacketLoss.half_window", half_window, MAX_SECONDS)
        super().__init__(iat_unit, iat_max)
        self.half_window = half_window

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        times = flow_times(batch.x, self._codec)  # (B, L) seconds
        end = last_time(times, batch.lengths)  # (B,)
        t0 = torch.rand(end.shape, generator=generator, device=batch.device, dtype=times.dtype) * end
        drop = (times - t0[:, None]).abs() <= self.half_window  # (B, L)
        return drop_packets(batch, drop, self._codec, times)
