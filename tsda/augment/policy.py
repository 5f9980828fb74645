"""Augmentation policies as augmentations: TrivialAugment (Mueller and Hutter 2021) and
RandAugment (Cubuk et al. 2020) over the hand-crafted ops, at their magnitudes
(`tsda.augment.magnitude`).

Batched: each flow draws its own op (with `weights`) and magnitude from the run's
generator, and each (op, magnitude) setting runs once, batched, on the flows that drew
it (`apply_each`, as `OneOf`), never per flow in Python. Op parameters are scalars, so
per-flow uniform magnitudes are binned into `levels` values `0, 1/(levels-1), ..., 1` (as
TrivialAugment bins its 31; 5 here by default, for speed), with one instance per distinct
setting (levels that round to the same integer share one); flows at an op's identity
(m = 0) pass unchanged. TrivialAugment's `ranges` narrow each op's levels to its own
`[lo, hi]` and `n` applies `n` independent rounds: what `tsda augment search` tunes.

`ops` names ops (`wrap`), families (`amplitude`, `mask`, `order`, `time`, `mixing`) or
`all` (the 18). The mixing ops (CutMix, Mixup) take same-class partners, drawn from the
whole batch (`PairAugmentation.apply_to`): labels stay hard, as in the study's configs.

    class_path: tsda.augment.policy.TrivialAugment
    init_args: {ops: [order, mask], magnitude: uniform}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from tsda.augment.base import Augmentation, Identity, apply_each, check_weights
from tsda.augment.magnitude import check_magnitude, from_magnitude
from tsda.data.batch import FlowBatch

if TYPE_CHECKING:
    from typing_extensions import TypeIs

#: the families `ops` may name (every hand-crafted op is in one)
FAMILIES = ("amplitude", "mask", "order", "time", "mixing")


def resolve_ops(name: str, ops: str | Sequence[str]) -> list[type[Augmentation]]:
    """The hand-crafted classes `ops` names (op names, families or `all`), in the order
    named (catalog order inside a family), each once; `ValueError` naming `name` for an
    empty list or an unknown name."""
    from tsda.augment.catalog import HANDCRAFTED  # imported here: the catalog imports this module

    names = [ops] if isinstance(ops, str) else list(ops)
    if not names:
        raise ValueError(f"{name} must name at least one op, family or 'all'")
    chosen: list[type[Augmentation]] = []
    for op in names:
        if op == "all" or op in FAMILIES:
            matched = [c for c in HANDCRAFTED.values() if op in ("all", c.family)]
        elif op in HANDCRAFTED:
            matched = [HANDCRAFTED[op]]
        else:
            raise ValueError(f"{name}: unknown op {op!r}; known: all, {', '.join(FAMILIES)}, {', '.join(HANDCRAFTED)}")
        chosen += [c for c in matched if c not in chosen]
    return chosen


def _per_op(magnitudes: Sequence[float] | Sequence[Sequence[float]]) -> TypeIs[Sequence[Sequence[float]]]:
    """Whether `magnitudes` holds one list per op (else one list for all ops)."""
    return bool(magnitudes) and isinstance(magnitudes[0], Sequence)


class _Policy(Augmentation):
    """The op list, its weights and the distinct settings the policy draws from.

    Args:
        ops: op names, family names or `all` (see the module docstring).
        weights: one per op as `ops` resolves (e.g. 18 for `all`), non-negative, not all
            0; None = uniform.
    """

    family = "combinator"

    def __init__(self, ops: str | Sequence[str], weights: Sequence[float] | None) -> None:
        self._ops = resolve_ops(f"{self.name}.ops", ops)
        self._weights = check_weights(f"{self.name}.weights", weights, len(self._ops))
        self.ops = ops if isinstance(ops, str) else list(ops)
        self.weights = None if weights is None else list(weights)
        #: the distinct non-identity settings, and each one's index by repr
        self._instances: list[Augmentation] = []
        self._index: dict[str, int] = {}

    def children(self) -> list[Augmentation]:
        return list(self._instances)

    def _settings(self, magnitudes: Sequence[float] | Sequence[Sequence[float]]) -> torch.Tensor:
        """`(n_ops, n_magnitudes)` int64: the index in `_instances` of each op at each
        magnitude (one list for all ops, or one list per op), -1 at its identity; equal
        settings share one instance."""
        grids = magnitudes if _per_op(magnitudes) else [magnitudes] * len(self._ops)
        table = [[self._setting(cls, m) for m in grid] for cls, grid in zip(self._ops, grids)]
        return torch.tensor(table, dtype=torch.long)

    def _setting(self, cls: type[Augmentation], m: float) -> int:
        aug = from_magnitude(cls, m)
        if isinstance(aug, Identity):
            return -1
        key = repr(aug)
        if key not in self._index:
            self._index[key] = len(self._instances)
            self._instances.append(aug)
        return self._index[key]

    def _weight_tensor(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self._weights, dtype=torch.float, device=device)


class TrivialAugment(_Policy):
    """One op per flow at one magnitude per flow (TrivialAugment), `n` rounds of it.

    Args:
        ops: the ops drawn from (default `all`, the 18 hand-crafted ones).
        magnitude: `uniform` (each flow draws its level uniformly) or `fixed` (every flow
            at `m`).
        m: the magnitude of `fixed`, in [0, 1] (0.5: every op at its default).
        levels: magnitude levels of `uniform`, >= 2. Default 5 (0, 0.25, 0.5, 0.75, 1:
            the defaults and a step either side): each distinct setting drawn costs one
            batched call, so a CPU training step (B = 256) costs about 1.15x its slowest
            op's at 5 levels, 1.27x at 11 and 1.38x at 31 (benchmarks/augment_throughput.py).
        weights: op weights (see `_Policy`).
        ranges: `uniform` only: one magnitude range `[lo, hi]` per op as `ops` resolves,
            `0 <= lo <= hi <= 1`; op i's `levels` are spread evenly over its own range
            (`[0.5, 0.5]`: always its default). None = `[0, 1]` for every op. A searched
            policy (`tsda augment search`) sets them.
        n: rounds, >= 1: each flow gets `n` ops applied in turn, each round's op and
            magnitude drawn independently (with replacement, unlike RandAugment). 1 =
            TrivialAugment.
    """

    def __init__(
        self,
        ops: str | Sequence[str] = "all",
        magnitude: Literal["uniform", "fixed"] = "uniform",
        m: float = 0.5,
        levels: int = 5,
        weights: Sequence[float] | None = None,
        ranges: Sequence[tuple[float, float]] | None = None,
        n: int = 1,
    ) -> None:
        if magnitude not in ("uniform", "fixed"):
            raise ValueError(f"TrivialAugment.magnitude must be 'uniform' or 'fixed', got {magnitude!r}")
        check_magnitude("TrivialAugment.m", m)
        if levels < 2:
            raise ValueError(f"TrivialAugment.levels must be >= 2, got {levels}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"TrivialAugment.n must be an integer >= 1 (rounds per flow), got {n!r}")
        super().__init__(ops, weights)
        spans = self._check_ranges(ranges, magnitude)
        self.magnitude, self.m, self.levels = magnitude, m, levels
        self.ranges = None if ranges is None else [list(r) for r in spans]
        self.n = n
        steps = [j / (levels - 1) for j in range(levels)]
        grid = [[lo + t * (hi - lo) for t in steps] for lo, hi in spans] if magnitude == "uniform" else [m]
        self._table = self._settings(grid)  # (n_ops, n_levels)

    def _check_ranges(self, ranges: Sequence[Sequence[float]] | None, magnitude: str) -> list[tuple[float, float]]:
        """`ranges` as `(lo, hi)` pairs (`(0, 1)` each for None); `ValueError` naming
        `TrivialAugment.ranges` unless one pair per op, `0 <= lo <= hi <= 1`, with `uniform`."""
        if ranges is None:
            return [(0.0, 1.0)] * len(self._ops)
        name = "TrivialAugment.ranges"
        if magnitude != "uniform":
            raise ValueError(f"{name} needs magnitude 'uniform' (a fixed magnitude has no range)")
        spans = [tuple(float(v) for v in r) for r in ranges]
        if len(spans) != len(self._ops):
            raise ValueError(
                f"{name} must hold one [lo, hi] per op ({len(self._ops)} as ops resolves), got {len(spans)}"
            )
        for i, span in enumerate(spans):
            if len(span) != 2 or not 0.0 <= span[0] <= span[1] <= 1.0:  # False for NaN too
                raise ValueError(
                    f"{name}[{i}] ({self._ops[i].__name__}) must be [lo, hi] with 0 <= lo <= hi <= 1, got {list(span)}"
                )
        return spans  # type: ignore[return-value]

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        b, dev = len(batch), batch.device
        table, n_levels = self._table.to(dev), self._table.shape[1]
        for _ in range(self.n):
            op = torch.multinomial(self._weight_tensor(dev), b, replacement=True, generator=generator)  # (B,)
            level = torch.randint(n_levels, (b,), generator=generator, device=dev) if n_levels > 1 else 0  # (B,)
            batch = apply_each(batch, table[op, level], self._instances, generator)
        return batch


class RandAugment(_Policy):
    """`n` distinct ops per flow, applied in turn, all at magnitude `m` (RandAugment).

    Each flow draws its `n` ops without replacement (with `weights`); step `j` applies
    every flow's `j`-th op, each op once on the flows that drew it.

    Args:
        n: ops per flow, in 1..(ops with weight > 0).
        m: the magnitude of every op, in [0, 1] (0.5: every op at its default).
        ops: the ops drawn from (default `all`).
        weights: op weights (see `_Policy`).
    """

    def __init__(
        self, n: int = 2, m: float = 0.5, ops: str | Sequence[str] = "all", weights: Sequence[float] | None = None
    ) -> None:
        check_magnitude("RandAugment.m", m)
        super().__init__(ops, weights)
        drawable = sum(w > 0 for w in self._weights)
        if not 1 <= n <= drawable:
            raise ValueError(
                f"RandAugment.n must be in 1..{drawable} (distinct ops per flow, from the ops with weight > 0), got {n}"
            )
        self.n, self.m = n, m
        self._table = self._settings([m])[:, 0]  # (n_ops,)

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        dev = batch.device
        w = self._weight_tensor(dev).expand(len(batch), -1)  # (B, n_ops)
        drawn = torch.multinomial(w, self.n, replacement=False, generator=generator)  # (B, n) distinct per flow
        table = self._table.to(dev)
        for j in range(self.n):
            batch = apply_each(batch, table[drawn[:, j]], self._instances, generator)
        return batch
