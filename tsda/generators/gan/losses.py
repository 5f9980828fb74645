"""The cGAN's loss terms as pure functions of tensors (`tsda.generators.gan.module.GANModule` weighs and
sums them). Every function returns a scalar; shapes are those of a batch of B flows.

Adversarial (hinge, as used with the projection discriminator of `tsda.generators.gan.nets`):
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

Joint training (`tsda.joint.module.JointModule`) adds `latent_diversity`, a mode-seeking hinge
in the co-trained classifier's latent, and `supervised_contrastive` (SupCon) over its views.
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


# -- terms of joint training (`tsda.joint.module.JointModule`) ----------------------------------
def latent_diversity(
    z: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor, target: float = 1.0
) -> torch.Tensor:
    """Mode-seeking diversity hinge over the same-class pairs of a generated batch.

    For generated flows `i != j` of one class, with latents `z (B, D)`, the noise
    `noise (B, Z)` they came from and their class spreads `sigma (B, D)`:

        r_ij = (mean_d |z_i - z_j| / sigma_y) / (mean_z |n_i - n_j|)
        loss = mean_{i != j, y_i = y_j} relu(target - r_ij)

    `r` is the mode-seeking ratio of MSGAN (Mao et al. 2019), measured in the classifier's
    latent and in units of the class's spread, so its scale holds while the latent space
    moves. Two independent draws of a Gaussian class region have `mean |dz| / sigma` of
    about 2 / sqrt(pi), as do two N(0, I) noises, so `r ~ 1` means "different noises give
    flows as far apart as two real flows of the class": the default `target`. The hinge is
    zero above it and its gradient bounded below it (MSGAN's `1 / r` explodes at collapse).
    Zero (with gradient) when no class occurs twice.
    """
    zn = z / sigma  # (B, D)
    dz = torch.cdist(zn, zn, p=1) / z.shape[1]  # (B, B); p=1: no NaN gradient at i = j
    dn = torch.cdist(noise, noise, p=1) / noise.shape[1]  # (B, B)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pairs = (labels[:, None] == labels[None, :]) & ~eye  # (B, B)
    if not pairs.any():
        return z.sum() * 0.0
    ratio = dz[pairs] / dn[pairs].clamp_min(1e-8)  # (P,)
    return F.relu(target - ratio).mean()


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, `L_out`) of latents `z (N, D)`
    with classes `labels (N,)`, on the unit sphere:

        s_ia = <z_i, z_a> / (|z_i| |z_a| temperature)
        loss = mean_{i with positives} -1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(s_i)_p

    with `P(i)` the other rows of `i`'s class. Zero (with gradient) when no class occurs twice.
    """
    u = F.normalize(z, dim=1)  # (N, D)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = (u @ u.T / temperature).masked_fill(eye, float("-inf"))  # (N, N)
    log_prob = sim - sim.logsumexp(dim=1, keepdim=True)  # (N, N), -inf on the diagonal
    positives = (labels[:, None] == labels[None, :]) & ~eye  # (N, N)
    count = positives.sum(dim=1)  # (N,)
    anchors = count > 0
    if not anchors.any():
        return z.sum() * 0.0
    summed = log_prob.masked_fill(~positives, 0.0).sum(dim=1)  # (N,)
    return -(summed[anchors] / count[anchors]).mean()
