"""Which generator options a checkpoint's generator takes (`tsda sample`).

The generator options of `tsda sample` (`--steps`, `--sampler`, `--cfg_scale`,
`--latent_guidance_scale`, `--option KEY=VALUE`) are keyword arguments of the generator's
`sample` (with `--vary`: its `vary`, whose `**options` are `sample`'s by the contract of
`GenerativeModule.vary`). Each family takes its own: the diffusion model `steps`,
`sampler`, `cfg_scale`, `latent_guidance_scale`, ...; the cGAN `latent_scale`, `use_ema`,
`prior`; the transformer `temperature`, `top_k`. An option the generator does not take is
refused, naming the flag and the options it does take, once the checkpoint is loaded and
before anything is drawn. A generator whose `sample` passes `**options` on (the joint
module, to its generator part) is checked when called: the `TypeError` of an unknown
keyword becomes the same refusal (`generator_call`), still before anything is written.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tsda.errors import TsdaError
from tsda.generators.base import GenerativeModule

#: the options `tsda sample` has a flag of its own for (the others: `--option KEY=VALUE`)
FLAGS = {name: f"--{name}" for name in ("steps", "sampler", "cfg_scale", "latent_guidance_scale")}

#: arguments of `sample` and `vary` that are the call's data, not options
_DATA = frozenset({"labels", "generator", "batch", "strength"})
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def flag_of(option: str) -> str:
    """How the user gave generator option `option`."""
    return FLAGS.get(option, f"--option {option}=...")


def _keywords(method: Callable[..., Any]) -> tuple[set[str], bool]:
    """`(the keyword options of method, whether it also takes **options)`."""
    params = inspect.signature(method).parameters.values()
    names = {p.name for p in params if p.kind in _KEYWORD} - _DATA
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def accepted_options(model: GenerativeModule, vary: bool = False) -> set[str] | None:
    """The options `model.sample` (or `model.vary`) takes; None when it passes `**options`
    on to something its signature does not show."""
    names, more = _keywords(model.vary if vary else model.sample)
    if more and vary:  # `vary`'s further options are `sample`'s
        of_sample = accepted_options(model)
        return None if of_sample is None else names | of_sample
    return None if more else names


def _refusal(model: GenerativeModule, option: str, accepted: set[str] | None) -> TsdaError:
    takes = f" (it takes: {', '.join(sorted(accepted)) or 'none'})" if accepted is not None else ""
    return TsdaError(f"{flag_of(option)}: not an option of {type(model).__name__}{takes}")


def check_generator_options(model: GenerativeModule, options: Mapping[str, Any], vary: bool = False) -> None:
    """Refuse the first option of `options` that `model` does not take.

    Raises:
        TsdaError: `--steps: not an option of GANModule (it takes: latent_scale, prior, use_ema)`.
    """
    accepted = accepted_options(model, vary)
    if accepted is None:
        return
    for option in options:
        if option not in accepted:
            raise _refusal(model, option, accepted)


@contextmanager
def generator_call(model: GenerativeModule) -> Iterator[None]:
    """Calls of `model.sample`/`vary` in which an unknown option's `TypeError` (from a
    `**options` that `check_generator_options` could not read) is refused as a `TsdaError`
    naming the flag."""
    try:
        yield
    except TypeError as exc:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match is None:
            raise
        raise _refusal(model, match[1], None) from exc
