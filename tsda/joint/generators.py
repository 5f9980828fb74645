"""The generators `tsda.joint.module.JointModule` can train, by name (`model.generator`)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal, get_args

from tsda.joint.diffusion import JointDiffusion
from tsda.joint.gan import JointGAN
from tsda.joint.part import JointGenerator

#: the generators `JointModule` can train (closed choice: `model.generator`)
GeneratorName = Literal["cgan", "diffusion"]
GENERATORS: tuple[str, ...] = get_args(GeneratorName)
#: what the classifier's generated share is (`model.generated`): fresh flows of the batch's
#: classes, or the batch's own flows varied by the generator
GeneratedName = Literal["sample", "vary"]
#: `JointModule` options of the critic, which only the cGAN has, and their defaults
CRITIC_OPTIONS: dict[str, float] = {"lr_d": 5e-4, "n_critic": 1}


def check_generator_options(
    generator: str,
    lr_d: float,
    n_critic: int,
    generated: str,
    vary_strength: float | Sequence[float],
    generator_every: int = 1,
) -> None:
    """The generator options of `JointModule`, checked before anything is built.

    Raises:
        ValueError: naming `model.<option>`: a critic option (`lr_d`, `n_critic`) set for a
            generator without a critic (diffusion), a bad `n_critic`, `generator_every`,
            `generated` or `vary_strength`.
    """
    for name, value in (("n_critic", n_critic), ("generator_every", generator_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{name} must be an integer >= 1, got {value!r}")
    if generator != "cgan":
        given = {"lr_d": lr_d, "n_critic": n_critic}
        for name, default in CRITIC_OPTIONS.items():
            if given[name] != default:
                raise ValueError(f"model.{name} is an option of the cgan's critic; the {generator} generator has none")
    if generated not in get_args(GeneratedName):
        raise ValueError(f"model.generated must be one of {get_args(GeneratedName)}, got {generated!r}")
    values = [vary_strength] if isinstance(vary_strength, (int, float)) else list(vary_strength)
    if not 1 <= len(values) <= 2 or not all(0.0 < float(s) <= 1.0 for s in values):  # False for NaN
        raise ValueError(f"model.vary_strength must be a number in (0, 1] or [start, end] of them, got {vary_strength}")


def build_joint_generator(
    name: GeneratorName, num_classes: int, n_packets: int, class_names: Sequence[str], **kwargs: Any
) -> JointGenerator:
    """The joint generator called `name` with its `generator_kwargs`.

    Raises:
        ValueError: an unknown name, or keyword arguments the generator does not take.
    """
    classes: dict[str, type[JointGenerator]] = {"cgan": JointGAN, "diffusion": JointDiffusion}
    if name not in classes:
        raise ValueError(f"model.generator must be one of {GENERATORS}, got {name!r}")
    cls = classes[name]
    accepted = [
        p
        for p in inspect.signature(cls.__init__).parameters
        if p not in ("self", "num_classes", "n_packets", "class_names")
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model.generator_kwargs: unknown key(s) {unknown} for generator {name!r}; known: {accepted}")
    return cls(num_classes, n_packets, class_names, **kwargs)
