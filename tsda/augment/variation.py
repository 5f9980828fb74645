"""Variations of real flows by a generator (`FlowSampler.vary`): the `vary` mode of
`GeneratorAugmentation` and `tsda sample --vary` share these helpers.

Where `sample` draws flows of a class from scratch, `vary` anchors each draw on a real
flow (SDEdit / DA-Fusion style): `strength` 0 gives the flow back, 1 a fresh sample of its
class, values between a flow the nearer to it the smaller the strength. DA-Fusion draws the
strength per image from a few values rather than fixing it, so that augmented data covers
both near copies and freer variations; a list of strengths here does the same per flow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from tsda.data.batch import FlowBatch

if TYPE_CHECKING:
    from tsda.augment.generator import FlowSampler

#: upper bound of `variations_per_flow` (a pool holds N * K flows of the training split)
MAX_VARIATIONS_PER_FLOW = 1_000


def check_strengths(name: str, strength: float | Sequence[float]) -> list[float]:
    """`strength` as a non-empty list of numbers in [0, 1].

    Raises:
        ValueError: naming `name`, an empty list or a value outside [0, 1] (or not finite).
    """
    values = [strength] if isinstance(strength, (int, float)) else list(strength)
    if not values:
        raise ValueError(f"{name} must be a number in [0, 1] or a non-empty list of them, got []")
    out = [float(v) for v in values]
    bad = [v for v in out if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise ValueError(f"{name} must be in [0, 1] (0 = the flow itself, 1 = a fresh sample), got {bad[0]}")
    return out


def strength_values(strengths: Sequence[float], device: torch.device) -> float | torch.Tensor:
    """What `draw_strengths` draws from: the only strength (a number), or `(S,)` the
    strengths on `device`, copied there once rather than on every training batch."""
    if len(strengths) == 1:
        return float(strengths[0])
    return torch.tensor(list(strengths), dtype=torch.float32, device=device)


def draw_strengths(values: float | torch.Tensor, n: int, generator: torch.Generator) -> float | torch.Tensor:
    """One strength per flow: `values` itself when a number (nothing drawn), else `(n,)`
    drawn uniformly from the `(S,)` tensor `values` with `generator`, on its device."""
    if not isinstance(values, torch.Tensor):
        return values
    pick = torch.randint(0, len(values), (n,), generator=generator, device=values.device)  # (n,)
    return values[pick]


def vary(
    sampler: FlowSampler,
    batch: FlowBatch,
    strength: float | torch.Tensor,
    generator: torch.Generator,
    options: dict[str, Any],
) -> FlowBatch:
    """`sampler.vary` in full precision, with `batch`'s training rows kept on the output.

    Autocast is off: fresh variations are drawn inside `training_step`, under the Trainer's
    autocast with `bf16-mixed`, which would round the generator's sizes and gaps to bf16;
    the augmentation's flows are data, not a training computation (nor a graph to keep:
    no gradients). A variation stands for the training flow it varies, so it keeps that
    flow's `rows`.
    """
    with torch.no_grad(), torch.autocast(device_type=batch.device.type, enabled=False):
        out = sampler.vary(batch, strength, generator, **options)
    return dataclasses.replace(out, rows=batch.rows)  # rows may be None (FlowBatch.replace takes tensors)


def vary_in_batches(
    sampler: FlowSampler,
    flows: FlowBatch,
    strength: float | torch.Tensor,
    generator: torch.Generator,
    options: dict[str, Any],
    batch_size: int,
    progress: bool = False,
    desc: str = "variations",
) -> FlowBatch:
    """A variation of every flow of `flows` (`N`), `batch_size` flows per `vary` call.

    Args:
        strength: one number, or `(N,)` one per flow.

    Returns:
        `N` variations in `flows`' order, on `flows`' device.

    Raises:
        RuntimeError: the generator returned other classes than the flows'.
    """
    from tqdm.auto import tqdm

    parts = []
    for start in tqdm(range(0, len(flows), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        part = flows.index(slice(start, start + batch_size))
        s = strength if isinstance(strength, float) else strength[start : start + batch_size]
        parts.append(vary(sampler, part, s, generator, options).to(flows.device))
    out = FlowBatch.cat(parts)
    if not torch.equal(out.labels, flows.labels):
        raise RuntimeError("the generator's vary returned flows of other classes than it was given")
    return out


def variation_pool(
    sampler: FlowSampler,
    flows: FlowBatch,
    per_flow: int,
    strengths: Sequence[float],
    generator: torch.Generator,
    options: dict[str, Any],
    batch_size: int,
    progress: bool,
) -> FlowBatch:
    """`per_flow` (K) variations of each of the `N` training flows, flow-major: the
    variations of training row r are pool rows r*K .. r*K + K-1 (`rows` = r), each at a
    strength drawn from `strengths`."""
    n = len(flows)
    source = torch.arange(n, device=flows.device).repeat_interleave(per_flow)  # (N*K,)
    strength = draw_strengths(strength_values(strengths, flows.device), len(source), generator)
    return vary_in_batches(
        sampler, flows.index(source), strength, generator, options, batch_size, progress, desc="variation pool"
    )


def draw_from_pool(pool: FlowBatch, per_flow: int, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
    """For each flow of `batch` (its training row in `batch.rows (B,)`), one of its own
    `per_flow` variations in `pool`, drawn uniformly with `generator`.

    Raises:
        ValueError: `batch` does not say which training flow each flow is (no `rows`).
    """
    if batch.rows is None:
        raise ValueError(
            "GeneratorAugmentation (mode vary, variations_per_flow > 0) needs batches that say which "
            "training flow each flow is (FlowBatch.rows, set on FlowDataModule's training tensors); "
            "this batch has none: use variations_per_flow 0 (fresh variations), or place the "
            "generator augmentation before augmentations that make new flows"
        )
    offset = torch.randint(0, per_flow, (len(batch),), generator=generator, device=batch.device)  # (B,)
    return pool.index(batch.rows * per_flow + offset)
