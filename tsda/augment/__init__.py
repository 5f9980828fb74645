"""Augmentations: `__call__(batch, generator) -> batch` on whatever device the batch is on.

The hand-crafted ones live in `amplitude`, `masking`, `order` (incl. CutMix), `traffic`
(tcbench's time-based ones) and `mixing` (Mixup); `magnitude` maps one strength m in
[0, 1] onto each, `policy` draws them per flow (TrivialAugment, RandAugment);
`catalog.AUGMENTATIONS` names them all.
"""

from tsda.augment.base import Augmentation, Compose, OneOf, RandomApply

__all__ = ["Augmentation", "Compose", "OneOf", "RandomApply"]
