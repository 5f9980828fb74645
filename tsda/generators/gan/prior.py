"""`ClassNoisePrior`: the fitted noise prior a cVAE-GAN samples from.

The cVAE-GAN's encoder (`tsda.generators.gan.nets.FlowEncoder`) maps each real flow of class k to a
Gaussian posterior over the generator's noise; its KL term pulls the posteriors towards
N(0, I), but the codes of class k still occupy a class-specific region. So, as in ex-post
density estimation (Ghosh et al. 2020), a full-covariance Gaussian per class is fitted to
the posteriors of the training flows, and sampling draws the noise from it:

    mean_k = E[mu],   cov_k = Cov[mu] + E[diag(exp(logvar))] + 1e-4 I   over class k's flows

stored as buffers `mean (K, Z)` and the Cholesky factor `chol (K, Z, Z)`, with the flow
count `n (K,)` of each fitted class (0 = not fitted). `draw(labels, eps)` maps standard
noise `eps (B, Z)` to `mean_y + chol_y @ eps`.

Why an `nn.Module` in `tsda.lit`, not in `tsda.nets`: it is no network (no parameters,
nothing learnt by gradient) but a statistic of the training data, refitted by the
LightningModule at epoch boundaries from a pass over the training split (through the
class-sums mechanism of `tsda.generators.guide`), and it warns about classes it could not fit;
it is an `nn.Module` only so that its buffers move with, and are checkpointed with, the
generator module holding it.

Classes the prior cannot fit (fewer than 2 training flows, or a covariance that is not
positive definite) keep N(0, I). That is a fallback, so it is not silent: `fit` warns
naming them, and so does `draw` when asked for them (e.g. every class of a checkpoint
saved before the fitted prior existed). A warning, not an error: N(0, I) is the noise the
generator was trained on, so those flows are still valid flows of the class the generator
makes of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import torch
from torch import nn

from tsda.data.batch import FlowBatch
from tsda.generators.guide import class_sums, warn_sparse_classes

#: where `GANModule.sample` draws the generator's noise from
NoisePriorName = Literal["fitted", "standard"]
NOISE_PRIORS: tuple[str, ...] = get_args(NoisePriorName)

#: fewest training flows of a class for a fitted Gaussian (a covariance needs two)
MIN_FLOWS = 2


def check_noise_prior(prior: str) -> None:
    """`prior` is one of `NOISE_PRIORS`."""
    if prior not in NOISE_PRIORS:
        raise ValueError(f"prior must be one of {NOISE_PRIORS}, got {prior!r}")


class ClassNoisePrior(nn.Module):
    """A Gaussian over the generator's noise per class, fitted to encoder posteriors.

    Args:
        num_classes: K.
        noise_dim: Z, the generator's noise size.
        owner: how warnings name the module that holds the prior.
    """

    mean: torch.Tensor  # (K, Z) buffer
    chol: torch.Tensor  # (K, Z, Z) buffer
    n: torch.Tensor  # (K,) buffer

    def __init__(self, num_classes: int, noise_dim: int, owner: str = "GANModule") -> None:
        super().__init__()
        self.owner = owner
        self.register_buffer("mean", torch.zeros(num_classes, noise_dim))  # (K, Z)
        self.register_buffer("chol", torch.eye(noise_dim).repeat(num_classes, 1, 1))  # (K, Z, Z)
        self.register_buffer("n", torch.zeros(num_classes, dtype=torch.long))  # (K,)

    @property
    def noise_dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def fitted(self) -> torch.Tensor:
        """`(K,)` bool: the classes with a fitted Gaussian."""
        return self.n > 0

    @torch.no_grad()
    def fit(
        self,
        encoder: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        loader: Iterable[FlowBatch],
        class_names: Sequence[str],
    ) -> None:
        """Refit every class to the posteriors `encoder(x, labels) -> (mu, logvar)`
        (2 x `(B, Z)`) of the flows in `loader` (the encoder is run in eval mode)."""
        was_training = getattr(encoder, "training", False)
        if isinstance(encoder, nn.Module):
            encoder.eval()

        def codes(batch: FlowBatch) -> dict[str, torch.Tensor]:
            mu, logvar = encoder(batch.x, batch.labels)  # 2 x (B, Z)
            return {"mu": mu, "outer": mu[:, :, None] * mu[:, None, :], "var": logvar.exp()}

        sums = class_sums(loader, codes, int(self.n.shape[0]), self.mean.device)
        if isinstance(encoder, nn.Module):
            encoder.train(was_training)
        n, z = sums.n, self.noise_dim
        fitted = n >= MIN_FLOWS  # (K,)
        m = n.clamp_min(1)[:, None]  # (K, 1)
        mean = sums.sums["mu"] / m  # (K, Z)
        eye = torch.eye(z, dtype=torch.float64, device=self.mean.device)
        cov = (
            sums.sums["outer"] / m[:, :, None]
            - mean[:, :, None] * mean[:, None, :]
            + torch.diag_embed(sums.sums["var"] / m)
            + 1e-4 * eye
        )  # (K, Z, Z)
        chol, info = torch.linalg.cholesky_ex(cov)  # (K, Z, Z)
        warn_sparse_classes(
            f"{self.owner} noise prior",
            sums.sparse(MIN_FLOWS),
            class_names,
            "they keep N(0, I) as their noise prior",
            MIN_FLOWS,
        )
        singular = (fitted & (info != 0)).nonzero().flatten().tolist()
        if singular:
            warnings.warn(
                f"{self.owner} noise prior: the posterior covariance of classes "
                f"{[class_names[k] for k in singular]} is not positive definite; they keep "
                "N(0, I) as their noise prior",
                UserWarning,
                stacklevel=2,
            )
        fitted &= info == 0
        self.mean.copy_(torch.where(fitted[:, None], mean, 0.0).float())
        self.chol.copy_(torch.where(fitted[:, None, None], chol, eye).float())
        self.n.copy_(torch.where(fitted, n, 0.0).long())

    def draw(
        self, labels: torch.Tensor, eps: torch.Tensor, class_names: Sequence[str], warn: bool = True
    ) -> torch.Tensor:
        """Noise `(B, Z)` for `labels (B,)` from standard noise `eps (B, Z)`:
        `mean_y + chol_y @ eps_b` (N(0, I), i.e. `eps` itself, for a class not fitted, with a
        warning; `warn=False`, for draws every training step: no warning, and nothing read
        back to the host, which naming the classes needs)."""
        fitted = self.fitted[labels]  # (B,)
        if warn:
            missing = sorted(set(labels[~fitted].tolist()))
            if missing:
                warnings.warn(
                    f"{self.owner}.sample: the fitted noise prior has no Gaussian for classes "
                    f"{[class_names[k] for k in missing]} (fewer than {MIN_FLOWS} training flows, or a "
                    "checkpoint from before the fitted prior); they draw noise from N(0, I)",
                    UserWarning,
                    stacklevel=3,
                )
        drawn = self.mean[labels] + torch.einsum("bij,bj->bi", self.chol[labels], eps)  # (B, Z)
        return torch.where(fitted[:, None], drawn, eps)
