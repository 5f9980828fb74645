"""Augmentations: `__call__(batch, generator) -> batch` on whatever device the batch is on."""

from tsda.augment.base import Augmentation, Compose, OneOf, RandomApply

__all__ = ["Augmentation", "Compose", "OneOf", "RandomApply"]
