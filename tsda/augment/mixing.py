"""Mixup (Zhang et al. 2018), the standard mixing baseline, made flow-valid."""

from __future__ import annotations

import torch

from tsda.augment.base import Augmentation
from tsda.augment.ops import check_mixing, check_positive, mix_labels, partners, sample_beta
from tsda.data.batch import IAT, SIZE, FlowBatch

_VALUES = slice(SIZE, IAT + 1, IAT - SIZE)  # the size and iat channels, as a view


class Mixup(Augmentation):
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
    alters = {"size": 1.0, "direction": 0.0, "iat": 1.0}

    def __init__(self, alpha: float = 0.2, same_class: bool = True, num_classes: int | None = None) -> None:
        check_positive("Mixup.alpha", alpha)
        check_mixing("Mixup", same_class, num_classes)
        self.alpha, self.same_class, self.num_classes = alpha, same_class, num_classes

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        other = batch.index(partners(batch.labels, self.same_class, generator))
        lam = sample_beta(self.alpha, len(batch), generator, batch.device)  # (B,)
        lam = torch.maximum(lam, 1.0 - lam)
        both = (batch.mask() & other.mask())[:, None, :]  # (B, 1, L)
        w = lam[:, None, None]
        x = batch.x.clone()
        own = x[:, _VALUES]  # (B, 2, L); padding and first iats are 0 in both flows
        x[:, _VALUES] = torch.where(both, w * own + (1.0 - w) * other.x[:, _VALUES], own)
        return mix_labels(batch, other, lam, self.same_class, self.num_classes).replace(x=x)
