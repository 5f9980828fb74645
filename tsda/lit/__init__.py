"""Lightning plumbing every model family shares: reading checkpoints, DDP for modules with several
backwards, the seeded run generator, and the class-name helpers below."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_class_names(class_names: list[str] | None, num_classes: int) -> None:
    """`model.class_names`, when given, names each of the `num_classes` classes once."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"model.class_names has {len(class_names)} names for {num_classes} classes")


def class_names_from(hparams: Mapping[str, Any]) -> list[str]:
    """The class names a module's hparams hold (`class_names`), else `"0"` .. `"K-1"` for
    `K = num_classes`: what every module's `class_names` property returns."""
    names = hparams.get("class_names")
    return list(names) if names else [str(i) for i in range(int(hparams["num_classes"]))]
