"""One magnitude `m` in [0, 1] for every hand-crafted augmentation, as RandAugment and
TrivialAugment use for images.

Each op has one parameter that sets its strength; `m` maps linearly onto a range of it,
`value = bottom + m (top - bottom)` (rounded half up for integers), and its other
parameters keep their defaults. `bottom` is the value where the op does nothing, so
`m = 0` is the identity (`Identity`, since most classes reject that value: a 0-s window
is no window); Flip and Interpolation have no parameter and are themselves at every m.
Every range puts today's default at `m = 0.5`, so `m = 0.5` is the study's setting, and
its top is the strongest setting that still leaves a flow recognisable (`why`).
`tsda augment list` shows each range.

    from_magnitude(Wrap, 0.25)           # Wrap(p=0.1)
    from_magnitude(ChangeRTT, 1.0)       # ChangeRTT(low=0.0, high=2.0)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from tsda.augment.amplitude import ConstantWrapUp, GaussianNoise, GaussianWrapUp, SineWrapUp, SpikeNoise
from tsda.augment.base import Augmentation, Identity
from tsda.augment.masking import BernoulliMask, WindowMask
from tsda.augment.mixing import Mixup
from tsda.augment.order import CutMix, Flip, Interpolation, PacketLoss, Permutation, Translation, Wrap
from tsda.augment.traffic import ChangeRTT, TcbenchPacketLoss, TimeShift


@dataclass(frozen=True)
class Magnitude:
    """How `m` sets an op's strength parameter.

    Attributes:
        param: the parameter m sets; "" for an op without one (the op at every m).
        top: its value at m = 1.
        why: why the range ends there.
        bottom: its value at m = 0, where the op does nothing.
        integer: the parameter counts something (rounded half up).
        spread: the value `s` is a half-width: the op's factor range is
            `low, high = 1 - s, 1 + s` (ConstantWrapUp, ChangeRTT).
    """

    param: str = ""
    top: float = 0.0
    why: str = "no parameter: the rule fixes everything, so every m gives the op itself"
    bottom: float = 0.0
    integer: bool = False
    spread: bool = False

    def value(self, m: float) -> float:
        """The parameter's value at `m`."""
        v = self.bottom + m * (self.top - self.bottom)
        # 12 decimals: equal settings get equal reprs (0.05 * 0.1 is 0.005000000000000001)
        return float(math.floor(v + 0.5)) if self.integer else round(v, 12)

    def kwargs(self, m: float) -> dict[str, Any]:
        """The `__init__` arguments that `m` sets."""
        if not self.param:
            return {}
        v = self.value(m)
        if self.spread:
            return {"low": 1.0 - v, "high": 1.0 + v}
        return {self.param: int(v) if self.integer else v}

    def default_m(self, cls: type[Augmentation]) -> float | None:
        """The m of the class's default (None without a parameter)."""
        if not self.param:
            return None
        default = inspect.signature(cls.__init__).parameters["high" if self.spread else self.param].default
        v = default - 1.0 if self.spread else default
        return (v - self.bottom) / (self.top - self.bottom)

    def describe(self, cls: type[Augmentation]) -> str:
        """E.g. `p: 0..0.4 (default m=0.5)`, as `tsda augment list` shows it."""
        if not self.param:
            return "- (no parameter)"
        name = "spread s (low, high = 1-s, 1+s)" if self.spread else self.param
        return f"{name}: {self.bottom:g}..{self.top:g} (default m={self.default_m(cls):.2g})"


_SAME_CLASS = "same class: labels unchanged"
#: every hand-crafted op's magnitude range; all defaults sit at m = 0.5
MAGNITUDES: dict[type[Augmentation], Magnitude] = {
    GaussianNoise: Magnitude("sigma", 0.1, "0.1 = 146 bytes or a x2.5 gap: more swamps small packets"),
    SpikeNoise: Magnitude("sigma", 0.4, "spikes average 0.32 (470 bytes), still on at most 3 values"),
    GaussianWrapUp: Magnitude("amplitude", 0.6, "a 60 % bump; the curve must stay positive (< 1)"),
    SineWrapUp: Magnitude("amplitude", 0.6, "a 60 % swing; the curve must stay positive (< 1)"),
    ConstantWrapUp: Magnitude("spread", 0.4, "iat x0.6..1.4: a 100 ms gap becomes 15..640 ms", spread=True),
    BernoulliMask: Magnitude("p", 0.2, "4 of 20 values per feature; more erases the flow"),
    WindowMask: Magnitude("window", 4, "4 of 20 packets, Translation's default shift", integer=True),
    Interpolation: Magnitude(),
    Flip: Magnitude(),
    PacketLoss: Magnitude("dt", 0.1, "0.1 s: two mobile round trips lost"),
    Translation: Magnitude("max_shift", 8, "40 % of 20 packets; the flow's start must survive", integer=True),
    Wrap: Magnitude("p", 0.4, "about 4 drops and 4 insertions in 20 packets"),
    Permutation: Magnitude(
        "n_segments", 7, "segments of about 3 packets; shorter ones keep no order", bottom=1, integer=True
    ),
    CutMix: Magnitude("max_fraction", 1.0, f"up to the whole shorter flow ({_SAME_CLASS})"),
    ChangeRTT: Magnitude("spread", 1.0, "times x0..2; tcbench's x0.5..1.5 at m = 0.5", spread=True),
    TimeShift: Magnitude(
        "max_shift",
        2.0,
        "2 s; tcbench's 1 s at m = 0.5 (any m > 0 drops the first "
        "packet of half the flows: a negative shift moves t = 0 below 0)",
    ),
    TcbenchPacketLoss: Magnitude("half_window", 0.2, "+-0.2 s; tcbench's +-0.1 s at m = 0.5"),
    Mixup: Magnitude("alpha", 0.4, f"alpha -> 0 keeps each flow; mixes nearer 50/50 above ({_SAME_CLASS})"),
}


def check_magnitude(name: str, m: float) -> None:
    """Raise `ValueError` naming `name` unless `m` is in [0, 1]."""
    if not 0.0 <= m <= 1.0:  # False for NaN too
        raise ValueError(f"{name} must be in [0, 1] (a magnitude), got {m}")


def magnitude_of(cls: type[Augmentation]) -> Magnitude:
    """The range of `cls`; raises `ValueError` for a class without one (not hand-crafted)."""
    try:
        return MAGNITUDES[cls]
    except KeyError:
        raise ValueError(f"{cls.__name__} has no magnitude (only the hand-crafted ops have one)") from None


def from_magnitude(cls: type[Augmentation], m: float) -> Augmentation:
    """`cls` at magnitude `m` (its other parameters at their defaults); `Identity()` where
    `m` gives the value that does nothing."""
    check_magnitude(f"{cls.__name__} magnitude", m)
    spec = magnitude_of(cls)
    if spec.param and spec.value(m) == spec.bottom:
        return Identity()
    return cls(**spec.kwargs(m))
