"""The generator half of joint training: the interface `tsda.joint.module.JointModule` trains a
generator through (`JointGenerator`), that every joint generator implements.

The module owns the loop, the optimisers and the latent objectives, which are computed in
the co-trained classifier's latent space on the differentiable flows the part returns; a
part owns its nets and its own objective:

- `parameter_groups()`: `{"generator": [...]}` and, for an adversarial part,
  `"critic": [...]`; the module gives each group its own Adam optimiser.
- `critic_terms(batch, g)`: the critic's loss on a real batch (`None` without a critic).
- `generator_terms(batch, g)`: the part's own weighted objective, plus the generated flows
  `fake (B, 3, L)` (differentiable; valid flows in the forward pass) and the noise they
  came from, on which the module adds its latent objectives.
- `after_generator_step()`, `refit(loader)`: the EMA update after every generator step;
  per-epoch statistics of the training flows (the cVAE-GAN's fitted noise prior).
- `generate(labels, g, **options)`: flows `x (B, 3, L)` for sampling (`JointModule.sample`),
  `training_flows(batch, g)`: those the classifier trains on (of the batch's classes).
- `can_vary`, `vary(x, labels, strength, g, **options)`: given flows varied (`JointModule.vary`;
  the cVAE-GAN's through its encoder, `tsda.generators.variation.cvae_vary`).

Implemented by `tsda.joint.gan.JointGAN` (the cVAE-GAN) and `tsda.joint.diffusion.JointDiffusion`;
`tsda.joint.generators` builds them by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tsda.data.batch import FlowBatch


@dataclass
class GeneratorTerms:
    """What a part's generator step hands the module.

    Attributes:
        loss: the part's own weighted objective (scalar, differentiable).
        logged: detached terms to log (`train_<name>`).
        fake: `(B, 3, L)` generated flows of the batch's classes, differentiable.
        noise: `(B, Z)` the noise each was generated from.
    """

    loss: torch.Tensor
    logged: dict[str, torch.Tensor]
    fake: torch.Tensor
    noise: torch.Tensor


class JointGenerator(nn.Module, ABC):
    """A generator that `JointModule` can train together with its classifier (see the
    module docstring)."""

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`{"generator": [...]}`, plus `"critic": [...]` for an adversarial part."""

    def critic_terms(self, batch: FlowBatch, g: torch.Generator) -> dict[str, torch.Tensor] | None:
        """The critic's loss `loss_d` (and detached scores) on a real batch; None = no critic."""
        return None

    @abstractmethod
    def generator_terms(self, batch: FlowBatch, g: torch.Generator) -> GeneratorTerms:
        """The generator's own objective on a real batch, and flows of its classes."""

    def after_generator_step(self) -> None:
        """After every generator optimiser step (e.g. the EMA update)."""

    def refit(self, loader: Iterable[FlowBatch]) -> None:
        """Refit statistics of the training flows in `loader` (once per epoch)."""

    @abstractmethod
    def generate(self, labels: torch.Tensor, g: torch.Generator, **options: Any) -> torch.Tensor:
        """`x (B, 3, L)` flows of `labels (B,)` for sampling; unknown options raise TypeError."""

    def training_flows(self, batch: FlowBatch, g: torch.Generator) -> torch.Tensor:
        """`x (B, 3, L)` flows of the batch's classes for the classifier to train on."""
        return self.generate(batch.labels, g)

    @property
    def can_vary(self) -> bool:
        """Whether `vary` can vary given flows."""
        return False

    def vary(
        self, x: torch.Tensor, labels: torch.Tensor, strength: torch.Tensor | float, g: torch.Generator, **options: Any
    ) -> torch.Tensor:
        """`x (B, 3, L)` flows of `labels (B,)` varied by `strength` in [0, 1], one number or one
        per flow `(B,)` (not yet snapped; `JointModule.vary`, and the classifier's generated
        share with `generated="vary"`); only called when `can_vary`."""
        raise NotImplementedError(f"{type(self).__name__} cannot vary flows")
