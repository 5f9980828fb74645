"""A class-conditional 1D-conv GAN for `(B, 3, L)` flows (plain `nn.Module`s).

What makes flows unlike images, and how the nets handle it:

* **Length / padding.** The generator emits a fourth, *presence* channel. Its sigmoid is
  turned into a monotone keep-mask with a cumulative product (`m_t = prod_{s<=t} p_s`), so
  padding can only follow the last real packet. Every channel is multiplied by the mask,
  so padding is all-zero like in real `FlowBatch`es, and `FlowCodec.snap` reads the length
  back from `|direction| < 0.5`.
* **Binary direction.** Direction is `tanh`; with `straight_through=True` (the default, for
  training and sampling alike) the forward pass uses the hard sign (and the hard 0/1 mask)
  while gradients flow through the soft values (straight-through estimator), so the
  discriminator never sees non-binary directions it could use to tell fakes apart, and
  samples are exactly what the discriminator was trained against.
* **Heavy tails.** `FlowCodec` already log-scales gaps and divides sizes by the MTU, so the
  generator outputs `sigmoid` sizes in [0, 1] and `softplus` gaps (>= 0, capped at `MAX_IAT`).

Discriminator choice: a **projection discriminator** (Miyato & Koyama 2018) with spectral
norm on every layer and the hinge loss. An auxiliary-classifier (AC-GAN) head was the
alternative; it is known to push generators towards easy-to-classify, low-diversity samples
within each class and to be less stable with many classes (FG-Net has 53). Class semantics
are instead enforced, when wanted, by the *frozen traffic classifier's* guidance terms in
`tsda.generators.gan.module.GANModule`, which keeps "looks real" (discriminator) and "belongs to class k
according to the classifier we augment" (guidance) as two separately weighted terms.

Conditioning: the generator concatenates its class embedding (and, optionally, a projection
of a classifier latent vector `z (B, D)`) to the noise at its input *and* modulates every
residual block's GroupNorm with it (FiLM), so the class cannot be washed out by the noise
in the trunk. With latent conditioning, the discriminator adds a second
projection term `<W z, h>`. Unconditional nets (`conditional=False`, a generator trained
without labels) have no class embedding at all (generator, discriminator, encoder): the
generator's blocks are then modulated by the latent only, or not at all, the
discriminator is `psi(h)` (no projection term), and the `labels` they are given are ignored.

Coverage: GANs drop modes, and a generator that draws only part of each class is of little
use to a classifier trained on its flows. `FlowEncoder` turns the cGAN into a cVAE-GAN
(Larsen et al. 2016; the cVAE-GAN half of BicycleGAN, Zhu et al. 2017): it maps a real flow
and its class to a Gaussian over the generator's noise, and the generator must reconstruct
the flow from a draw of it, so every real flow has a noise region that decodes near it;
a KL term keeps those regions near N(0, I), and sampling draws from a Gaussian per class
fitted to them (`tsda.generators.gan.prior.ClassNoisePrior`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from tsda.data.batch import DIRECTION, IAT, SIZE

#: largest encoded gap the generator emits (1.5 = about 1,000 s with the codec's defaults)
MAX_IAT = 1.5


def _with_presence(x: torch.Tensor) -> torch.Tensor:
    """`x (B, 3, L)` plus an explicit presence channel (|direction|: 1 on real packets, 0 on
    padding) -> `(B, 4, L)`, the input of the discriminator and the encoder."""
    return torch.cat([x, x[:, DIRECTION : DIRECTION + 1].abs()], dim=1)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


class _GenBlock(nn.Module):
    """Residual Conv1d(k3) block with class-conditional GroupNorm (FiLM):
    `h (B, C, L)`, `cond (B, E)` -> `(B, C, L)`.

    Each GroupNorm's scale and shift are `1 + gamma(cond)` and `beta(cond)` (zero at init),
    so the class (and latent) steer every block, not only the stem's input."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        groups = 8 if channels % 8 == 0 else 1
        self.norm1 = nn.GroupNorm(groups, channels, affine=False)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels, affine=False)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 4 * channels) if cond_dim else None  # None: nothing to condition on
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        film = self.film(cond) if self.film is not None else h.new_zeros(h.shape[0], 4 * h.shape[1])  # (B, 4C)
        g1, b1, g2, b2 = film[:, :, None].chunk(4, dim=1)  # 4 x (B, C, 1)
        y = self.conv1(nn.functional.silu(self.norm1(h) * (1 + g1) + b1))  # (B, C, L)
        y = self.conv2(nn.functional.silu(self.norm2(y) * (1 + g2) + b2))  # (B, C, L)
        return h + y


class FlowGenerator(nn.Module):
    """Noise, class (and optionally a classifier latent) -> a flow `(B, 3, L)`.

    Args:
        num_classes: K.
        n_packets: L.
        noise_dim: dimension of the noise vector `(B, noise_dim)`.
        width: channels C of the conv trunk.
        depth: residual blocks.
        embed_dim: class embedding size.
        latent_dim: D of the conditioning classifier latent `(B, D)`; 0 = no latent input.
        conditional: False = no class embedding (the labels are ignored).
    """

    def __init__(
        self,
        num_classes: int,
        n_packets: int = 20,
        noise_dim: int = 64,
        width: int = 64,
        depth: int = 3,
        embed_dim: int = 32,
        latent_dim: int = 0,
        conditional: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(
            num_classes=num_classes,
            n_packets=n_packets,
            noise_dim=noise_dim,
            width=width,
            depth=depth,
            embed_dim=embed_dim,
        )
        if latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {latent_dim}")
        self.num_classes, self.n_packets, self.noise_dim = num_classes, n_packets, noise_dim
        self.width, self.latent_dim = width, latent_dim
        self.embed = nn.Embedding(num_classes, embed_dim) if conditional else None
        self.latent_proj = nn.Linear(latent_dim, embed_dim) if latent_dim else None
        in_dim = noise_dim + embed_dim * (int(conditional) + int(latent_dim > 0))
        self.stem = nn.Linear(in_dim, width * n_packets)
        self.blocks = nn.ModuleList([_GenBlock(width, in_dim - noise_dim) for _ in range(depth)])
        self.out = nn.Sequential(nn.GroupNorm(1, width), nn.SiLU(), nn.Conv1d(width, 4, 3, padding=1))
        head = self.out[-1]
        assert isinstance(head, nn.Conv1d) and head.bias is not None
        with torch.no_grad():  # start with full-length flows: sigmoid(4)^19 = 0.71 > 0.5
            head.bias[3] = 4.0

    def forward(
        self,
        noise: torch.Tensor,
        labels: torch.Tensor,
        latent: torch.Tensor | None = None,
        straight_through: bool = True,
    ) -> torch.Tensor:
        """`noise (B, noise_dim)`, `labels (B,)`, `latent (B, D)` -> `x (B, 3, L)`.

        Sizes in [0, 1], direction in [-1, 1] (exactly +-1 on packets and 0 on padding when
        `straight_through`), gaps >= 0 with a 0 first gap; positions after the first
        padding position are zero.
        """
        b = noise.shape[0]
        # 1. conditioning vector
        parts = [self.embed(labels)] if self.embed is not None else []  # (B, E)
        if self.latent_proj is not None:
            if latent is None:
                raise ValueError("this generator is latent-conditioned: pass latent (B, D)")
            parts.append(self.latent_proj(latent))  # (B, E)
        cond = torch.cat(parts, dim=1) if parts else noise[:, :0]  # (B, 0, E or 2E): 0 = unconditional
        h = self.stem(torch.cat([noise, cond], dim=1)).view(b, self.width, self.n_packets)  # (B, C, L)
        # 2. conv trunk (conditioned per block) and the four raw channels
        for block in self.blocks:
            h = block(h, cond)  # (B, C, L)
        raw = self.out(h)  # (B, 4, L): size, direction, iat, presence logits
        size = torch.sigmoid(raw[:, 0])  # (B, L)
        direction = torch.tanh(raw[:, 1])  # (B, L)
        iat = nn.functional.softplus(raw[:, 2]).clamp_max(MAX_IAT)  # (B, L)
        iat = torch.cat([torch.zeros_like(iat[:, :1]), iat[:, 1:]], dim=1)  # first gap is 0
        # 3. monotone presence mask: padding only after the last packet, the first packet kept
        keep = torch.cumprod(torch.sigmoid(raw[:, 3, 1:]), dim=1)  # (B, L-1) non-increasing
        keep = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # (B, L)
        if straight_through:
            hard_keep = (keep >= 0.5).float()
            keep = hard_keep + (keep - keep.detach())  # exactly 0/1 forward, soft gradient
            hard_dir = torch.where(direction >= 0, 1.0, -1.0)
            direction = hard_dir + (direction - direction.detach())
        channels = {SIZE: size, DIRECTION: direction, IAT: iat}
        x = torch.stack([channels[c] for c in range(3)], dim=1)  # (B, 3, L)
        return x * keep[:, None, :]


class FlowDiscriminator(nn.Module):
    """Projection discriminator with spectral norm: `x (B, 3, L)`, `labels (B,)` -> `(B,)`.

    `score = psi(h) + <embed(y), h> [+ <W z, h>]` with `h (B, C)` the summed conv features.

    Args:
        num_classes: K.
        width: channels of the first conv layer (doubled once).
        latent_dim: D of an optional classifier latent `(B, D)` to project on; 0 = none.
        conditional: False = no class projection (`score = psi(h)`; labels ignored).
    """

    def __init__(self, num_classes: int, width: int = 64, latent_dim: int = 0, conditional: bool = True) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, width=width)
        if latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {latent_dim}")
        c = 2 * width
        act = nn.LeakyReLU(0.2)
        self.features = nn.Sequential(
            spectral_norm(nn.Conv1d(4, width, 3, padding=1)),
            act,
            spectral_norm(nn.Conv1d(width, width, 3, padding=1)),
            act,
            spectral_norm(nn.Conv1d(width, c, 4, stride=2, padding=1)),
            act,
            spectral_norm(nn.Conv1d(c, c, 3, padding=1)),
            act,
        )
        self.psi = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, c)) if conditional else None
        self.latent_proj = spectral_norm(nn.Linear(latent_dim, c)) if latent_dim else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        # 1. conv features of the flow and its presence channel
        h = self.features(_with_presence(x)).sum(dim=2)  # (B, C)
        # 2. unconditional score plus class (and latent) projections
        score = self.psi(h).squeeze(1)  # (B,)
        if self.embed is not None:
            score = score + (self.embed(labels) * h).sum(dim=1)
        if self.latent_proj is not None and latent is not None:
            score = score + (self.latent_proj(latent) * h).sum(dim=1)
        return score


class FlowEncoder(nn.Module):
    """Real flow and class -> a diagonal Gaussian over the generator's noise:
    `x (B, 3, L)`, `labels (B,)` -> `mu (B, noise_dim)`, `logvar (B, noise_dim)`.

    Args:
        num_classes: K.
        noise_dim: dimension of the generator's noise.
        width: channels of the conv trunk (doubled once).
        conditional: False = no class embedding (labels ignored).
    """

    def __init__(self, num_classes: int, noise_dim: int = 64, width: int = 64, conditional: bool = True) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, noise_dim=noise_dim, width=width)
        c = 2 * width
        act = nn.SiLU()
        self.features = nn.Sequential(
            nn.Conv1d(4, width, 3, padding=1),
            act,
            nn.Conv1d(width, c, 4, stride=2, padding=1),
            act,
            nn.Conv1d(c, c, 3, padding=1),
            act,
        )
        self.embed = nn.Embedding(num_classes, c) if conditional else None
        self.out = nn.Linear(c, 2 * noise_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(_with_presence(x)).mean(dim=2)  # (B, C)
        if self.embed is not None:
            h = h + self.embed(labels)  # (B, C)
        mu, logvar = self.out(nn.functional.silu(h)).chunk(2, dim=1)  # 2 x (B, Z)
        return mu, logvar.clamp(-10.0, 5.0)
