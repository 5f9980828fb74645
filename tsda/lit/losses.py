"""The cGAN's loss terms as pure functions of tensors (`tsda.lit.gan.GANModule` weighs and
sums them). Every function returns a scalar; shapes are those of a batch of B flows.

Adversarial (hinge, as used with the projection discriminator of `tsda.nets.gan`):
    discriminator  `mean relu(1 - D(real)) + mean relu(1 + D(fake))`
    generator      `-mean D(fake)`
R1: `mean_b |grad_x D(real)_b|^2` (the module adds `r1_gamma / 2` times it).

Guidance by a frozen classifier's latent `e = encode(fake) (B, D)`:
    class          cross-entropy of `head(e)` against the conditioned class
    latent pull    `mean ((e - z) / sigma_y)^2` towards a conditioning latent `z (B, D)`
    latent region  `mean_b relu(mean_d ((e - mu_y) / sigma_y)^2 - 1)`: zero inside one
                   standard deviation of the class centroid on average, so the generator is
                   pulled into the class's region, not collapsed onto its centroid.

cVAE-GAN coverage: `recon` the L1 distance of a reconstruction to the real flow (mean over
channels and positions), `kl` the KL divergence of a diagonal Gaussian `(mu, logvar)` to
N(0, I) (mean per noise dimension).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss from scores `d_real (B,)`, `d_fake (B,)`."""
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def hinge_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss from the discriminator's scores of generated flows `(B,)`."""
    return -d_fake.mean()


def r1_penalty(d_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """`mean_b |d d_real_b / d real_b|^2` for scores `d_real (B,)` of `real (B, C, L)`
    (which must require grad); differentiable (the penalty trains the discriminator)."""
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)  # (B, C, L)
    return grad.pow(2).sum(dim=(1, 2)).mean()


def class_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the guide's `logits (B, K)` against the conditioned `labels (B,)`."""
    return F.cross_entropy(logits, labels)


def latent_pull(z: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`mean ((z - target) / sigma)^2` over `(B, D)` latents, targets and class spreads."""
    return (((z - target) / sigma) ** 2).mean()


def latent_region(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """`mean_b relu(mean_d ((z - mu) / sigma)^2 - 1)` over `(B, D)` latents, class
    centroids and spreads."""
    d2 = (((z - mu) / sigma) ** 2).mean(dim=1)  # (B,)
    return F.relu(d2 - 1.0).mean()


def reconstruction_l1(reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 distance of `reconstruction (B, C, L)` to `x (B, C, L)`, mean over every entry."""
    return (reconstruction - x).abs().mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of `N(mu, exp(logvar))` (`(B, Z)` each) to N(0, I), mean per entry."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
