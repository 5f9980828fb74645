"""Augmentations that mix each flow with a partner from its batch: their base, and Mixup
(Zhang et al. 2018), the standard mixing baseline, made flow-valid (CutMix: `order`)."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch

from tsda.augment.base import Augmentation
from tsda.augment.ops import check_mixing, check_positive, mix_labels, partners, sample_beta
from tsda.data.batch import IAT, SIZE, FlowBatch

_VALUES = slice(SIZE, IAT + 1, IAT - SIZE)  # the size and iat channels, as a view


class PairAugmentation(Augmentation):
    """Mixes each flow with a partner drawn from the batch (`same_class`: of its class).

    Subclasses implement `mix`. On a subset of rows (`apply_to`, as per-flow choices call
    it) partners still come from the whole batch: a subset of a few flows would leave
    most flows without a partner of their class.
    """

    same_class: bool

    @abstractmethod
    def mix(self, batch: FlowBatch, other: FlowBatch, generator: torch.Generator) -> FlowBatch:
        """`batch` mixed with `other`, its partners (row i is flow i's), same size."""

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        return self.mix(batch, batch.index(partners(batch.labels, self.same_class, generator)), generator)

    def apply_to(self, batch: FlowBatch, rows: slice, generator: torch.Generator) -> FlowBatch:
        other = partners(batch.labels, self.same_class, generator)[rows]  # (b,) rows of the whole batch
        return self.mix(batch.index(rows), batch.index(other), generator)


class Mixup(PairAugmentation):
    """Mix each flow with a partner: `x' = lam x + (1 - lam) x_partner`.

    `lam ~ Beta(alpha, alpha)`, folded to `max(lam, 1 - lam)` so each flow stays the
    dominant one of its mix (its direction, length and hard label are kept). Sizes and
    iats are mixed on the packets real in both flows; packets beyond the partner's length
    keep their own values; directions are the flow's own (a mean of +1 and -1 is no
    direction). Partners are drawn from the batch, of the same class by default; across
    classes (`same_class=False`) the soft labels are `lam` on the own class and
    `1 - lam` on the partner's (`FlowBatch.soft_labels`, `(B, K)`).

    Args:
        alpha: Beta parameter. Default 0.2, Zhang et al.'s choice for large datasets
            (most mixes stay close to one flow).
        same_class: draw partners of the same class (labels unchanged). Default True.
        num_classes: K, required when `same_class` is False.
    """

    family = "mixing"
    alters: ClassVar[dict[str, float]] = {"size": 1.0, "direction": 0.0, "iat": 1.0}

    def __init__(self, alpha: float = 0.2, same_class: bool = True, num_classes: int | None = None) -> None:
        check_positive("Mixup.alpha", alpha)
        check_mixing("Mixup", same_class, num_classes)
        self.alpha, self.same_class, self.num_classes = alpha, same_class, num_classes

    def mix(self, batch: FlowBatch, other: FlowBatch, generator: torch.Generator) -> FlowBatch:
        lam = sample_beta(self.alpha, len(batch), generator, batch.device)  # (B,)
        lam = torch.maximum(lam, 1.0 - lam)
        both = (batch.mask() & other.mask())[:, None, :]  # (B, 1, L)
        w = lam[:, None, None]
        x = batch.x.clone()
        own = x[:, _VALUES]  # (B, 2, L); padding and first iats are 0 in both flows
        x[:, _VALUES] = torch.where(both, w * own + (1.0 - w) * other.x[:, _VALUES], own)
        return mix_labels(batch, other, lam, self.same_class, self.num_classes).replace(x=x)
