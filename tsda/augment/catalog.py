"""The one place that maps augmentation names to classes, and YAML specs to instances.

Names are the snake_case of the class names; `configs/augment/<name>.yaml` holds each
one's `class_path` / `init_args` snippet for LightningCLI.
"""

from __future__ import annotations

import inspect
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from tsda.augment.amplitude import ConstantWrapUp, GaussianNoise, GaussianWrapUp, SineWrapUp, SpikeNoise
from tsda.augment.base import Augmentation
from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.masking import BernoulliMask, WindowMask
from tsda.augment.mixing import Mixup
from tsda.augment.order import CutMix, Flip, Interpolation, PacketLoss, Permutation, Translation, Wrap
from tsda.augment.policy import RandAugment, TrivialAugment
from tsda.augment.traffic import ChangeRTT, TcbenchPacketLoss, TimeShift

#: the paper's 14 (table order), tcbench's 3, then Mixup: each works with its defaults
HANDCRAFTED: dict[str, type[Augmentation]] = {
    "gaussian_noise": GaussianNoise,
    "spike_noise": SpikeNoise,
    "gaussian_wrapup": GaussianWrapUp,
    "sine_wrapup": SineWrapUp,
    "constant_wrapup": ConstantWrapUp,
    "bernoulli_mask": BernoulliMask,
    "window_mask": WindowMask,
    "interpolation": Interpolation,
    "flip": Flip,
    "packet_loss": PacketLoss,
    "translation": Translation,
    "wrap": Wrap,
    "permutation": Permutation,
    "cutmix": CutMix,
    "change_rtt": ChangeRTT,
    "time_shift": TimeShift,
    "tcbench_packet_loss": TcbenchPacketLoss,
    "mixup": Mixup,
}
#: policies over the hand-crafted ops, each flow its own op and magnitude (`tsda.augment.policy`)
POLICIES: dict[str, type[Augmentation]] = {"trivial_augment": TrivialAugment, "rand_augment": RandAugment}
#: every augmentation by name: the hand-crafted ones, the policies and a trained generator (`ckpt` needed)
AUGMENTATIONS: dict[str, type[Augmentation]] = {**HANDCRAFTED, **POLICIES, "generator": GeneratorAugmentation}


def augmentation_class(name: str) -> type[Augmentation]:
    """The class called `name`; raises `ValueError` listing the names for an unknown one."""
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}") from None


def defaults(cls: type[Augmentation]) -> dict[str, Any]:
    """`{parameter: default}` of `cls.__init__`."""
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def required(cls: type[Augmentation]) -> list[str]:
    """Parameters of `cls.__init__` without a default (e.g. a generator's `ckpt`)."""
    params = inspect.signature(cls.__init__).parameters
    return [
        k
        for k, p in params.items()
        if k != "self" and p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def build_augmentation(spec: str | Path | dict[str, Any]) -> Augmentation:
    """An augmentation from a catalog name, a YAML file or a `class_path`/`init_args` dict.

    YAML and dicts go through jsonargparse, as LightningCLI parses
    `--model.init_args.augmentation`, so combinators nest (`Compose`, `OneOf`, ...).
    """
    if isinstance(spec, str) and (spec in HANDCRAFTED or spec in POLICIES):
        return AUGMENTATIONS[spec]()
    if isinstance(spec, str) and spec in AUGMENTATIONS:
        raise ValueError(f"--augment {spec}: needs a checkpoint; use configs/augment/{spec}.yaml with its ckpt set")
    from jsonargparse import ArgumentParser

    if not isinstance(spec, dict):
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise ValueError(
                f"--augment: {spec!r} is neither an augmentation name ({', '.join(AUGMENTATIONS)}) nor a YAML file"
            )
        spec = yaml.safe_load(path.read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--augmentation", type=Augmentation, required=True)
    try:
        cfg = parser.parse_object({"augmentation": spec})
    except ArgumentError as exc:  # a value of the wrong type or an unknown key: bad input, as a failed check
        raise ValueError(f"--augment: {exc}") from None
    return parser.instantiate_classes(cfg).augmentation
