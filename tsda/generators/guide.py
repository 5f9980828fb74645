"""The guide of a generator and the per-class statistics of its latents: one mechanism for
the cGAN (`tsda.generators.gan.module`) and the diffusion model (`tsda.generators.diffusion.module`).

A guide is a frozen, pretrained traffic classifier whose latent space the synthetic flows
should populate (`model.classifier_ckpt`). Generators see it through `LatentGuide`: the
seam `encode(x) -> z (B, D)`, `head(z) -> logits (B, K)` of `tsda.classifier.nets`, its
latent size `D` and its class names. `load_guide` loads one from a `ClassifierModule`
checkpoint (or rebuilds it from the classifier's hparams, when the weights travel in the
generator's own checkpoint) as a `FrozenGuide`.

What generators need of the guide besides the seam are per-class statistics of its latents
over the training flows: `ClassSums` holds per-class flow counts `n (K,)` and sums of
per-flow values (`z`, `z * z`, ...). It is filled either in one pass over a loader
(`class_sums`, `guide_latent_sums`: the cGAN at fit start, on the whole training split on
every rank) or batch by batch during training (the diffusion model, from the latents it
computes anyway), in which case `ClassSums.all_reduce` adds up, under DDP, what every rank
accumulated since a snapshot. `ClassSums.mean` gives the class centroids `mu (K, D)`,
`class_regions` centroids plus spreads `sigma (K, D)`.

Classes without (enough) training flows are not silently given a made-up statistic:
`warn_sparse_classes` names them in a `UserWarning` together with what they get instead.
A warning, not an error: such a class is still in the label space (e.g. a subsampled
training split, `data.train_fraction`), every other class is generated as usual, and the
flows drawn for it are still valid flows; only their class-specific guidance is missing.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from tsda.classifier.nets import FlowClassifier, LatentClassifier
from tsda.data.batch import FlowBatch
from tsda.lit import class_names_from


class LatentEncoder(Protocol):
    """What a pass over latents needs: `encode(x (B, 3, L)) -> z (B, D)` (a `LatentGuide`,
    or a classifier's eval-mode seam, `tsda.generators.regions.EvalSeam`)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...


class LatentGuide(LatentClassifier, Protocol):
    """What a generator is guided by: `encode(x (B, 3, L)) -> z (B, D)`,
    `head(z) -> logits (B, K)`, the latent size `D` and the K class names."""

    @property
    def latent_dim(self) -> int: ...

    @property
    def class_names(self) -> list[str]: ...


class FrozenGuide(nn.Module):
    """A trained classifier's net, frozen (eval mode, no gradients): a `LatentGuide`.

    Its state dict is the `ClassifierModule`'s (`net.*`), so a generator holding it as the
    submodule `classifier` keeps the keys `classifier.net.*` of its checkpoints.

    Args:
        net: the classifier's `FlowClassifier`.
        hparams: the `ClassifierModule`'s hparams (private `_*` keys dropped); with them
            `load_guide` rebuilds the guide without the classifier file.
    """

    def __init__(self, net: FlowClassifier, hparams: Mapping[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.hparams: dict[str, Any] = {k: v for k, v in dict(hparams).items() if not k.startswith("_")}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenGuide:
        """Always eval mode (its BatchNorm statistics must not move), whatever `mode`."""
        return super().train(False)

    @property
    def latent_dim(self) -> int:
        return int(self.net.latent_dim)

    @property
    def num_classes(self) -> int:
        return int(self.hparams["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return class_names_from(self.hparams)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, 3, L)` -> `z (B, D)`."""
        return self.net.encode(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """`z (B, D)` -> `logits (B, K)`."""
        return self.net.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, 3, L)` -> `logits (B, K)`."""
        return self.net(x)


def load_guide(
    num_classes: int, path: str | None = None, hparams: Mapping[str, Any] | None = None
) -> FrozenGuide | None:
    """The frozen guide of a generator, or None when neither `path` nor `hparams` is set.

    With `hparams` (the classifier's, saved by a generator that keeps the guide's weights
    in its own checkpoint) the classifier is rebuilt untrained, its weights then come from
    the generator's state dict; otherwise it is loaded from the `ClassifierModule`
    checkpoint `path` (`ClassifierModule.load_frozen`).

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        ValueError: the classifier has other than `num_classes` classes.
    """
    from tsda.classifier.module import ClassifierModule

    if hparams is not None:
        accepted = inspect.signature(ClassifierModule.__init__).parameters
        module = ClassifierModule(**{k: v for k, v in hparams.items() if k in accepted})
    elif path:
        module = ClassifierModule.load_frozen(path, num_classes)
    else:
        return None
    guide = FrozenGuide(module.net, module.hparams)
    if guide.num_classes != num_classes:
        raise ValueError(f"model.classifier_ckpt has {guide.num_classes} classes, the data {num_classes}")
    return guide


# -- per-class statistics ------------------------------------------------------------------
@dataclass
class ClassSums:
    """Per-class flow counts `n (K,)` and sums `sums {name: (K, ...)}` of per-flow values.

    The tensors may be a module's own buffers (the sums are then accumulated in place, and
    checkpointed with the module), or fresh float64 tensors (`zeros`).
    """

    n: torch.Tensor
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def zeros(
        cls, num_classes: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> ClassSums:
        """No flows yet; each sum is allocated by the first `add` of its name."""
        return cls(torch.zeros(num_classes, dtype=dtype, device=device))

    @property
    def num_classes(self) -> int:
        return int(self.n.shape[0])

    def add(self, labels: torch.Tensor, values: Mapping[str, torch.Tensor]) -> None:
        """Add flows of classes `labels (B,)` with values `{name: (B, ...)}`, in place."""
        self.n.index_add_(0, labels, torch.ones_like(labels, dtype=self.n.dtype))
        for name, v in values.items():
            if name not in self.sums:
                self.sums[name] = torch.zeros(self.num_classes, *v.shape[1:], dtype=self.n.dtype, device=self.n.device)
            self.sums[name].index_add_(0, labels, v.to(self.sums[name].dtype))

    def clone(self) -> ClassSums:
        """A snapshot (e.g. at an epoch's start, for `all_reduce(since=...)`)."""
        return ClassSums(self.n.clone(), {k: v.clone() for k, v in self.sums.items()})

    def zeros_like(self) -> ClassSums:
        """Sums of no flow, of the same names, shapes, dtype and device."""
        return ClassSums(torch.zeros_like(self.n), {k: torch.zeros_like(v) for k, v in self.sums.items()})

    def add_sums(self, other: ClassSums) -> None:
        """Add `other`'s counts and sums (the same names) to these, in place."""
        self.n.add_(other.n)
        for k, v in other.sums.items():
            self.sums[k].add_(v)

    def all_reduce(self, strategy: Any, since: ClassSums) -> None:
        """Under DDP (`strategy.world_size > 1`), make every rank hold `since` plus what
        all ranks added since that snapshot (each saw its shard), in place; a no-op on one
        process. Every rank must call it at the same point (e.g. the last training batch)."""
        if getattr(strategy, "world_size", 1) == 1:
            return
        pairs = [(self.n, since.n), *((self.sums[k], since.sums[k]) for k in self.sums)]
        for now, start in pairs:
            added = strategy.reduce(now - start, reduce_op="sum")
            now.copy_(start + added)

    def mean(self, name: str) -> torch.Tensor:
        """`(K, ...)` per-class mean of the value `name` (zero rows for classes without flows)."""
        s = self.sums[name]
        return s / self.n.clamp_min(1).view(-1, *([1] * (s.ndim - 1)))

    def sparse(self, min_flows: int = 1, among: torch.Tensor | None = None) -> list[int]:
        """Classes (sorted; of the labels `among (B,)` when given) with fewer than
        `min_flows` flows (one transfer to the host, not one per class)."""
        few = self.n < min_flows  # (K,)
        if among is not None:
            few &= torch.zeros_like(few).index_fill_(0, among.to(few.device), True)
        return few.nonzero().flatten().tolist()


def warn_sparse_classes(
    owner: str, classes: Sequence[int], class_names: Sequence[str], consequence: str, min_flows: int = 1
) -> None:
    """Warn, naming them, that `classes` had fewer than `min_flows` training flows and
    what they get instead (`consequence`); nothing when `classes` is empty."""
    if not classes:
        return
    names = [class_names[k] for k in classes]
    which = "never seen in training" if min_flows == 1 else f"with fewer than {min_flows} training flows"
    warnings.warn(f"{owner}: classes {which}: {names}; {consequence}", UserWarning, stacklevel=3)


@torch.no_grad()
def class_sums(
    loader: Iterable[FlowBatch],
    values: Callable[[FlowBatch], Mapping[str, torch.Tensor]],
    num_classes: int,
    device: torch.device,
) -> ClassSums:
    """Float64 `ClassSums` over the loader's batches (moved to `device`) of what
    `values(batch) -> {name: (B, ...)}` computes."""
    sums = ClassSums.zeros(num_classes, device)
    for batch in loader:
        batch = batch.to(device)
        sums.add(batch.labels, values(batch))
    return sums


@torch.no_grad()
def guide_latent_sums(
    guide: LatentEncoder,
    loader: Iterable[FlowBatch],
    num_classes: int,
    device: torch.device,
    on_latents: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> ClassSums:
    """`class_sums` of the guide's latents `z (B, D)` and their squares `z2` over `loader`;
    `on_latents(z, labels)` sees every batch's latents (e.g. to keep some of them)."""

    def latents(batch: FlowBatch) -> dict[str, torch.Tensor]:
        z = guide.encode(batch.x)  # (B, D)
        if on_latents is not None:
            on_latents(z, batch.labels)
        return {"z": z, "z2": z * z}

    return class_sums(loader, latents, num_classes, device)


def class_regions(
    sums: ClassSums, class_names: Sequence[str], owner: str, min_flows: int = 2, warn: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class centroids `mu (K, D)` and spreads `sigma (K, D)` (population standard
    deviation, at least 1e-3) from sums `z` and `z2` (`guide_latent_sums`).

    A class with fewer than `min_flows` flows has no spread of its own: it gets the centroid
    and spread of all training flows, with a warning naming it (`warn=False`: no warning,
    and nothing read back to the host, for a caller that refits every training step).
    """
    n, s1, s2 = sums.n, sums.sums["z"], sums.sums["z2"]  # (K,), (K, D), (K, D)
    total = n.sum().clamp_min(1)
    g_mu = s1.sum(0) / total  # (D,)
    g_var = s2.sum(0) / total - g_mu**2  # (D,)
    seen = (n >= min_flows)[:, None]  # (K, 1)
    mu = torch.where(seen, s1 / n.clamp_min(1)[:, None], g_mu)  # (K, D)
    var = torch.where(seen, s2 / n.clamp_min(1)[:, None] - mu**2, g_var)  # (K, D)
    if warn:
        warn_sparse_classes(
            owner,
            sums.sparse(min_flows),
            class_names,
            "their latent region (centroid and spread) is that of all training flows",
            min_flows,
        )
    return mu, var.clamp_min(1e-8).sqrt().clamp_min(1e-3)
