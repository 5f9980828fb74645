"""`GANModule`: a class-conditional GAN for flows, optionally guided by a frozen classifier,
or an unconditional one (`conditional=False`: trained without labels, `tsda.generators.gan.conditioning`).

Training follows Lightning's GAN example (manual optimisation: `toggle_optimizer`,
`manual_backward`), with the hinge loss, a projection discriminator with spectral norm
(`tsda.generators.gan.nets`), an optional R1 gradient penalty and an exponential moving average (EMA)
of the generator's weights, which is what `sample` uses. The loss terms are the pure
functions of `tsda.generators.gan.losses`; this module weighs and sums them.

Latent guidance comes from a frozen, pretrained `ClassifierModule` checkpoint
(`classifier_ckpt`, loaded as a `tsda.generators.guide.FrozenGuide`), the classifier whose latent
space the synthetic flows should populate. The generator loss adds `w_class` x the guide's
cross-entropy on generated flows and `w_latent` x a pull of their latents `encode(x_gen)`
(formulas: `tsda.generators.gan.losses`) towards the conditioning latent when `latent_conditioning`
(the generator then also takes a latent `(B, D)`: in training the guide's latent of the
real flow, when sampling one of up to `LATENT_BANK` stored real latents of the class, so
sampling sees the conditioning distribution of training), otherwise into the class's
region (centroid plus spread, not collapsed onto the centroid).

Class centroids `mu (K, D)` and spreads `sigma (K, D)` are computed from the training data
at fit start (`tsda.generators.guide.class_regions`: a class with fewer than 2 training flows gets
the region of all training flows, with a warning naming it) and stored as buffers (with the
per-class bank of real latents when latent-conditioned), so a checkpoint can sample without
the classifier. Zero weights and no latent conditioning give the plain cGAN.

Coverage (`w_recon > 0`, the cVAE-GAN of `tsda.generators.gan.nets`): an encoder maps each real flow
to a Gaussian over the generator's noise; the generator adds `w_recon` x the L1 distance of
the flow's (soft) reconstruction from a draw of it and `w_kl` x its KL divergence to
N(0, I). The fitted noise prior (`tsda.generators.gan.prior.ClassNoisePrior`, submodule `noise_prior`)
is refitted to the posteriors of the training flows after every training epoch and before
validation; `sample` draws the noise from it (`prior="fitted"`, the default) or from N(0, I)
(`"standard"`, which is also what `"fitted"` means for a plain cGAN: no encoder, trained on
N(0, I) noise). Why: experiments/cgan/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from tsda.data.batch import FlowBatch
from tsda.generators.base import GenerativeModule
from tsda.generators.ema import check_ema_decay, ema_of
from tsda.generators.gan import losses
from tsda.generators.gan.conditioning import (LATENT_BANK, bank_latent, check_unconditional, fill_bank, pooled,
                                              prior_classes, prior_labels)
from tsda.generators.gan.nets import FlowDiscriminator, FlowEncoder, FlowGenerator
from tsda.generators.gan.prior import ClassNoisePrior, NoisePriorName, check_noise_prior
from tsda.generators.guide import FrozenGuide, LatentGuide, class_regions, guide_latent_sums, load_guide, warn_sparse_classes
from tsda.generators.variation import cvae_vary, run_variation
from tsda.lit import check_class_names
from tsda.lit.rng import SeededModule
from tsda.seeds import seeded_generator

#: state-dict keys of checkpoints saved before the noise prior was the submodule `noise_prior`
LEGACY_PRIOR_KEYS = {"noise_mean": "noise_prior.mean", "noise_chol": "noise_prior.chol",
                     "noise_prior_n": "noise_prior.n"}


class GANModule(SeededModule, GenerativeModule):
    """Conditional GAN over `FlowBatch(x (B, 3, L), lengths, labels)`.

    Args:
        num_classes, class_names: K and its names (linked from the datamodule by the CLI).
        n_packets, mtu, iat_unit, iat_max: the `FlowCodec` settings of the training data
            (checked against the datamodule's codec at fit start).
        noise_dim, width, depth: generator size (see `FlowGenerator`).
        disc_width: discriminator width.
        lr_g, lr_d, betas: Adam settings of generator and discriminator.
        n_critic: discriminator steps per generator step.
        r1_gamma: weight of the R1 gradient penalty on real flows (0 = off).
        ema_decay: decay of the generator's EMA (`tsda.generators.ema`: ramped up over the first steps).
        classifier_ckpt: a trained `ClassifierModule` checkpoint that guides the generator
            (frozen); needed when `w_class`, `w_latent` or `latent_conditioning` is set.
        w_class: weight of the classifier's cross-entropy on generated flows.
        w_latent: weight of the latent pull (see the module docstring).
        latent_conditioning: condition generator and discriminator on a classifier latent.
        latent_dim: D of the classifier's latent; set from `classifier_ckpt` (0 = none).
        w_recon: weight of the cVAE-GAN reconstruction loss (0 = no encoder: a plain cGAN).
        w_kl: weight of the encoder's KL divergence to the N(0, I) noise prior.
        conditional: False = train without labels (no class embedding, no projection term,
            one noise prior over all flows; no guide); `class_names` are still kept, and
            `sample` ignores its labels (label the flows with `tsda sample --label_with`).
        seed: seeds the training noise generator (the CLI links `seed_everything`).
    """

    class_mu: torch.Tensor  # (K, D) buffer, with a latent space (latent_dim)
    class_sigma: torch.Tensor  # (K, D) buffer, with a latent space (latent_dim)
    class_bank: torch.Tensor  # (K, M, D) buffer, when latent-conditioned
    class_bank_n: torch.Tensor  # (K,) buffer, when latent-conditioned

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        n_packets: int = 20, mtu: float = 1460.0, iat_unit: float = 1e-3, iat_max: float = 10.0,
        noise_dim: int = 64,
        width: int = 64,
        depth: int = 3,
        disc_width: int = 64,
        lr_g: float = 2e-4, lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        n_critic: int = 1,
        r1_gamma: float = 0.0,
        ema_decay: float = 0.999,
        classifier_ckpt: str | None = None,
        w_class: float = 0.0,
        w_latent: float = 0.0,
        latent_conditioning: bool = False,
        latent_dim: int = 0,
        w_recon: float = 0.0,
        w_kl: float = 1.0,
        conditional: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_class_names(class_names, num_classes)
        check_unconditional(conditional, classifier_ckpt=classifier_ckpt, w_class=w_class, w_latent=w_latent,
                            latent_conditioning=latent_conditioning)
        for name, value in (("w_class", w_class), ("w_latent", w_latent), ("r1_gamma", r1_gamma),
                            ("w_recon", w_recon), ("w_kl", w_kl)):
            if value < 0:
                raise ValueError(f"model.{name} must be >= 0, got {value}")
        check_ema_decay(ema_decay)
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        self.automatic_optimization = False
        guide = load_guide(num_classes, path=classifier_ckpt)
        if guide is not None:
            if latent_dim not in (0, guide.latent_dim):
                raise ValueError(f"model.latent_dim={latent_dim} but the classifier's latent has "
                                 f"{guide.latent_dim} dimensions")
            latent_dim = guide.latent_dim
        if latent_conditioning and latent_dim == 0:
            raise ValueError("model.latent_conditioning needs model.classifier_ckpt (or latent_dim)")
        self.save_hyperparameters()
        self.hparams["latent_dim"] = latent_dim
        object.__setattr__(self, "_guide", guide)  # frozen, not a submodule: not in the checkpoint
        cond_dim = latent_dim if latent_conditioning else 0
        self.generator = FlowGenerator(num_classes, n_packets, noise_dim, width, depth, latent_dim=cond_dim,
                                       conditional=conditional)
        self.discriminator = FlowDiscriminator(num_classes, disc_width, latent_dim=cond_dim, conditional=conditional)
        self.generator_ema = ema_of(self.generator, ema_decay, ramp=True)
        self.encoder = FlowEncoder(num_classes, noise_dim, disc_width, conditional) if w_recon > 0 else None
        self.noise_prior = (ClassNoisePrior(prior_classes(conditional, num_classes)[0], noise_dim,
                                            owner=type(self).__name__) if self.encoder is not None else None)
        if latent_dim:
            self.register_buffer("class_mu", torch.zeros(num_classes, latent_dim))  # (K, D)
            self.register_buffer("class_sigma", torch.ones(num_classes, latent_dim))  # (K, D)
        if latent_conditioning:
            self.register_buffer("class_bank", torch.zeros(num_classes, LATENT_BANK, latent_dim))  # (K, M, D)
            self.register_buffer("class_bank_n", torch.zeros(num_classes, dtype=torch.long))  # (K,)
        self.init_run_generator(seed, "noise")

    # -- the frozen guide ------------------------------------------------------------------
    @classmethod
    def load_overrides(cls) -> dict[str, Any]:
        return {"classifier_ckpt": None}

    @property
    def guide(self) -> LatentGuide | None:
        """The frozen guide (or None), on the module's device."""
        guide: FrozenGuide | None = self.__dict__.get("_guide")
        if guide is not None and guide.device != self.device:
            guide.to(self.device)
        return guide

    @property
    def guided(self) -> bool:
        h = self.hparams
        return h.w_class > 0 or h.w_latent > 0 or bool(h.latent_conditioning)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm: Any = getattr(self.trainer, "datamodule", None)
        if self.guided and self.guide is None:
            raise ValueError("model.w_class, model.w_latent and model.latent_conditioning need "
                             "model.classifier_ckpt")
        if self.guide is not None and self.hparams.latent_dim:
            self._fit_class_regions(dm.train_eval_dataloader())

    def refit_due(self) -> bool:
        """The noise prior is refitted every epoch when there is an encoder."""
        return self.encoder is not None

    def refit_statistics(self, loader: Iterable[FlowBatch]) -> None:
        self.fit_noise_prior(loader)

    @torch.no_grad()
    def fit_noise_prior(self, loader: Iterable[FlowBatch]) -> None:
        """Refit the noise prior (`ClassNoisePrior.fit`) to the encoder's posteriors of the
        flows in `loader` (unconditional: one Gaussian over all of them)."""
        assert self.noise_prior is not None and self.encoder is not None  # refitted only with an encoder (refit_due)
        names = prior_classes(self.conditional, self.hparams.num_classes)[1] or self.class_names
        self.noise_prior.fit(self.encoder, loader if self.conditional else pooled(loader), names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the noise generator and migrate older checkpoints: the noise prior's
        top-level buffers (`LEGACY_PRIOR_KEYS`) move into `noise_prior`; checkpoints saved
        before the fitted noise prior existed load with N(0, I) (no class fitted)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for old, new in LEGACY_PRIOR_KEYS.items():
            if old in state:
                state[new] = state.pop(old)
        if self.noise_prior is not None:
            for name, value in self.noise_prior.state_dict(prefix="noise_prior.").items():
                state.setdefault(name, value.clone())

    @torch.no_grad()
    def _fit_class_regions(self, loader: Iterable[FlowBatch]) -> None:
        """Class centroids `mu (K, D)` and spreads `sigma (K, D)` of the guide's latents
        (and, when latent-conditioned, the bank of real latents per class)."""
        assert self.guide is not None  # fitted only with a guide (on_fit_start)
        bank = getattr(self, "class_bank", None)
        if bank is not None:
            self.class_bank_n.zero_()
        sums = guide_latent_sums(self.guide, loader, self.hparams.num_classes, self.device,
                                 on_latents=(lambda z, y: fill_bank(bank, self.class_bank_n, z, y))
                                 if bank is not None else None)
        mu, sigma = class_regions(sums, self.class_names, type(self).__name__)
        self.class_mu.copy_(mu)
        self.class_sigma.copy_(sigma)

    # -- generation -----------------------------------------------------------------------
    def _noise(self, b: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(b, self.hparams.noise_dim, generator=generator, device=self.device)  # (B, Z)

    def _prior_noise(self, labels: torch.Tensor, generator: torch.Generator, prior: NoisePriorName) -> torch.Tensor:
        """Sampling noise `(B, Z)` for `labels (B,)`: N(0, I), or the fitted class Gaussian
        (`ClassNoisePrior.draw`; with no encoder, N(0, I))."""
        check_noise_prior(prior)
        eps = self._noise(len(labels), generator)  # (B, Z)
        if prior == "standard" or self.noise_prior is None:
            return eps
        names = prior_classes(self.conditional, self.hparams.num_classes)[1] or self.class_names
        return self.noise_prior.draw(prior_labels(labels, self.conditional), eps, names)

    def _class_latent(self, labels: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """A conditioning latent per label in the guide's latent space: `(B, D)`.

        A stored real latent of the class (`mu + scale * (z - mu)`), or, for a class without
        stored latents (never seen in training: warned), a draw from the class's diagonal
        Gaussian `mu + scale * sigma * eps`, which is that of all training flows
        (`tsda.generators.gan.conditioning.bank_latent`).
        """
        n = self.class_bank_n[labels]  # (B,)
        warn_sparse_classes(f"{type(self).__name__}.sample", sorted(set(labels[n == 0].tolist())), self.class_names,
                            "their conditioning latents are drawn from the Gaussian of all training flows' latents")
        return bank_latent(labels, self.class_mu, self.class_sigma, self.class_bank, self.class_bank_n, generator,
                           scale)

    @torch.no_grad()
    def sample(  # type: ignore[override]  # options are each family's own, passed through by the callers
        self, labels: torch.Tensor, generator: torch.Generator, *, latent_scale: float = 1.0,
        use_ema: bool = True, prior: NoisePriorName = "fitted",
    ) -> FlowBatch:
        """Valid encoded flows `x (B, 3, L)` of classes `labels (B,)`.

        Options: `latent_scale` scales the spread of the conditioning latent draws
        (latent-conditioned models only); `use_ema=False` samples the raw generator;
        `prior` = `fitted` (cVAE-GAN: the class's fitted noise Gaussian, see the module
        docstring) or `standard` (N(0, I); what a plain cGAN always uses). An unconditional
        model ignores `labels` (returned as given: requests, not what the flows are).

        Raises:
            ValueError: `prior` is not one of `tsda.generators.gan.prior.NOISE_PRIORS`.
        """
        labels = labels.to(self.device)
        net = self.generator_ema.module if use_ema else self.generator
        was_training = net.training
        net.eval()
        latent = self._class_latent(labels, generator, latent_scale) if self.hparams.latent_conditioning else None
        x = net(self._prior_noise(labels, generator, prior), labels, latent)  # (B, 3, L), hard direction and mask
        net.train(was_training)
        return self.codec.snap(x).replace(labels=labels)

    @property
    def can_vary(self) -> bool:
        """A cVAE-GAN can vary flows (`vary`); a plain cGAN has no encoder into its noise."""
        return self.encoder is not None

    @torch.no_grad()
    def vary(self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator, *,  # type: ignore[override]  # options are each family's own, as sample's
             latent_scale: float = 1.0, use_ema: bool = True, prior: NoisePriorName = "fitted") -> FlowBatch:
        """Each flow of `batch` (`x (B, 3, L)`) varied through the cVAE-GAN's noise space
        (`tsda.generators.variation.cvae_vary`: s = 0 the flow, 1 a fresh sample of its class,
        continuous between), conditioned (if latent-conditioned) on the guide's latent of
        the flow itself, else on a class latent as in `sample`. Options as in `sample`. A
        plain cGAN raises `TsdaError`: it has no encoder to find a flow's noise."""
        if (encoder := self.encoder) is None:
            raise self.cannot_vary("it needs an encoder to find a flow's noise (a cVAE-GAN, model.w_recon > 0)")
        net = self.generator_ema.module if use_ema else self.generator

        def vary(data: FlowBatch, s: torch.Tensor) -> torch.Tensor:
            latent = (self._conditioning(data) if self.guide is not None or not self.hparams.latent_conditioning
                      else self._class_latent(data.labels, generator, latent_scale))  # (B, D) or None
            return cvae_vary(lambda z: net(z, data.labels, latent), lambda x: encoder(x, data.labels)[0],
                             data.x, s, self._prior_noise(data.labels, generator, prior))

        return run_variation(self, batch, strength, vary)

    # -- training -------------------------------------------------------------------------
    def _conditioning(self, batch: FlowBatch) -> torch.Tensor | None:
        """`(B, D)` the guide's latents of the real flows, when latent-conditioned."""
        if not self.hparams.latent_conditioning:
            return None
        assert self.guide is not None  # latent conditioning trains, and varies flows, with its guide
        with torch.no_grad():
            return self.guide.encode(batch.x)

    def guidance_losses(
        self, fake: torch.Tensor, labels: torch.Tensor, latent: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The guide's loss terms on generated `fake (B, 3, L)`: `class` and `latent`."""
        out: dict[str, torch.Tensor] = {}
        guide = self.guide
        if guide is None:
            return out
        z = guide.encode(fake)  # (B, D)
        logits = guide.head(z)  # (B, K)
        out["class"] = losses.class_loss(logits, labels)
        out["guide_acc"] = (logits.argmax(1) == labels).float().mean().detach()
        sigma = self.class_sigma[labels]  # (B, D)
        if latent is not None:
            out["latent"] = losses.latent_pull(z, latent, sigma)
        else:
            out["latent"] = losses.latent_region(z, self.class_mu[labels], sigma)
        return out

    def reconstruction_losses(
        self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The cVAE-GAN terms on real flows: `recon` (L1 of the soft reconstruction, mean over
        channels and positions) and `kl` (to N(0, I), mean over noise dimensions)."""
        assert self.encoder is not None  # called only with an encoder (_g_step)
        mu, logvar = self.encoder(batch.x, batch.labels)  # 2 x (B, Z)
        eps = torch.randn(mu.shape, generator=g, device=self.device)  # (B, Z)
        noise = mu + torch.exp(0.5 * logvar) * eps  # (B, Z)
        rec = self.generator(noise, batch.labels, latent, straight_through=False)  # (B, 3, L)
        return {"recon": losses.reconstruction_l1(rec, batch.x), "kl": losses.gaussian_kl(mu, logvar)}

    def _d_step(self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generator(self._noise(len(batch), g), batch.labels, latent)  # (B, 3, L)
        real = batch.x.detach().requires_grad_(self.hparams.r1_gamma > 0)
        d_real = self.discriminator(real, batch.labels, latent)  # (B,)
        d_fake = self.discriminator(fake, batch.labels, latent)  # (B,)
        loss = losses.hinge_d_loss(d_real, d_fake)
        if self.hparams.r1_gamma > 0:
            loss = loss + 0.5 * self.hparams.r1_gamma * losses.r1_penalty(d_real, real)
        return {"loss_d": loss, "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}

    def _g_step(self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator) -> dict[str, torch.Tensor]:
        h = self.hparams
        fake = self.generator(self._noise(len(batch), g), batch.labels, latent)  # (B, 3, L)
        loss = losses.hinge_g_loss(self.discriminator(fake, batch.labels, latent))
        out = {"loss_adv": loss.detach()}
        if self.encoder is not None:
            terms = self.reconstruction_losses(batch, latent, g)
            loss = loss + h.w_recon * terms["recon"] + h.w_kl * terms["kl"]
            out.update({k: v.detach() for k, v in terms.items()})
        if self.guided:
            terms = self.guidance_losses(fake, batch.labels, latent)
            loss = loss + h.w_class * terms["class"] + h.w_latent * terms["latent"]
            out.update({f"{k}": v.detach() for k, v in terms.items()})
        out["loss_g"] = loss
        return out

    def training_step(self, batch: FlowBatch, batch_idx: int) -> None:
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)  # configure_optimizers returns two
        opt_g, opt_d = optimizers
        g = self.run_generator  # the training noise's seeded generator
        latent = self._conditioning(batch)
        # 1. discriminator step(s)
        self.toggle_optimizer(opt_d)
        for _ in range(self.hparams.n_critic):
            d = self._d_step(batch, latent, g)
            opt_d.zero_grad()
            self.manual_backward(d["loss_d"])
            opt_d.step()
        self.untoggle_optimizer(opt_d)
        # 2. generator step
        self.toggle_optimizer(opt_g)
        gen = self._g_step(batch, latent, g)
        opt_g.zero_grad()
        self.manual_backward(gen["loss_g"])
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        # 3. EMA of the generator's weights
        self.generator_ema.update_parameters(self.generator)
        logged = {**d, **gen}
        self.log_dict({f"train_{k}": v.detach() for k, v in logged.items()}, on_step=False, on_epoch=True,
                      prog_bar=False, batch_size=len(batch))

    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        """Discriminator scores of real vs EMA-generated validation flows (and the guide's
        accuracy on them): a cheap health check; fidelity metrics are `FidelityCallback`'s."""
        g = seeded_generator(int(self.hparams.seed) + batch_idx, self.device)
        fake = self.sample(batch.labels, g)
        latent = self._conditioning(batch)
        d_real = self.discriminator(batch.x, batch.labels, latent).mean()
        d_fake = self.discriminator(fake.x, batch.labels, latent).mean()
        self.log("val_d_gap", d_real - d_fake, batch_size=len(batch), prog_bar=True)
        guide = self.guide
        if guide is not None:
            acc = (guide.head(guide.encode(fake.x)).argmax(1) == batch.labels).float().mean()
            self.log("val_guide_acc", acc, batch_size=len(batch), prog_bar=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        h = self.hparams
        beta1, beta2 = (float(b) for b in h.betas)
        params = [*self.generator.parameters(), *(self.encoder.parameters() if self.encoder is not None else [])]
        opt_g = torch.optim.Adam(params, lr=h.lr_g, betas=(beta1, beta2))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=h.lr_d, betas=(beta1, beta2))
        return [opt_g, opt_d]
