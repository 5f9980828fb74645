"""The augmentation protocol and its combinators.

An augmentation maps a `FlowBatch` to a new `FlowBatch` of the same size (`B`, `L`):
batched in torch on the batch's device, random only through the `torch.Generator` it is
given, and every output a valid flow (see `tsda.augment.validity`). Parameters are checked
in `__init__` with a `ValueError` naming the parameter.

Most augmentations are pure functions of the batch. Those that need the run they train in
(a trained generator: its checkpoint, a pool of flows sampled once) get it through three
hooks, which the training module calls on every augmentation of the tree (`walk`):
`setup(context)` once at fit start, `on_epoch_start(epoch, generator)` before each
training epoch, and `stats()` for what to report (e.g. seconds spent sampling a pool).
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec

if TYPE_CHECKING:
    from tsda.augment.generator import FlowSampler

Family = Literal["amplitude", "mask", "order", "time", "mixing", "generator", "combinator"]


@dataclass(frozen=True)
class AugmentContext:
    """What an augmentation may need from the run it is used in (given to `setup`).

    Attributes:
        device: the training device; state an augmentation keeps (pools) lives there.
        class_names: the K classes of the data, in label order.
        generator: the run's augmentation `torch.Generator` (seeded from the run seed).
        codec: the data's `FlowCodec`, when known.
        load_sampler: `(checkpoint path, device) -> sampler` for augmentations backed by a
            trained generator (`tsda.augment.generator.FlowSampler`); supplied by the
            layer that knows generator modules (`tsda.generators.base.prepare_augmentation`).
        train_flows: the training split's flows (`x (N, 3, L)`, `rows` 0..N-1), when known:
            for augmentations that keep state per training flow (a pool of variations),
            which training batches then look up by `FlowBatch.rows`.
    """

    device: torch.device
    class_names: tuple[str, ...]
    generator: torch.Generator
    codec: FlowCodec | None = None
    load_sampler: Callable[[str, torch.device], FlowSampler] | None = None
    train_flows: FlowBatch | None = None


class Augmentation(ABC):
    """Base class of every augmentation (hand-crafted or a trained generator).

    Class attributes document what an augmentation may alter: `family`, and `alters`,
    the probability that each feature (size, direction, iat) is altered.
    """

    family: ClassVar[Family] = "amplitude"
    alters: ClassVar[dict[str, float]] = {"size": 0.0, "direction": 0.0, "iat": 0.0}

    @abstractmethod
    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        """Return an augmented copy of `batch` (`x (B, 3, L)`); never modify it in place."""

    def apply_to(self, batch: FlowBatch, rows: slice, generator: torch.Generator) -> FlowBatch:
        """The augmented rows `rows` of `batch` (`b` flows): what per-flow choices
        (`apply_each`) call. By default the rows alone; augmentations that draw partners
        from the batch (`tsda.augment.mixing.PairAugmentation`) draw them from all of it."""
        return self(batch.index(rows), generator)

    # -- run hooks (no-ops for pure augmentations) ---------------------------------------
    def children(self) -> list[Augmentation]:
        """The augmentations this one applies (combinators); `[]` for a leaf."""
        return []

    def walk(self) -> Iterator[Augmentation]:
        """This augmentation and every one nested in it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def setup(self, context: AugmentContext) -> None:  # noqa: B027 - a hook: by default nothing to do
        """Called once before training, on every augmentation of the tree."""

    def on_epoch_start(self, epoch: int, generator: torch.Generator) -> None:  # noqa: B027 - a hook
        """Called before each training epoch (0-based `epoch`)."""

    def stats(self) -> dict[str, float]:
        """Numbers to report with the run (`metrics.json` adds them as `augment_<key>`)."""
        return {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.name}({args})"


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")


class Compose(Augmentation):
    """Apply `augmentations` in sequence (stacking, e.g. several masks)."""

    family = "combinator"

    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        if not augmentations:
            raise ValueError("Compose.augmentations must not be empty")
        self.augmentations = list(augmentations)

    def children(self) -> list[Augmentation]:
        return list(self.augmentations)

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        for aug in self.augmentations:
            batch = aug(batch, generator)
        return batch


class RandomApply(Augmentation):
    """Apply `augmentation` to each flow with probability `p` (others pass unchanged)."""

    family = "combinator"

    def __init__(self, augmentation: Augmentation, p: float = 0.5) -> None:
        _check_probability("RandomApply.p", p)
        self.augmentation, self.p = augmentation, p

    def children(self) -> list[Augmentation]:
        return [self.augmentation]

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        chosen = torch.rand(len(batch), generator=generator, device=batch.device) < self.p  # (B,)
        augmented = self.augmentation(batch, generator)
        return select(chosen, augmented, batch)


class OneOf(Augmentation):
    """Apply one of `augmentations` per flow, drawn with `weights` (uniform by default).

    Each candidate runs once, batched, on the flows that drew it (`apply_each`).
    """

    family = "combinator"

    def __init__(self, augmentations: Sequence[Augmentation], weights: Sequence[float] | None = None) -> None:
        if not augmentations:
            raise ValueError("OneOf.augmentations must not be empty")
        self.augmentations = list(augmentations)
        self.weights = check_weights("OneOf.weights", weights, len(self.augmentations))

    def children(self) -> list[Augmentation]:
        return list(self.augmentations)

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        w = torch.tensor(self.weights, dtype=torch.float, device=batch.device)
        pick = torch.multinomial(w, len(batch), replacement=True, generator=generator)  # (B,)
        return apply_each(batch, pick, self.augmentations, generator)


class Identity(Augmentation):
    """Every flow unchanged: what an op becomes at the magnitude where it does nothing
    (`tsda.augment.magnitude`); policies leave its flows out of `apply_each` (pick -1)."""

    family = "combinator"

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        return batch.replace(x=batch.x.clone())


def check_weights(name: str, weights: Sequence[float] | None, n: int) -> list[float]:
    """`weights` as a list (`[1.0] * n` for None); raises `ValueError` naming `name` unless
    there are `n` finite, non-negative weights, not all 0."""
    if weights is None:
        return [1.0] * n
    w = [float(v) for v in weights]
    if len(w) != n or not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
        raise ValueError(
            f"{name} must be {n} finite non-negative numbers (one per augmentation), not all 0, got {list(weights)}"
        )
    return w


def apply_each(
    batch: FlowBatch, pick: torch.Tensor, augmentations: Sequence[Augmentation], generator: torch.Generator
) -> FlowBatch:
    """Apply `augmentations[i]` to the flows with `pick == i`, each once on all its flows.

    Args:
        batch: `B` flows.
        pick: `(B,)` int64 in `[-1, n)`; `-1` leaves a flow unchanged.
        augmentations: the `n` candidates.

    Returns:
        `B` flows in `batch`'s order; soft labels for all when any candidate sets them.

    One host sync per call (the subset sizes are data-dependent shapes): on a GPU that is
    one wait per training step, chosen over the sync-free alternative, running every
    candidate on the whole batch and selecting, which costs `n` times the augmentation
    work (90 candidate settings for TrivialAugment over 18 ops at 5 levels).
    """
    order = torch.argsort(pick, stable=True)  # (B,) rows grouped by candidate, unchanged first
    counts = torch.bincount(pick + 1, minlength=len(augmentations) + 1).tolist()  # one host sync
    grouped = batch.index(order)  # each candidate's flows are then a slice: views, no copies
    ends = list(itertools.accumulate(counts))
    parts = [grouped.index(slice(0, ends[0]))]
    parts += [
        aug.apply_to(grouped, slice(start, end), generator)
        for aug, start, end in zip(augmentations, ends, ends[1:])
        if end > start
    ]
    return FlowBatch.cat(parts).index(order.argsort())


def select(mask: torch.Tensor, a: FlowBatch, b: FlowBatch) -> FlowBatch:
    """Row-wise choice: `a` where `mask (B,)` is True, else `b` (training rows kept when
    both have them)."""
    soft = None
    if a.soft_labels is not None or b.soft_labels is not None:
        k = next(s for s in (a.soft_labels, b.soft_labels) if s is not None).shape[1]
        soft = torch.where(mask[:, None], a.targets(k), b.targets(k))
    rows = None if a.rows is None or b.rows is None else torch.where(mask, a.rows, b.rows)
    return FlowBatch(
        x=torch.where(mask[:, None, None], a.x, b.x),
        lengths=torch.where(mask, a.lengths, b.lengths),
        labels=torch.where(mask, a.labels, b.labels),
        soft_labels=soft,
        rows=rows,
    )
