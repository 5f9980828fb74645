"""The cVAE-GAN as the generator half of joint training (`JointGAN`, behind
`tsda.joint.part.JointGenerator`).

`JointGAN` is the cGAN of `tsda.generators.gan.module.GANModule` rebuilt from the same pieces (the nets of
`tsda.generators.gan.nets`, the loss functions of `tsda.generators.gan.losses`, the noise prior of
`tsda.generators.gan.prior`, the EMA of `tsda.generators.ema`) without its frozen guide and without latent
conditioning: in joint training the guide is the co-trained classifier, whose latent space
moves every step, so a generator conditioned on its latents would see its own input
distribution drift, and sampling would need latents of the final classifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from tsda.data.batch import FlowBatch
from tsda.generators.ema import ema_of
from tsda.generators.gan import losses
from tsda.generators.gan.nets import FlowDiscriminator, FlowEncoder, FlowGenerator
from tsda.generators.gan.prior import ClassNoisePrior, NoisePriorName, check_noise_prior
from tsda.generators.variation import cvae_vary, strengths
from tsda.joint.part import GeneratorTerms, JointGenerator


class JointGAN(JointGenerator):
    """The cVAE-GAN (`tsda.generators.gan.nets`) as the generator of joint training.

    Args:
        num_classes: K.
        n_packets: L.
        class_names: the K class names (warnings name classes).
        noise_dim: Z, the generator's noise `(B, Z)`.
        width, depth: the generator's trunk (`FlowGenerator`).
        disc_width: the projection discriminator's width (`FlowDiscriminator`).
        r1_gamma: weight of the R1 penalty on real flows (0 = off).
        w_recon: weight of the cVAE-GAN reconstruction L1 (0 = no encoder: a plain cGAN).
        w_kl: weight of the encoder's KL divergence to N(0, I).
        ema_decay: decay of the generator's EMA (ramped up), which samples.

    Raises:
        ValueError: naming `model.generator_kwargs.<name>`.
    """

    def __init__(
        self,
        num_classes: int,
        n_packets: int,
        class_names: Sequence[str],
        noise_dim: int = 64,
        width: int = 64,
        depth: int = 3,
        disc_width: int = 64,
        r1_gamma: float = 0.0,
        w_recon: float = 0.0,
        w_kl: float = 1.0,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        for name, value in (("noise_dim", noise_dim), ("width", width), ("depth", depth), ("disc_width", disc_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.generator_kwargs.{name} must be an integer >= 1, got {value!r}")
        for name, weight in (("r1_gamma", r1_gamma), ("w_recon", w_recon), ("w_kl", w_kl)):
            if not weight >= 0:
                raise ValueError(f"model.generator_kwargs.{name} must be >= 0, got {weight}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.generator_kwargs.ema_decay must be in [0, 1), got {ema_decay}")
        self.class_names = list(class_names)
        self.noise_dim, self.r1_gamma = noise_dim, float(r1_gamma)
        self.w_recon, self.w_kl = float(w_recon), float(w_kl)
        self.generator = FlowGenerator(num_classes, n_packets, noise_dim, width, depth)
        self.discriminator = FlowDiscriminator(num_classes, disc_width)
        self.generator_ema = ema_of(self.generator, ema_decay, ramp=True)
        self.encoder = FlowEncoder(num_classes, noise_dim, disc_width) if w_recon > 0 else None
        self.noise_prior = (
            ClassNoisePrior(num_classes, noise_dim, owner="JointModule") if self.encoder is not None else None
        )

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = list(self.encoder.parameters()) if self.encoder is not None else []
        return {"generator": [*self.generator.parameters(), *encoder], "critic": list(self.discriminator.parameters())}

    def _noise(self, b: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(b, self.noise_dim, generator=g, device=g.device)  # (B, Z)

    def critic_terms(self, batch: FlowBatch, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Hinge loss of the discriminator (+ `r1_gamma / 2` x R1) on real vs generated flows."""
        with torch.no_grad():
            fake = self.generator(self._noise(len(batch), g), batch.labels)  # (B, 3, L)
        real = batch.x.detach().requires_grad_(self.r1_gamma > 0)
        d_real = self.discriminator(real, batch.labels)  # (B,)
        d_fake = self.discriminator(fake, batch.labels)  # (B,)
        loss = losses.hinge_d_loss(d_real, d_fake)
        if self.r1_gamma > 0:
            loss = loss + 0.5 * self.r1_gamma * losses.r1_penalty(d_real, real)
        return {"loss_d": loss, "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}

    def generator_terms(self, batch: FlowBatch, g: torch.Generator) -> GeneratorTerms:
        """`hinge_g(D(G(n)))` [+ `w_recon` x recon + `w_kl` x kl of the encoder's posteriors]."""
        noise = self._noise(len(batch), g)  # (B, Z)
        fake = self.generator(noise, batch.labels)  # (B, 3, L), hard direction and mask
        loss = losses.hinge_g_loss(self.discriminator(fake, batch.labels))
        logged = {"loss_adv": loss.detach()}
        if self.encoder is not None:
            mu, logvar = self.encoder(batch.x, batch.labels)  # 2 x (B, Z)
            eps = torch.randn(mu.shape, generator=g, device=g.device)  # (B, Z)
            rec = self.generator(mu + torch.exp(0.5 * logvar) * eps, batch.labels, straight_through=False)
            recon, kl = losses.reconstruction_l1(rec, batch.x), losses.gaussian_kl(mu, logvar)
            loss = loss + self.w_recon * recon + self.w_kl * kl
            logged.update(recon=recon.detach(), kl=kl.detach())
        return GeneratorTerms(loss, logged, fake, noise)

    def after_generator_step(self) -> None:
        self.generator_ema.update_parameters(self.generator)

    @torch.no_grad()
    def refit(self, loader: Iterable[FlowBatch]) -> None:
        """Refit the noise prior to the encoder's posteriors (cVAE-GAN only)."""
        if self.noise_prior is not None:
            assert self.encoder is not None  # the noise prior exists only with an encoder
            self.noise_prior.fit(self.encoder, loader, self.class_names)

    @property
    def prior_fitted(self) -> bool:
        """Whether the noise prior has been fitted (to any class) yet."""
        return self.noise_prior is not None and bool(self.noise_prior.fitted.any())

    @torch.no_grad()
    def generate(  # type: ignore[override]  # options are each generator's own, passed through by JointModule
        self,
        labels: torch.Tensor,
        g: torch.Generator,
        *,
        use_ema: bool = True,
        prior: NoisePriorName = "fitted",
        warn: bool = True,
    ) -> torch.Tensor:
        """`x (B, 3, L)` of `labels (B,)`: the EMA generator (`use_ema`) on noise from the
        fitted class prior (`prior="fitted"`, the cVAE-GAN's; N(0, I) without an encoder)
        or N(0, I) (`"standard"`); `warn=False`: no warning about classes without a fitted
        Gaussian (`ClassNoisePrior.draw`)."""
        net = self.generator_ema.module if use_ema else self.generator
        was_training = net.training
        net.eval()
        x = net(self._prior_noise(labels, g, prior, warn), labels)  # (B, 3, L)
        net.train(was_training)
        return x

    def _prior_noise(
        self, labels: torch.Tensor, g: torch.Generator, prior: NoisePriorName, warn: bool = True
    ) -> torch.Tensor:
        """Sampling noise `(B, Z)` of `labels (B,)`: the fitted class prior's, or N(0, I)."""
        check_noise_prior(prior)
        eps = self._noise(len(labels), g)  # (B, Z)
        if prior == "standard" or self.noise_prior is None:
            return eps
        return self.noise_prior.draw(labels, eps, self.class_names, warn)

    @property
    def can_vary(self) -> bool:
        """A cVAE-GAN (with an encoder) can vary flows; a plain cGAN cannot."""
        return self.encoder is not None

    @torch.no_grad()
    def vary(  # type: ignore[override]  # options are each generator's own, passed through by JointModule
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        strength: torch.Tensor | float,
        g: torch.Generator,
        *,
        use_ema: bool = True,
        prior: NoisePriorName = "fitted",
    ) -> torch.Tensor:
        """`x (B, 3, L)` varied through the noise space (`tsda.generators.variation.cvae_vary`),
        with the generator `generate` uses (`use_ema`) and noise from `prior`; `strength` a
        number or one per flow `(B,)`."""
        net = self.generator_ema.module if use_ema else self.generator
        encoder = self.encoder
        assert encoder is not None  # vary is only called when can_vary: a cVAE-GAN, with an encoder
        return cvae_vary(
            lambda z: net(z, labels),
            lambda flows: encoder(flows, labels)[0],
            x,
            strengths(strength, len(x), x.device),
            self._prior_noise(labels, g, prior),
        )

    def training_flows(self, batch: FlowBatch, g: torch.Generator) -> torch.Tensor:
        """As `generate` for the batch's classes: N(0, I) noise for the classes the noise prior has not fitted (all
        of them until its first fit, at the end of the generator's first epoch), quietly:
        every training step, and asking the prior which classes it fitted, or naming them,
        reads device values back to the host (`fit` warned about them)."""
        return self.generate(batch.labels, g, warn=False)
