"""`GANModule`: a class-conditional GAN for flows, optionally guided by a frozen classifier.

Training follows Lightning's GAN example (manual optimisation: `toggle_optimizer`,
`manual_backward`), with the hinge loss, a projection discriminator with spectral norm
(`tsda.nets.gan`), an optional R1 gradient penalty and an exponential moving average (EMA)
of the generator's weights, which is what `sample` uses.

Latent guidance (the research's second agenda item) comes from a frozen, pretrained
`ClassifierModule` checkpoint (`classifier_ckpt`), the classifier whose latent space the
synthetic flows should populate. The generator loss adds:

(a) `w_class` x cross-entropy of the classifier on generated flows vs the conditioned class;
(b) `w_latent` x a pull of `encode(x_gen) (B, D)` towards
    * the conditioning latent, when `latent_conditioning` (the generator then also takes a
      latent `(B, D)`: during training the classifier's latent of a real flow of the same
      class, when sampling one of up to `LATENT_BANK` stored real latents of the class, so
      sampling sees the same conditioning distribution as training), as the squared
      distance scaled by the class's spread: `mean_d ((e_d - z_d) / sigma_{y,d})^2`;
    * otherwise the class's region, centroid plus spread: the hinge
      `relu(mean_d ((e_d - mu_{y,d}) / sigma_{y,d})^2 - 1)`, zero inside one standard
      deviation on average, so the generator is not collapsed onto the centroid.

Class centroids `mu (K, D)` and spreads `sigma (K, D)` are computed from the training data
at fit start and stored as buffers (with the per-class bank of real latents when
latent-conditioned), so a checkpoint can sample without the classifier.
Zero weights and no latent conditioning give the plain cGAN.

Coverage (`w_recon > 0`, the cVAE-GAN of `tsda.nets.gan`): an encoder maps each real flow
to a Gaussian over the generator's noise; the generator adds `w_recon` x the L1 distance
between the real flow and its reconstruction from a draw of that Gaussian (soft outputs, so
presence and direction get smooth gradients) and `w_kl` x the KL divergence to N(0, I)
(mean per noise dimension). Without it, the adversarial loss alone lets the generator cover
a few modes per class (on FG-Net D1 the plain cGAN's latent coverage was 0.11 and its TSTR
weighted F1 0.05).

The KL term does not make the encoder's codes of class k fill N(0, I): they occupy a
class-specific region, and prior draws outside it decode to flows of no class in particular.
So, as in ex-post density estimation (Ghosh et al. 2020), the module fits a full-covariance
Gaussian per class to the posteriors of the training flows (`noise_mean (K, Z)`,
`noise_chol (K, Z, Z)`: the codes' mean and covariance plus the mean posterior variance),
after every training epoch and before validation, and `sample` draws the noise from it
(`prior="fitted"`, the default; `prior="standard"` draws from N(0, I)). On FG-Net D1 this
raised TSTR weighted F1 from 0.277 to 0.287 (unguided) and from 0.245 to 0.381
(latent-conditioned) at the same checkpoints (experiments/cgan/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from tsda.data.batch import FlowBatch
from tsda.lit import check_class_names
from tsda.lit.classifier import ClassifierModule
from tsda.lit.ema import ema_of
from tsda.lit.generative import GenerativeModule
from tsda.lit.rng import RunGenerator
from tsda.nets.gan import FlowDiscriminator, FlowEncoder, FlowGenerator

#: real training latents kept per class for latent-conditioned sampling
LATENT_BANK = 128


class GANModule(GenerativeModule):
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
        ema_decay: decay of the generator's EMA (`tsda.lit.ema`: ramped up over the first steps).
        classifier_ckpt: a trained `ClassifierModule` checkpoint that guides the generator
            (frozen); needed when `w_class`, `w_latent` or `latent_conditioning` is set.
        w_class: weight of the classifier's cross-entropy on generated flows.
        w_latent: weight of the latent pull (see the module docstring).
        latent_conditioning: condition generator and discriminator on a classifier latent.
        latent_dim: D of the classifier's latent; set from `classifier_ckpt` (0 = none).
        w_recon: weight of the cVAE-GAN reconstruction loss (0 = no encoder: a plain cGAN).
        w_kl: weight of the encoder's KL divergence to the N(0, I) noise prior.
        seed: seeds the training noise generator (the CLI links `seed_everything`).
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        n_packets: int = 20,
        mtu: float = 1460.0,
        iat_unit: float = 1e-3,
        iat_max: float = 10.0,
        noise_dim: int = 64,
        width: int = 64,
        depth: int = 3,
        disc_width: int = 64,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
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
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_class_names(class_names, num_classes)
        for name, value in (("w_class", w_class), ("w_latent", w_latent), ("r1_gamma", r1_gamma),
                            ("w_recon", w_recon), ("w_kl", w_kl)):
            if value < 0:
                raise ValueError(f"model.{name} must be >= 0, got {value}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        if n_critic < 1:
            raise ValueError(f"model.n_critic must be >= 1, got {n_critic}")
        self.automatic_optimization = False
        guide = ClassifierModule.load_frozen(classifier_ckpt, num_classes) if classifier_ckpt else None
        if guide is not None:
            if latent_dim not in (0, guide.net.latent_dim):
                raise ValueError(f"model.latent_dim={latent_dim} but the classifier's latent has "
                                 f"{guide.net.latent_dim} dimensions")
            latent_dim = guide.net.latent_dim
        if latent_conditioning and latent_dim == 0:
            raise ValueError("model.latent_conditioning needs model.classifier_ckpt (or latent_dim)")
        self.save_hyperparameters()
        self.hparams["latent_dim"] = latent_dim
        object.__setattr__(self, "_guide", guide)  # frozen, not a submodule: not in the checkpoint
        cond_dim = latent_dim if latent_conditioning else 0
        self.generator = FlowGenerator(num_classes, n_packets, noise_dim, width, depth, latent_dim=cond_dim)
        self.discriminator = FlowDiscriminator(num_classes, disc_width, latent_dim=cond_dim)
        self.generator_ema = ema_of(self.generator, ema_decay, ramp=True)
        self.encoder = FlowEncoder(num_classes, noise_dim, disc_width) if w_recon > 0 else None
        if self.encoder is not None:
            self.register_buffer("noise_mean", torch.zeros(num_classes, noise_dim))  # (K, Z)
            self.register_buffer("noise_chol", torch.eye(noise_dim).repeat(num_classes, 1, 1))  # (K, Z, Z)
            self.register_buffer("noise_prior_n", torch.zeros(num_classes, dtype=torch.long))  # (K,)
        self._prior_step = -1
        if latent_dim:
            self.register_buffer("class_mu", torch.zeros(num_classes, latent_dim))  # (K, D)
            self.register_buffer("class_sigma", torch.ones(num_classes, latent_dim))  # (K, D)
        if latent_conditioning:
            self.register_buffer("class_bank", torch.zeros(num_classes, LATENT_BANK, latent_dim))  # (K, M, D)
            self.register_buffer("class_bank_n", torch.zeros(num_classes, dtype=torch.long))  # (K,)
        self._rng = RunGenerator(seed, "noise")

    # -- the frozen guide ------------------------------------------------------------------
    @classmethod
    def load_overrides(cls) -> dict[str, Any]:
        return {"classifier_ckpt": None}

    @property
    def guide(self) -> Any:
        """The frozen ClassifierModule (or None), on the module's device."""
        guide = self.__dict__.get("_guide")
        if guide is not None and guide.device != self.device:
            guide.to(self.device)
        return guide

    @property
    def guided(self) -> bool:
        h = self.hparams
        return h.w_class > 0 or h.w_latent > 0 or bool(h.latent_conditioning)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        dm = getattr(self.trainer, "datamodule", None)
        if self.guided and self.guide is None:
            raise ValueError("model.w_class, model.w_latent and model.latent_conditioning need "
                             "model.classifier_ckpt")
        if self.guide is not None and self.hparams.latent_dim:
            self._fit_class_regions(dm.train_eval_dataloader())

    def on_train_epoch_end(self) -> None:
        self._refresh_noise_prior()

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._refresh_noise_prior()

    def _refresh_noise_prior(self) -> None:
        """Refit the noise prior on the training split, once per training step count."""
        dm = getattr(self.trainer, "datamodule", None)
        if self.encoder is None or dm is None or self._prior_step == self.global_step:
            return
        self.fit_noise_prior(dm.train_eval_dataloader())
        self._prior_step = self.global_step

    @torch.no_grad()
    def fit_noise_prior(self, loader: Any) -> None:
        """Per class, a Gaussian over the generator's noise fitted to the encoder's posteriors
        of the flows in `loader`: mean and covariance of the posterior means plus the mean
        posterior variance, stored as `noise_mean (K, Z)` and its Cholesky factor
        `noise_chol (K, Z, Z)`. Classes with fewer than 2 flows keep N(0, I)."""
        z = self.hparams.noise_dim
        was_training = self.encoder.training
        self.encoder.eval()

        def codes(batch: FlowBatch) -> dict[str, torch.Tensor]:
            mu, logvar = self.encoder(batch.x, batch.labels)  # 2 x (B, Z)
            return {"mu": mu, "outer": mu[:, :, None] * mu[:, None, :], "var": logvar.exp()}

        n, sums = self._class_sums(loader, codes)
        self.encoder.train(was_training)
        fitted = n >= 2  # (K,)
        m = n.clamp_min(1)[:, None]
        mean = sums["mu"] / m  # (K, Z)
        eye = torch.eye(z, dtype=torch.float64, device=self.device)
        cov = (sums["outer"] / m[:, :, None] - mean[:, :, None] * mean[:, None, :]
               + torch.diag_embed(sums["var"] / m) + 1e-4 * eye)  # (K, Z, Z)
        chol, info = torch.linalg.cholesky_ex(cov)  # (K, Z, Z)
        fitted &= info == 0
        self.noise_mean.copy_(torch.where(fitted[:, None], mean, 0.0).float())
        self.noise_chol.copy_(torch.where(fitted[:, None, None], chol, eye).float())
        self.noise_prior_n.copy_(torch.where(fitted, n, 0.0).long())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        self._rng.save_to(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the noise generator; checkpoints saved before the fitted noise prior
        existed load with N(0, I)."""
        self._rng.load_from(checkpoint)
        state = checkpoint.get("state_dict", {})
        for name in ("noise_mean", "noise_chol", "noise_prior_n"):
            if hasattr(self, name) and name not in state:
                state[name] = getattr(self, name).clone()

    @torch.no_grad()
    def _fit_class_regions(self, loader: Any) -> None:
        """Class centroids `mu (K, D)` and spreads `sigma (K, D)` of the guide's latents."""
        bank = getattr(self, "class_bank", None)
        if bank is not None:
            self.class_bank_n.zero_()

        def latents(batch: FlowBatch) -> dict[str, torch.Tensor]:
            z = self.guide.encode(batch.x)  # (B, D)
            if bank is not None:
                self._fill_bank(z, batch.labels)
            return {"z": z, "z2": z * z}

        n, sums = self._class_sums(loader, latents)
        s1, s2 = sums["z"], sums["z2"]  # (K, D) each
        total = n.sum().clamp_min(1)
        g_mu, g_var = s1.sum(0) / total, s2.sum(0) / total - (s1.sum(0) / total) ** 2  # (D,)
        seen = (n > 1)[:, None]
        mu = torch.where(seen, s1 / n.clamp_min(1)[:, None], g_mu)
        var = torch.where(seen, s2 / n.clamp_min(1)[:, None] - mu**2, g_var)
        self.class_mu.copy_(mu)
        self.class_sigma.copy_(var.clamp_min(1e-8).sqrt().clamp_min(1e-3))

    @torch.no_grad()
    def _class_sums(
        self, loader: Iterable[FlowBatch], values: Callable[[FlowBatch], dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-class flow counts `n (K,)` and sums `{name: (K, ...)}` (float64) over the
        loader's batches of what `values(batch) -> {name: (B, ...)}` computes."""
        k = self.hparams.num_classes
        n = torch.zeros(k, dtype=torch.float64, device=self.device)
        sums: dict[str, torch.Tensor] = {}
        for batch in loader:
            batch = batch.to(self.device)
            n.index_add_(0, batch.labels, torch.ones_like(batch.labels, dtype=n.dtype))
            for name, v in values(batch).items():
                v = v.double()
                if name not in sums:
                    sums[name] = torch.zeros(k, *v.shape[1:], dtype=torch.float64, device=self.device)
                sums[name].index_add_(0, batch.labels, v)
        return n, sums

    @torch.no_grad()
    def _fill_bank(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Append latents `z (B, D)` of `labels (B,)` to their classes' banks while room is left."""
        for k in labels.unique().tolist():
            free = LATENT_BANK - int(self.class_bank_n[k])
            rows = z[labels == k][:free]  # (<= free, D)
            n = int(self.class_bank_n[k])
            self.class_bank[k, n : n + len(rows)] = rows
            self.class_bank_n[k] += len(rows)

    # -- generation -----------------------------------------------------------------------
    def _noise(self, b: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(b, self.hparams.noise_dim, generator=generator, device=self.device)  # (B, Z)

    def _prior_noise(self, labels: torch.Tensor, generator: torch.Generator, prior: str) -> torch.Tensor:
        """Sampling noise `(B, Z)` for `labels (B,)`: N(0, I), or the fitted class Gaussian
        `mean_y + chol_y @ eps` (a class not fitted yet keeps N(0, I))."""
        if prior not in ("fitted", "standard"):
            raise ValueError(f"prior must be 'fitted' or 'standard', got {prior!r}")
        eps = self._noise(len(labels), generator)  # (B, Z)
        if prior == "standard" or self.encoder is None:
            return eps
        return self.noise_mean[labels] + torch.einsum("bij,bj->bi", self.noise_chol[labels], eps)

    def _class_latent(self, labels: torch.Tensor, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """A conditioning latent per label in the guide's latent space: `(B, D)`.

        A stored real latent of the class (`mu + scale * (z - mu)`), or, for a class without
        stored latents, a draw from the class's diagonal Gaussian `mu + scale * sigma * eps`.
        """
        mu = self.class_mu[labels]  # (B, D)
        eps = torch.randn(len(labels), self.hparams.latent_dim, generator=generator, device=self.device)
        gauss = mu + scale * self.class_sigma[labels] * eps  # (B, D)
        n = self.class_bank_n[labels]  # (B,)
        u = torch.rand(len(labels), generator=generator, device=self.device)  # (B,)
        idx = (u * n).long().clamp_max(LATENT_BANK - 1)  # (B,) uniform in [0, n_k)
        stored = mu + scale * (self.class_bank[labels, idx] - mu)  # (B, D)
        return torch.where((n > 0)[:, None], stored, gauss)

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator, *, latent_scale: float = 1.0,
        use_ema: bool = True, prior: str = "fitted",
    ) -> FlowBatch:
        """Valid encoded flows `x (B, 3, L)` of classes `labels (B,)`.

        Options: `latent_scale` scales the spread of the conditioning latent draws
        (latent-conditioned models only); `use_ema=False` samples the raw generator;
        `prior` = `fitted` (cVAE-GAN: the class's fitted noise Gaussian, see the module
        docstring) or `standard` (N(0, I); what a plain cGAN always uses).
        """
        labels = labels.to(self.device)
        net = self.generator_ema.module if use_ema else self.generator
        was_training = net.training
        net.eval()
        latent = self._class_latent(labels, generator, latent_scale) if self.hparams.latent_conditioning else None
        x = net(self._prior_noise(labels, generator, prior), labels, latent)  # (B, 3, L), hard direction and mask
        net.train(was_training)
        return self.codec.snap(x).replace(labels=labels)

    # -- training -------------------------------------------------------------------------
    def noise_generator(self) -> torch.Generator:
        """The seeded generator of the training noise (its state is checkpointed)."""
        return self._rng.get(self.device, self.global_rank)

    def _conditioning(self, batch: FlowBatch) -> torch.Tensor | None:
        """`(B, D)` the guide's latents of the real flows, when latent-conditioned."""
        if not self.hparams.latent_conditioning:
            return None
        with torch.no_grad():
            return self.guide.encode(batch.x)

    def guidance_losses(
        self, fake: torch.Tensor, labels: torch.Tensor, latent: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The guide's loss terms on generated `fake (B, 3, L)`: `class` and `latent`."""
        out: dict[str, torch.Tensor] = {}
        if self.guide is None:
            return out
        z = self.guide.encode(fake)  # (B, D)
        logits = self.guide.net.head(z)  # (B, K)
        out["class"] = F.cross_entropy(logits, labels)
        out["guide_acc"] = (logits.argmax(1) == labels).float().mean().detach()
        sigma = self.class_sigma[labels]  # (B, D)
        if latent is not None:
            out["latent"] = (((z - latent) / sigma) ** 2).mean()
        else:
            d2 = (((z - self.class_mu[labels]) / sigma) ** 2).mean(dim=1)  # (B,)
            out["latent"] = F.relu(d2 - 1.0).mean()
        return out

    def reconstruction_losses(
        self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The cVAE-GAN terms on real flows: `recon` (L1 of the soft reconstruction, mean over
        channels and positions) and `kl` (to N(0, I), mean over noise dimensions)."""
        mu, logvar = self.encoder(batch.x, batch.labels)  # 2 x (B, Z)
        eps = torch.randn(mu.shape, generator=g, device=self.device)  # (B, Z)
        noise = mu + torch.exp(0.5 * logvar) * eps  # (B, Z)
        rec = self.generator(noise, batch.labels, latent, straight_through=False)  # (B, 3, L)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return {"recon": (rec - batch.x).abs().mean(), "kl": kl}

    def _d_step(self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generator(self._noise(len(batch), g), batch.labels, latent)  # (B, 3, L)
        real = batch.x.detach().requires_grad_(self.hparams.r1_gamma > 0)
        d_real = self.discriminator(real, batch.labels, latent)  # (B,)
        d_fake = self.discriminator(fake, batch.labels, latent)  # (B,)
        loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        if self.hparams.r1_gamma > 0:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            loss = loss + 0.5 * self.hparams.r1_gamma * grad.pow(2).sum(dim=(1, 2)).mean()
        return {"loss_d": loss, "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}

    def _g_step(self, batch: FlowBatch, latent: torch.Tensor | None, g: torch.Generator) -> dict[str, torch.Tensor]:
        h = self.hparams
        fake = self.generator(self._noise(len(batch), g), batch.labels, latent)  # (B, 3, L)
        loss = -self.discriminator(fake, batch.labels, latent).mean()
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
        opt_g, opt_d = self.optimizers()
        g = self.noise_generator()
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
        g = torch.Generator(device=self.device).manual_seed(int(self.hparams.seed) + batch_idx)
        fake = self.sample(batch.labels, g)
        latent = self._conditioning(batch)
        d_real = self.discriminator(batch.x, batch.labels, latent).mean()
        d_fake = self.discriminator(fake.x, batch.labels, latent).mean()
        self.log("val_d_gap", d_real - d_fake, batch_size=len(batch), prog_bar=True)
        if self.guide is not None:
            acc = (self.guide(fake.x).argmax(1) == batch.labels).float().mean()
            self.log("val_guide_acc", acc, batch_size=len(batch), prog_bar=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        h = self.hparams
        betas = tuple(float(b) for b in h.betas)
        params = [*self.generator.parameters(), *(self.encoder.parameters() if self.encoder is not None else [])]
        opt_g = torch.optim.Adam(params, lr=h.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=h.lr_d, betas=betas)
        return [opt_g, opt_d]
