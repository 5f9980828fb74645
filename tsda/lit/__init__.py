"""LightningModules: losses, optimisers, metrics and logging live here."""

from __future__ import annotations


def check_class_names(class_names: list[str] | None, num_classes: int) -> None:
    """`model.class_names`, when given, names each of the `num_classes` classes once."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"model.class_names has {len(class_names)} names for {num_classes} classes")
