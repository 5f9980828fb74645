"""`JointModule`: a traffic classifier and a generator trained together, end to end.

A joint checkpoint is both contracts at once, so the module is both classes: a
`ClassifierModule` (the same nets, `net.*` state-dict keys and hparams, metrics,
validation/test steps, test latents, `run_metrics`: `tsda test --ckpt` loads its
classifier, `metrics.json` has the classifier's keys, checkpointing and early stopping
follow validation weighted F1) and a `GenerativeModule` (`sample`, `class_names`, `codec`:
`tsda sample --ckpt`, `tsda evaluate` and `GeneratorAugmentation` take it). Lightning's
Trainer runs it, with manual optimisation and one Adam optimiser per part: classifier
(`lr`, `weight_decay`), generator (`lr_g`, `betas`) and, for the cGAN, critic (`lr_d`).

Each training step, with `e = encode(x_gen)`, `h = head(e)` in the co-trained classifier
(eval mode: running BatchNorm statistics, its weights not updated by this step):

1. critic (the cGAN's, from the generator warm-up on; `n_critic` times): hinge loss [+ R1].
2. generator: its own objective (the cGAN: hinge `-mean D(x_gen)` [+ `w_recon` L1 + `w_kl`
   KL of the cVAE-GAN]; diffusion: the denoising MSE, `x_gen` its one-step prediction) plus
   the latent objectives (`tsda.joint.objectives`): `w_class` CE(h, y) + `w_band` band(h, y)
   + `w_latent` region(e, mu_y, sigma_y) + `w_diversity` diversity(e, noise, y, sigma_y).
   `mu, sigma (K, D)` are the class regions of the
   classifier's current eval-mode latents of real training flows, updated before every
   generator step (`tsda.generators.regions.MovingClassRegions`, memory `region_decay`).
3. classifier: the cross-entropy of real flows and, in the joint phase, generated flows of
   the same classes (EMA generator, no gradient) under the policy `double` (B real + B
   generated) or `replace` (each flow replaced with probability `augment_p`), weighted:
   `sum_i w_i CE_i / sum_i w_i` with `w_i = 1` on real rows and `w(t)` (the ramp of
   `tsda.joint.schedule`) on generated ones; with `w_generated = 1` after the ramp this
   is `ClassifierModule`'s loss with the generator as its augmentation; with 0 it is exactly
   the unaugmented classifier. [+ `w_supcon` x SupCon of the latents of real, generated and
   `view_augmentation`ed views (the views enter no cross-entropy).]

Schedule (`tsda.joint.schedule`): `classifier_warmup_epochs`, then
`generator_warmup_epochs`, then joint, the generated weight ramped over
`generated_rampup_epochs`. Stability measures, and why:

- Classifier warm-up: the latent objectives need a latent space with class regions.
- Generator warm-up, then a ramp: an early generator's flows are label noise to the forming
  latent space (measured: `experiments/generative/RESULTS.md`).
- The generator is scored by the classifier in eval mode: generated batches never enter the
  BatchNorm running statistics and cannot game per-batch statistics.
- The classifier trains on the EMA generator's flows without gradient into the generator:
  the classifier's own loss never moves the generator towards flows that are easy for it.
  The generator's class term does reward flows the classifier recognises; against that
  pull onto a class's easiest flows stand the discriminator (the flows must look real) and
  the diversity term (same-class flows as spread as real ones), and the band (`w_band`),
  which rewards flows the classifier finds hard but still of their class.
- Class regions follow the classifier step by step (`tsda.generators.regions`), and the latent terms are measured in units of
  the class spread `sigma`, so the weights keep their meaning while the latent space grows
  or shrinks.

`sample` draws from the EMA generator, `vary` varies given flows (the cVAE-GAN through its
encoder, diffusion by SDEdit); a checkpoint saved before the generator ever trained warns.
All randomness comes from the
run's seeded generator (`augmentation_generator`, checkpointed): resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from tsda.augment.base import Augmentation, Family, select
from tsda.classifier.module import ClassifierModule, Policy
from tsda.classifier.nets import BackboneName
from tsda.data.batch import FlowBatch
from tsda.generators.base import GenerativeModule, prepare_augmentation
from tsda.generators.gan import losses
from tsda.generators.regions import MovingClassRegions
from tsda.generators.variation import run_variation
from tsda.joint.generators import GeneratedName, GeneratorName, build_joint_generator, check_generator_options
from tsda.joint.objectives import check_band, latent_objectives
from tsda.joint.part import JointGenerator
from tsda.joint.schedule import JointSchedule, Phase, RampName
from tsda.seeds import seeded_generator


class CoTrainedGenerator(Augmentation):
    """The module's own generator behind the augmentation protocol (`JointModule.augmentation`):
    a flow of the same class per flow. What `tsda.callbacks.LatentPlotCallback` overlays on the
    joint classifier's test latents."""

    family: ClassVar[Family] = "generator"
    alters: ClassVar[dict[str, float]] = {"size": 1.0, "direction": 1.0, "iat": 1.0}

    def __init__(self, module: JointModule) -> None:
        self._module = module

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        return self._module.sample(batch.labels, generator).to(batch.device)


class JointModule(ClassifierModule, GenerativeModule):
    """Classifier and generator over `FlowBatch(x (B, 3, L), lengths, labels)`, trained
    together (see the module docstring for the losses of a step and the schedule).

    Args:
        num_classes, class_names: K and its names (linked from the datamodule by the CLI).
        backbone, backbone_kwargs, lr, weight_decay, policy, augment_p, label_smoothing, latent_points, seed:
            the classifier's, as `ClassifierModule`'s (the generator is its augmentation:
            `policy`, `augment_p`); `seed` seeds every draw of the run.
        n_packets, mtu, iat_unit, iat_max: the `FlowCodec` settings of the training data
            (checked against the datamodule's codec at fit start).
        generator: `cgan` (`tsda.joint.gan.JointGAN`, the cVAE-GAN) or `diffusion`
            (`tsda.joint.diffusion.JointDiffusion`).
        generator_kwargs: its arguments (the cGAN: `noise_dim`, `width`, `depth`, `disc_width`,
            `r1_gamma`, `w_recon`, `w_kl`, `ema_decay`; diffusion: see `JointDiffusion`).
        lr_g, lr_d, betas: Adam settings of the generator (with its encoder) and critic.
        n_critic: critic steps per generator step (`lr_d`, `n_critic`: the cGAN's only).
        generator_every: the generator (and critic) train on every n-th classifier step only.
        generated: the classifier's generated share: `sample` (flows of the batch's classes)
            or `vary` (the batch's own flows varied by the generator at `vary_strength`: a
            number, or `[start, end]` along the ramp of the generated weight).
        w_class: weight of the classifier's cross-entropy of generated flows `(B, K)` logits.
        w_band, band: weight of the probability band `(low, high)` on generated flows
            (`tsda.joint.objectives`: hard but still of their class).
        w_latent: weight of the pull of generated latents `(B, D)` into their class region.
        w_diversity: weight of the mode-seeking diversity hinge of same-class pairs.
        region_decay: weight the class regions' running sums keep at each generator step
            (in [0, 1); 0 = the real batch alone).
        w_generated: final weight of generated flows in the classifier's cross-entropy.
        classifier_warmup_epochs, generator_warmup_epochs: the schedule's phases (epochs).
        generated_rampup_epochs, generated_rampup: ramp-up of `w_generated` (epochs, `linear`
            or `sigmoid`).
        w_supcon: weight of the supervised-contrastive term on the classifier's latents
            (0 = off).
        supcon_temperature: its temperature (> 0).
        view_augmentation: hand-crafted augmentation whose views of the real batch join the
            contrastive term (not an hparam, like `ClassifierModule.augmentation`).

    Raises:
        ValueError: naming `model.<parameter>` for a negative weight, an unknown schedule or
            generator value, or bad generator arguments.
    """

    monitor: ClassVar[tuple[str, str] | None] = ("val_weighted_f1", "max")
    generator_steps: torch.Tensor  # () buffer: the generator's optimiser steps so far

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        backbone: BackboneName = "cnn_resblock",
        backbone_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        policy: Policy = "double",
        augment_p: float = 0.5,
        label_smoothing: float = 0.0,
        latent_points: int = 2000,
        n_packets: int = 20, mtu: float = 1460.0, iat_unit: float = 1e-3, iat_max: float = 10.0,
        generator: GeneratorName = "cgan",
        generator_kwargs: dict[str, Any] | None = None,
        lr_g: float = 1e-3, lr_d: float = 5e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        n_critic: int = 1,
        generator_every: int = 1,
        generated: GeneratedName = "sample",
        vary_strength: float | list[float] = 0.5,
        w_class: float = 0.1,
        w_band: float = 0.0,
        band: tuple[float, float] = (0.4, 0.8),
        w_latent: float = 0.1,
        w_diversity: float = 0.1,
        region_decay: float = 0.9,
        w_generated: float = 1.0,
        classifier_warmup_epochs: int = 2,
        generator_warmup_epochs: int = 2,
        generated_rampup_epochs: int = 2,
        generated_rampup: RampName = "linear",
        w_supcon: float = 0.0,
        supcon_temperature: float = 0.1,
        view_augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        for name, value in (("w_class", w_class), ("w_band", w_band), ("w_latent", w_latent),
                            ("w_diversity", w_diversity), ("w_supcon", w_supcon)):
            if not value >= 0:  # NaN too
                raise ValueError(f"model.{name} must be >= 0, got {value}")
        for name, value in (("lr", lr), ("lr_g", lr_g), ("lr_d", lr_d), ("supcon_temperature", supcon_temperature)):
            if not value > 0:
                raise ValueError(f"model.{name} must be > 0, got {value}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"model.betas must be two numbers in [0, 1), got {betas}")
        check_generator_options(generator, lr_d, n_critic, generated, vary_strength, generator_every)
        self._band = check_band(band)
        schedule = JointSchedule(classifier_warmup_epochs, generator_warmup_epochs, generated_rampup_epochs,
                                 generated_rampup, w_generated)
        super().__init__(num_classes=num_classes, class_names=class_names, backbone=backbone,
                         backbone_kwargs=backbone_kwargs, lr=lr, weight_decay=weight_decay, augmentation=None,
                         policy=policy, augment_p=augment_p, seed=seed, label_smoothing=label_smoothing,
                         latent_points=latent_points)
        self.save_hyperparameters(ignore=["view_augmentation"])
        self.automatic_optimization = False
        self.schedule = schedule
        self.part: JointGenerator = build_joint_generator(generator, num_classes, n_packets, self.class_names,
                                                          **(generator_kwargs or {}))
        if generated == "vary" and not self.part.can_vary:
            raise ValueError("model.generated vary needs a generator that can vary: diffusion, or the cgan with "
                             "model.generator_kwargs.w_recon > 0 (an encoder)")
        self.view_augmentation = view_augmentation
        #: the co-trained generator as an augmentation (the latent plot overlays its flows)
        self.augmentation = CoTrainedGenerator(self)
        #: class regions `mu, sigma (K, D)` of the classifier's current latent space
        self.regions = MovingClassRegions(num_classes, self.net.latent_dim, region_decay)
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self._warned_untrained = False

    # -- the schedule ------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        """What trains in the current epoch: `classifier`, `generator` or `joint`."""
        return self.schedule.phase(self.current_epoch)

    def step_schedule(self, batch_idx: int) -> tuple[float, float]:
        """The weight of generated flows in the classifier's loss and the variation strength
        (`generated="vary"`) at this training step."""
        batches = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
        at = (self.current_epoch, batch_idx / batches)
        return self.schedule.generated_weight(*at), self.schedule.vary_strength(self.hparams.vary_strength, *at)

    # -- fit hooks -----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Refuse other codec settings than the data's and data without a training-split
        pass (class regions, noise prior); give the view augmentation its run context."""
        GenerativeModule.on_fit_start(self)
        dm: Any = getattr(self.trainer, "datamodule", None)
        if not hasattr(dm, "train_eval_dataloader"):
            raise ValueError("JointModule needs a FlowDataModule (its train_eval_dataloader gives the class "
                             "regions and the noise prior)")
        if self.view_augmentation is not None:
            prepare_augmentation(self.view_augmentation, device=self.device, class_names=self.class_names,
                                 generator=self.augmentation_generator(), codec=dm.codec)

    def on_train_epoch_start(self) -> None:
        if self.view_augmentation is not None:
            for aug in self.view_augmentation.walk():
                aug.on_epoch_start(self.current_epoch, self.augmentation_generator())

    def track_class_regions(self, batch: FlowBatch) -> None:
        """Update the class regions to the classifier's current latents (`MovingClassRegions`;
        the first update passes over the training split; under DDP every rank's batch counts)."""
        trainer = self.trainer
        self.regions.update(self.net, batch, self.class_names, trainer.datamodule.train_eval_dataloader, trainer.strategy)  # type: ignore[attr-defined]  # set by Lightning, undeclared

    def refit_due(self) -> bool:
        """The generator's per-epoch statistics (noise prior) once it has trained."""
        return int(self.generator_steps) > 0

    def refit_statistics(self, loader: Iterable[FlowBatch]) -> None:
        self.part.refit(loader)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: FlowBatch, batch_idx: int) -> None:  # type: ignore[override]  # manual optimisation: nothing returned
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)  # configure_optimizers returns two or three
        opt_c, opt_g, *opt_d = optimizers
        g = self.augmentation_generator()
        logged: dict[str, torch.Tensor] = {}
        if self.phase != "classifier" and batch_idx % int(self.hparams.generator_every) == 0:
            if opt_d:
                logged.update(self._critic_step(batch, g, opt_d[0]))  # 1. critic
            logged.update(self._generator_step(batch, g, opt_g))  # 2. generator
        weight, strength = self.step_schedule(batch_idx)
        loss, terms = self._classifier_step(batch, g, opt_c, weight, strength)  # 3. classifier
        logged.update(terms, w_generated=torch.tensor(weight))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch))
        self.log_dict({f"train_{k}": v for k, v in logged.items()}, on_step=False, on_epoch=True, batch_size=len(batch))

    def _critic_step(self, batch: FlowBatch, g: torch.Generator, opt: Any) -> dict[str, torch.Tensor]:
        self.toggle_optimizer(opt)
        for _ in range(int(self.hparams.n_critic)):
            terms = self.part.critic_terms(batch, g)
            assert terms is not None  # a critic optimiser exists only for a part with a critic
            opt.zero_grad()
            self.manual_backward(terms["loss_d"])
            opt.step()
        self.untoggle_optimizer(opt)
        assert terms is not None  # as in the loop (n_critic >= 1)
        return {k: v.detach() for k, v in terms.items()}

    def _generator_step(self, batch: FlowBatch, g: torch.Generator, opt: Any) -> dict[str, torch.Tensor]:
        h = self.hparams
        latent_terms = h.w_class > 0 or h.w_band > 0 or h.w_latent > 0 or h.w_diversity > 0
        if latent_terms:
            self.track_class_regions(batch)
        self.toggle_optimizer(opt)  # the classifier's and critic's weights get no gradient
        out = self.part.generator_terms(batch, g)
        loss = out.loss
        logged = dict(out.logged)
        if latent_terms:
            latent = latent_objectives(self.net, self.regions.mu, self.regions.sigma, out.fake, batch.labels,
                                       out.noise, self._band)
            loss = loss + h.w_class * latent["class"] + h.w_band * latent["band"] + h.w_latent * latent["latent"] \
                + h.w_diversity * latent["diversity"]
            logged.update({k: v.detach() for k, v in latent.items()})
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.untoggle_optimizer(opt)
        self.part.after_generator_step()
        self.generator_steps += 1
        logged["loss_g"] = loss.detach()
        return logged

    @torch.no_grad()
    def classifier_batch(self, batch: FlowBatch, g: torch.Generator, weight: float, strength: float = 0.5
                         ) -> tuple[FlowBatch, torch.Tensor]:
        """The classifier's training rows and which of them are generated `(B',)` bool:
        `batch` alone while `weight` is 0, else the policy applied to generated flows
        (`double`: B' = 2B; `replace`: B' = B): of the batch's classes, or the batch's own
        flows varied at `strength` (`generated`)."""
        real = torch.zeros(len(batch), dtype=torch.bool, device=batch.device)  # (B,)
        if weight <= 0:
            return batch, real
        # the generated flows are data, not a training computation: in full precision, not under
        # the Trainer's bf16 autocast (as the generator augmentation draws them)
        with torch.autocast(device_type=batch.device.type, enabled=False):
            if self.hparams.generated == "vary":
                x = self.part.vary(batch.x, batch.labels, strength, g)  # (B, 3, L)
            else:
                x = self.part.training_flows(batch, g)  # (B, 3, L)
        fake = self.codec.snap(x).replace(labels=batch.labels)
        if self.hparams.policy == "double":
            return FlowBatch.cat([batch, fake], self.hparams.num_classes), torch.cat([real, ~real])
        chosen = torch.rand(len(batch), generator=g, device=batch.device) < self.hparams.augment_p  # (B,)
        return select(chosen, fake, batch), chosen

    def _classifier_step(self, batch: FlowBatch, g: torch.Generator, opt: Any, weight: float, strength: float
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        train, generated = self.classifier_batch(batch, g, weight, strength)
        views = None
        if h.w_supcon > 0 and self.view_augmentation is not None:
            with torch.no_grad():
                views = self.view_augmentation(batch, g)
        x = train.x if views is None else torch.cat([train.x, views.x])  # (N, 3, L)
        self.toggle_optimizer(opt)
        z = self.net.encode(x)  # (N, D)
        logits = self.net.head(z[: len(train)])  # (B', K)
        if weight > 0:  # generated rows (`replace` may pick none: the same mean); no `generated.any()` sync
            targets = train.labels if train.soft_labels is None else train.soft_labels
            rows = F.cross_entropy(logits, targets, reduction="none", label_smoothing=float(h.label_smoothing))
            w = torch.where(generated, torch.full_like(rows, weight), torch.ones_like(rows))  # (B',)
            ce = (w * rows).sum() / w.sum()
        else:
            ce = self.loss(logits, train)  # ClassifierModule's cross-entropy, literally
        loss, terms = ce, {"ce": ce.detach()}
        if h.w_supcon > 0:
            labels = train.labels if views is None else torch.cat([train.labels, views.labels])  # (N,)
            supcon = losses.supervised_contrastive(z, labels, float(h.supcon_temperature))
            loss = loss + h.w_supcon * supcon
            terms["supcon"] = supcon.detach()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.untoggle_optimizer(opt)
        return loss.detach(), terms

    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        """The classifier's validation metrics; once the generator trains, also the
        classifier's accuracy on EMA-generated flows of the first batch's classes
        (`val_generated_accuracy`, seeded apart from the run's generator)."""
        super().validation_step(batch, batch_idx)
        if batch_idx > 0 or int(self.generator_steps) == 0:
            return
        g = seeded_generator(int(self.hparams.seed) + batch_idx, self.device)
        logits = self(self.codec.snap(self.part.generate(batch.labels, g)).x)  # (B, K)
        p_class = logits.softmax(1).gather(1, batch.labels[:, None]).mean()
        self.log_dict({"val_generated_accuracy": (logits.argmax(1) == batch.labels).float().mean(),
                       "val_generated_p_class": p_class}, batch_size=len(batch))

    def configure_optimizers(self) -> list[torch.optim.Adam]:  # type: ignore[override]  # manual optimisation: two or three
        h = self.hparams
        betas = (float(h.betas[0]), float(h.betas[1]))  # two numbers (checked in __init__)
        groups = self.part.parameter_groups()
        optimizers = [torch.optim.Adam(self.net.parameters(), lr=h.lr, weight_decay=h.weight_decay),
                      torch.optim.Adam(groups["generator"], lr=h.lr_g, betas=betas)]
        if "critic" in groups:
            optimizers.append(torch.optim.Adam(groups["critic"], lr=h.lr_d, betas=betas))
        return optimizers

    # -- the generator contract --------------------------------------------------------------
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        """Valid encoded flows `x (B, 3, L)` of classes `labels (B,)` (`GenerativeModule.sample`).

        Options (the cGAN's): `use_ema=False` samples the raw generator; `prior` =
        `fitted` (the cVAE-GAN's fitted class noise Gaussian) or `standard` (N(0, I)).
        """
        labels = labels.to(self.device)
        self._warn_untrained("sample")
        return self.codec.snap(self.part.generate(labels, generator, **options)).replace(labels=labels)

    @property
    def can_vary(self) -> bool:
        """Whether the generator can vary flows (the cVAE-GAN: it has an encoder)."""
        return self.part.can_vary

    @torch.no_grad()
    def vary(self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator,
             **options: Any) -> FlowBatch:
        """Each flow of `batch` (`x (B, 3, L)`) varied by the generator (`GenerativeModule.vary`;
        the cVAE-GAN's `tsda.generators.variation.cvae_vary`), options as in `sample`."""
        if not self.part.can_vary:
            raise self.cannot_vary("its cgan generator needs an encoder (generator_kwargs.w_recon > 0)")
        self._warn_untrained("vary")
        return run_variation(self, batch, strength, lambda data, s: self.part.vary(data.x, data.labels, s, generator,
                                                                                   **options))

    def _warn_untrained(self, call: str) -> None:
        if int(self.generator_steps) == 0 and not self._warned_untrained:
            self._warned_untrained = True
            warnings.warn(f"JointModule.{call}: this checkpoint's generator has not trained yet (saved before "
                          f"epoch classifier_warmup_epochs={self.schedule.classifier_warmup_epochs}); its flows "
                          "are an untrained generator's", UserWarning, stacklevel=3)
