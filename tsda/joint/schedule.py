"""The schedule of joint training (`tsda.joint.module.JointModule`): which part trains when, and
how much the classifier's loss weighs the generated flows.

Epochs `[0, C)` (`classifier_warmup_epochs` = C) train the classifier alone on real flows;
epochs `[C, C + G)` (`generator_warmup_epochs` = G) also train the generator, whose flows do
not enter the classifier yet; from epoch `C + G` on both train together (`joint`), the
weight of the generated flows in the classifier's cross-entropy ramping up from 0 to
`w_generated` over `rampup_epochs` (per step, as a fraction of the epoch):

    t = (epoch - C - G + batch / batches_per_epoch) / rampup_epochs, clipped to [0, 1]
    linear:   w(t) = w_generated * t
    sigmoid:  w(t) = w_generated * exp(-5 (1 - t)^2)   (Laine & Aila 2017's ramp-up)

`rampup_epochs = 0` gives `w_generated` from the first joint step. Pure arithmetic of the
epoch and step: a run resumed from a checkpoint follows the same schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

#: what trains in an epoch: the classifier alone, both apart, or both together
Phase = Literal["classifier", "generator", "joint"]
#: the shape of the generated flows' weight ramp-up
RampName = Literal["linear", "sigmoid"]
RAMPS: tuple[str, ...] = get_args(RampName)


@dataclass(frozen=True)
class JointSchedule:
    """Phases and generated-flow weight of joint training (see the module docstring).

    Args:
        classifier_warmup_epochs: C, epochs of the classifier alone (>= 0).
        generator_warmup_epochs: G, epochs of the generator trained beside a classifier that
            sees no generated flows yet (>= 0).
        rampup_epochs: epochs over which the generated weight rises to `w_generated` (>= 0).
        rampup: `linear` or `sigmoid` (`RAMPS`).
        w_generated: final weight of generated flows in the classifier's loss (>= 0).

    Raises:
        ValueError: naming `model.<parameter>`, for a negative value or an unknown ramp.
    """

    classifier_warmup_epochs: int = 2
    generator_warmup_epochs: int = 2
    rampup_epochs: int = 2
    rampup: RampName = "linear"
    w_generated: float = 1.0

    def __post_init__(self) -> None:
        names = {
            "classifier_warmup_epochs": self.classifier_warmup_epochs,
            "generator_warmup_epochs": self.generator_warmup_epochs,
            "generated_rampup_epochs": self.rampup_epochs,
        }
        for name, value in names.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"model.{name} must be an integer >= 0, got {value!r}")
        if self.rampup not in RAMPS:
            raise ValueError(f"model.generated_rampup must be one of {RAMPS}, got {self.rampup!r}")
        if not self.w_generated >= 0:  # NaN too
            raise ValueError(f"model.w_generated must be >= 0, got {self.w_generated}")

    @property
    def joint_start(self) -> int:
        """The first epoch of the joint phase."""
        return self.classifier_warmup_epochs + self.generator_warmup_epochs

    def phase(self, epoch: int) -> Phase:
        """What trains in (0-based) `epoch`."""
        if epoch < self.classifier_warmup_epochs:
            return "classifier"
        return "generator" if epoch < self.joint_start else "joint"

    def ramp(self, epoch: int, progress: float = 0.0) -> float:
        """Where the ramp stands at `progress` in [0, 1) of `epoch`: 0 before the joint phase,
        then up to 1 over `rampup_epochs` (`linear` or `sigmoid`)."""
        if epoch < self.joint_start:
            return 0.0
        if self.rampup_epochs == 0:
            return 1.0
        t = min(max((epoch - self.joint_start + progress) / self.rampup_epochs, 0.0), 1.0)
        return t if self.rampup == "linear" else math.exp(-5.0 * (1.0 - t) ** 2)

    def generated_weight(self, epoch: int, progress: float = 0.0) -> float:
        """The weight of generated flows in the classifier's loss: the ramp up to `w_generated`."""
        return float(self.w_generated) * self.ramp(epoch, progress)

    def vary_strength(self, strength: float | Sequence[float], epoch: int, progress: float = 0.0) -> float:
        """The variation strength of joint variations: `strength` itself, or for `[start, end]`
        from `start` (before and at the joint phase's start) to `end` along the ramp."""
        if isinstance(strength, (int, float)):
            return float(strength)
        start, end = (float(v) for v in strength)
        return start + (end - start) * self.ramp(epoch, progress)
