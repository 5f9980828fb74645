"""Class regions of a latent space that moves: the targets of joint training's latent
objectives (`tsda.joint.module.JointModule`).

A frozen guide's class regions are fitted once (`tsda.generators.gan.module.GANModule`); the co-trained
classifier's latent space changes at every step, and regions refitted once per epoch go
stale: by the epoch's end, real training flows themselves can lie many class spreads away
from their class's region (experiments/generative/RESULTS.md). `MovingClassRegions` keeps
exponentially decayed class sums instead, with the same statistics as the guide mechanism
(`tsda.generators.guide.ClassSums`, `class_regions`: centroids `mu (K, D)`, spreads `sigma (K, D)`,
classes with fewer than 2 flows warned about and given the region of all flows):

    first update:   n, S1, S2 = the class sums of the training split's latents
    then per step:  n <- decay * n + n_batch,  S1 <- decay * S1 + sum z,  S2 <- ... z * z

so the regions follow the classifier with a memory of about `1 / (1 - decay)` steps. Latents
are those of the classifier in eval mode (running BatchNorm statistics), as the generator's
flows are scored. The sums are buffers: a checkpoint resumes them exactly.

Under DDP each rank has its own batch and its own BatchNorm running statistics, hence its
own eval-mode latents (Lightning's manual optimisation keeps DDP from broadcasting rank 0's
buffers, so nothing evens them out), and regions kept per rank would drift apart: the first
update's sums (each rank's pass over the whole training split) are averaged over the ranks
and each step's batch sums are added up over them (one all-reduce each), so every rank
holds the same regions, those of the global batch.

Per step nothing leaves the device: whether the sums are filled is known on the host
(`filled`), and classes too sparse for a region of their own are named in a warning only at
the first update (naming them needs their counts on the host, a device sync per step); later
updates still give such classes the region of all flows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tsda.classifier.nets import FlowClassifier
from tsda.data.batch import FlowBatch
from tsda.generators.guide import ClassSums, class_regions, guide_latent_sums


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
    """`net` in eval mode inside the block (gradients still flow), its mode restored after."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


class EvalSeam:
    """A classifier's `encode` in eval mode: `x (B, 3, L)` -> `z (B, D)`."""

    def __init__(self, net: FlowClassifier) -> None:
        self.net = net

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.net):
            return self.net.encode(x)  # (B, D)


class MovingClassRegions(nn.Module):
    """Decayed class sums of a moving latent space and their regions (module docstring).

    Args:
        num_classes: K.
        latent_dim: D.
        decay: weight the sums keep at each update, in [0, 1) (0 = the last batch alone).
        owner: how warnings name the module holding the regions.
    """

    n: torch.Tensor  # (K,) buffer
    z: torch.Tensor  # (K, D) buffer
    z2: torch.Tensor  # (K, D) buffer
    mu: torch.Tensor  # (K, D) buffer
    sigma: torch.Tensor  # (K, D) buffer

    def __init__(self, num_classes: int, latent_dim: int, decay: float = 0.9, owner: str = "JointModule") -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"model.region_decay must be in [0, 1), got {decay}")
        self.decay, self.owner = float(decay), owner
        self.register_buffer("n", torch.zeros(num_classes))  # (K,) decayed flow counts
        self.register_buffer("z", torch.zeros(num_classes, latent_dim))  # (K, D) decayed sums of z
        self.register_buffer("z2", torch.zeros(num_classes, latent_dim))  # (K, D) ... of z * z
        self.register_buffer("mu", torch.zeros(num_classes, latent_dim))  # (K, D) class centroids
        self.register_buffer("sigma", torch.ones(num_classes, latent_dim))  # (K, D) class spreads
        self._filled: bool | None = None  # host copy of `filled` (None: ask the buffers once)

    @property
    def sums(self) -> ClassSums:
        """The decayed class sums (the buffers themselves, not a copy)."""
        return ClassSums(self.n, {"z": self.z, "z2": self.z2})

    @property
    def filled(self) -> bool:
        """Whether the sums hold flows (kept on the host: read from the buffers once after
        construction or a state-dict load)."""
        if self._filled is None:
            self._filled = bool(self.n.sum() > 0)
        return self._filled

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._filled = None

    @torch.no_grad()
    def update(
        self,
        net: FlowClassifier,
        batch: FlowBatch,
        class_names: Sequence[str],
        training_split: Callable[[], Iterable[FlowBatch]],
        strategy: Any = None,
    ) -> None:
        """Follow `net`'s current eval-mode latents: the first update fills the sums from
        `training_split()` (a loader of the training flows), later ones decay them and add
        the real `batch`'s latents (under DDP, `strategy.world_size > 1`, those of every
        rank's batch); then `mu`, `sigma` are refitted."""
        sums, seam = self.sums, EvalSeam(net)
        first = not self.filled
        if first:
            full = _over_ranks(
                guide_latent_sums(seam, training_split(), int(self.n.shape[0]), self.n.device), strategy, "mean"
            )
            self.n.copy_(full.n)
            self.z.copy_(full.sums["z"])
            self.z2.copy_(full.sums["z2"])
            self._filled = True
        else:
            for t in (self.n, self.z, self.z2):
                t.mul_(self.decay)
            z = seam.encode(batch.x)  # (B, D)
            values = {"z": z, "z2": z * z}
            if getattr(strategy, "world_size", 1) > 1:
                added = ClassSums.zeros(int(self.n.shape[0]), self.n.device, self.n.dtype)
                added.add(batch.labels, values)
                sums.add_sums(_over_ranks(added, strategy, "sum"))
            else:
                sums.add(batch.labels, values)
        mu, sigma = class_regions(sums, class_names, self.owner, warn=first)
        self.mu.copy_(mu)
        self.sigma.copy_(sigma)


def _over_ranks(sums: ClassSums, strategy: Any, op: str) -> ClassSums:
    """Latent class sums `n (K,)`, `z`, `z2 (K, D)` reduced over the DDP ranks with `op`
    (`sum`, `mean`) in one all-reduce; `sums` itself on one process."""
    if getattr(strategy, "world_size", 1) == 1:
        return sums
    d = sums.sums["z"].shape[1]
    packed = strategy.reduce(
        torch.cat([sums.n[:, None], sums.sums["z"], sums.sums["z2"]], 1), reduce_op=op
    )  # (K, 1 + 2D)
    return ClassSums(packed[:, 0], {"z": packed[:, 1 : 1 + d], "z2": packed[:, 1 + d :]})
