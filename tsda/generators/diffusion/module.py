"""`DiffusionModule`: a class-conditional DDPM over flows, with optional classifier latents.

Training: x0 (model space, see `tsda.generators.diffusion.sampling`: size, direction, iat and a presence
channel that fixes the length) -> noise at a random step with diffusers'
`DDPMScheduler` -> `FlowDenoiser` predicts epsilon or v -> MSE on the real packets and
the padding alike (padding is part of what is generated: it fixes the length).
Labels are replaced by the null label with probability `label_dropout` (classifier-free
guidance). An exponential moving average of the denoiser (`ema`) is what samples.

With `classifier_ckpt`, a frozen pretrained `ClassifierModule` is loaded as the guide
(`tsda.generators.guide.FrozenGuide`, submodule `classifier`); it provides classifier-latent
guidance at sampling time and the class centroids of its latent space, and with
`latent_conditioning` the denoiser is also conditioned on the classifier latent of each
training flow (at sampling time: the centroid of the requested class, or given latents).
The centroids are the running per-class sums of the guide's latents of every training
batch (buffers `latent_sum (K, D)`, `latent_count (K,)`, a `tsda.generators.guide.ClassSums`),
added up over DDP ranks at each epoch's last batch; `latent_centroids (K, D)` is their
mean. Sampling a class never seen in training uses its zero centroid, with a warning
naming it. The classifier's hparams and weights travel in the diffusion checkpoint, so
sampling (guided included) needs no classifier file.

Unconditional (`conditional=False`): every training step uses the null label, so the
model learns the distribution of all flows, without labels; sampling feeds the denoiser
the null label. Latent guidance still steers it toward a requested class: with the stored
guide (`classifier_ckpt`), or with any classifier passed as `guide` to `sample` (e.g. the
labeller of `tsda sample --label_with`, `tsda.labelling`).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from tsda.classifier.nets import LatentClassifier
from tsda.data.batch import FlowBatch
from tsda.generators.base import GenerativeModule
from tsda.generators.diffusion.nets import FlowDenoiser
from tsda.generators.diffusion.sampling import (MODEL_CHANNELS, LatentGuidance, SamplerName, denoise,
                                                sdedit_starts, snap_model_space, to_model_space)
from tsda.generators.ema import check_ema_decay, ema_of
from tsda.generators.guide import ClassSums, load_guide, warn_sparse_classes
from tsda.generators.regions import eval_mode
from tsda.generators.variation import run_variation
from tsda.lit import check_class_names
from tsda.lit.rng import SeededModule

#: DDPMScheduler settings tsda uses unless `scheduler_kwargs` overrides them
DEFAULT_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": True,  # data are scaled to [-1, 1] (tsda.generators.diffusion.sampling.to_model_space)
    "clip_sample_range": 1.0,
    "timestep_spacing": "trailing",  # few-step DDIM starts from pure noise (t = T - 1)
}


#: sampling steps of a whole chain unless `steps` says otherwise
DEFAULT_STEPS = 50

#: what the denoiser is trained to predict (diffusers' `prediction_type`)
PredictionType = Literal["epsilon", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)


class DiffusionModule(SeededModule, GenerativeModule):
    """Class-conditional diffusion generator of flows.

    Args:
        num_classes: K (linked from the datamodule by the CLI).
        class_names: names of the K classes.
        n_packets, mtu, iat_unit, iat_max: the `FlowCodec` settings of the training data.
        block_out_channels: UNet level widths of the `FlowDenoiser`.
        layers_per_block: extra residual blocks per UNet level.
        prediction_type: `epsilon` or `v_prediction` (`PREDICTION_TYPES`).
        scheduler_kwargs: overrides of `DEFAULT_SCHEDULER` (any `DDPMScheduler` argument).
        label_dropout: probability of training on the null label (classifier-free guidance).
        ema_decay: EMA decay of the sampling weights (0 = sample with the trained weights).
        lr, weight_decay: AdamW settings.
        warmup_steps: optimizer steps of linear learning-rate warm-up (0 = none).
        classifier_ckpt: a `ClassifierModule` checkpoint for latent guidance/conditioning.
        latent_conditioning: condition the denoiser on the classifier latent (needs
            `classifier_ckpt`).
        classifier_hparams: filled in from `classifier_ckpt` (leave unset): with it a
            checkpoint rebuilds the classifier without the classifier file, whose weights
            it holds.
        conditional: False = train without labels (every step on the null label;
            `label_dropout` does not apply; no `latent_conditioning`); `class_names` are
            still kept, and `sample` guides toward its labels only with latent guidance.
        seed: seeds the training noise generator (the CLI links `seed_everything`).
    """

    latent_sum: torch.Tensor  # (K, D) buffer, with a classifier only
    latent_count: torch.Tensor  # (K,) buffer, with a classifier only

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        n_packets: int = 20,
        mtu: float = 1460.0,
        iat_unit: float = 1e-3,
        iat_max: float = 10.0,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        prediction_type: PredictionType = "epsilon",
        scheduler_kwargs: dict[str, Any] | None = None,
        label_dropout: float = 0.1,
        ema_decay: float = 0.999,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        classifier_ckpt: str | None = None,
        latent_conditioning: bool = False,
        classifier_hparams: dict[str, Any] | None = None,
        conditional: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"model.prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"model.label_dropout must be in [0, 1), got {label_dropout}")
        check_ema_decay(ema_decay)
        if warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        check_class_names(class_names, num_classes)
        if latent_conditioning and classifier_ckpt is None and classifier_hparams is None:
            raise ValueError("model.latent_conditioning needs model.classifier_ckpt")
        if latent_conditioning and not conditional:
            raise ValueError("model.latent_conditioning needs labels (class centroids): not with model.conditional false")
        self.save_hyperparameters()
        # diffusers' schedulers are untyped to mypy (`ConfigMixin` attributes)
        self.scheduler: Any = DDPMScheduler(**{**DEFAULT_SCHEDULER, **(scheduler_kwargs or {}),
                                          "prediction_type": prediction_type})
        # the scheduler config travels in checkpoint["scheduler_config"], not in hparams:
        # every hparam must be an __init__ argument (LightningCLI re-parses them to resume)
        # the guide's weights are the submodule's (`classifier.net.*`), so they travel in the
        # checkpoint; its hparams let a checkpoint rebuild it without the classifier file
        self.classifier = load_guide(num_classes, path=classifier_ckpt, hparams=classifier_hparams)
        if self.classifier is not None:
            self.hparams["classifier_hparams"] = dict(self.classifier.hparams)
        latent_dim = self.classifier.latent_dim if self.classifier is not None else 0
        self.denoiser = FlowDenoiser(num_classes, in_channels=MODEL_CHANNELS, block_out_channels=tuple(block_out_channels),
                                     layers_per_block=layers_per_block,
                                     latent_dim=latent_dim if latent_conditioning else 0)
        self.ema = ema_of(self.denoiser, ema_decay)
        if latent_dim:
            self.register_buffer("latent_sum", torch.zeros(num_classes, latent_dim))  # (K, D)
            self.register_buffer("latent_count", torch.zeros(num_classes))  # (K,)
        self.init_run_generator(seed, "noise")
        self._rank_sums: ClassSums | None = None  # under DDP: this rank's additions of the epoch

    @property
    def scheduler_config(self) -> dict[str, Any]:
        """The training `DDPMScheduler` config as a plain dict (saved in hparams)."""
        return {k: v for k, v in dict(self.scheduler.config).items() if not k.startswith("_")}

    # -- latent space of the classifier -------------------------------------------------
    @property
    def latent_sums(self) -> ClassSums:
        """The running per-class sums of the guide's training latents (`latent_count (K,)`,
        `latent_sum (K, D)` as `z`): the module's buffers themselves, not a copy."""
        return ClassSums(self.latent_count, {"z": self.latent_sum})

    @property
    def latent_centroids(self) -> torch.Tensor | None:
        """`(K, D)` mean classifier latent of each class's training flows (None without
        a classifier; zero rows for classes not yet seen)."""
        if self.classifier is None:
            return None
        return self.latent_sums.mean("z")

    def _centroids_of(self, labels: torch.Tensor) -> torch.Tensor:
        """`(B, D)` the class centroids of `labels (B,)`, warning about classes never seen."""
        warn_sparse_classes(f"{type(self).__name__}.sample", self.latent_sums.sparse(among=labels),
                            self.class_names, "their target latent is the zero vector (no centroid)")
        centroids = self.latent_centroids
        assert centroids is not None  # called only with a stored guide (`_guidance`, `_chain`)
        return centroids[labels]

    @torch.no_grad()
    def _latents(self, batch: FlowBatch) -> torch.Tensor:
        """`(B, D)` classifier latents of clean flows; in training mode also added to the
        class sums."""
        assert self.classifier is not None  # only with a stored guide (`training_step`)
        z = self.classifier.encode(batch.x)  # (B, D)
        if self.training:
            (self._rank_sums or self.latent_sums).add(batch.labels, {"z": z})
        return z

    # -- training -----------------------------------------------------------------------
    def training_step(self, batch: FlowBatch, batch_idx: int) -> torch.Tensor:
        g = self.run_generator  # the training noise's seeded generator
        b = len(batch)
        x0 = to_model_space(batch.x)  # (B, C, L)
        latents = self._latents(batch) if self.classifier is not None else None  # (B, D)
        # 1. noise at random steps
        noise = torch.randn(x0.shape, generator=g, device=self.device)  # (B, C, L)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=g, device=self.device)
        x_t = self.scheduler.add_noise(x0, noise, t)
        # 2. label (and latent) dropout for classifier-free guidance
        drop = torch.rand(b, generator=g, device=self.device) < self.hparams.label_dropout  # (B,)
        if not self.conditional:
            drop = torch.ones_like(drop)  # unconditional: the null label on every step
        labels = torch.where(drop, self.denoiser.null_label, batch.labels)
        if self.hparams.latent_conditioning:
            assert latents is not None  # latent conditioning needs the guide (`__init__`)
            latents = latents * (~drop)[:, None].to(latents.dtype)
        else:
            latents = None
        # 3. predict and regress
        target = noise if self.hparams.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, noise, t)
        loss = F.mse_loss(self.denoiser(x_t, t, labels, latents), target)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=b)
        return loss

    def on_train_epoch_start(self) -> None:
        # Under DDP the buffers are broadcast from rank 0 before every forward, which would
        # overwrite what another rank added to them: a rank's additions of the epoch live
        # outside them (`_rank_sums`) until the epoch's all-reduce. On one process the
        # buffers take them directly, as they always have.
        if self.classifier is not None and self.trainer.world_size > 1:
            self._rank_sums = ClassSums(torch.zeros_like(self.latent_count), {"z": torch.zeros_like(self.latent_sum)})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update_parameters(self.denoiser)
        if self._rank_sums is not None and batch_idx == self.trainer.num_training_batches - 1:
            # every rank saw its shard: add what all ranks accumulated this epoch to the
            # buffers, so every rank, and the checkpoint, holds all of it (ranks have equal
            # batch counts, so all get here)
            self._rank_sums.all_reduce(self.trainer.strategy, since=self._rank_sums.zeros_like())
            self.latent_sums.add_sums(self._rank_sums)
            self._rank_sums = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the class path and the noise generator's state
        checkpoint["scheduler_config"] = self.scheduler_config

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(self.denoiser.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        warmup = max(int(self.hparams.get("warmup_steps", 0)), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- sampling -----------------------------------------------------------------------
    def sampling_denoiser(self, use_ema: bool = True) -> torch.nn.Module:
        return self.ema.module if use_ema and self.hparams.ema_decay > 0 else self.denoiser

    def _guidance(
        self, labels: torch.Tensor, scale: float, class_weight: float, latent_weight: float | None,
        target_latents: torch.Tensor | None, guide: LatentClassifier | None,
    ) -> LatentGuidance | None:
        if scale == 0:
            return None
        classifier = guide if guide is not None else self.classifier
        if classifier is None:
            raise ValueError("latent_guidance_scale > 0 needs a model trained with classifier_ckpt, or a guide "
                             "classifier (`guide`; tsda sample --label_with CLASSIFIER serves as one)")
        if latent_weight is None:  # the stored guide has class centroids, an outside one has none
            latent_weight = 1.0 if guide is None or target_latents is not None else 0.0
        targets = target_latents
        if targets is None and latent_weight > 0:
            if guide is not None:
                raise ValueError("latent_weight > 0 with an outside guide needs target_latents (B, D): "
                                 "the model holds no class centroids of that guide's latent space")
            targets = self._centroids_of(labels)  # (B, D)
        return LatentGuidance(classifier, scale, class_weight, latent_weight, targets, labels=labels)

    @torch.no_grad()
    def sample(  # type: ignore[override]  # options are each family's own, passed through by the callers
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        steps: int = DEFAULT_STEPS,
        sampler: SamplerName = "ddim",
        cfg_scale: float = 1.0,
        latent_guidance_scale: float = 0.0,
        class_weight: float = 1.0,
        latent_weight: float | None = None,
        target_latents: torch.Tensor | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
        guide: LatentClassifier | None = None,
    ) -> FlowBatch:
        """Valid flows of the classes `labels (B,)` (see `GenerativeModule.sample`).

        Args:
            steps, sampler, cfg_scale, eta: see `tsda.generators.diffusion.sampling.denoise`.
            latent_guidance_scale: step size of classifier-latent guidance (0 = off).
            class_weight: weight of the `log p(y | x0)` guidance term.
            latent_weight: weight of the pull of `encode(x0)` to `target_latents`; default
                1 with the stored guide, 0 with an outside `guide` without targets.
            target_latents: `(B, D)` guidance / conditioning targets; default: the class
                centroids of the labels (stored guide only).
            use_ema: sample with the EMA weights (default) or the trained ones.
            guide: a classifier (`encode`, `head`, same classes, eval mode) that guides
                instead of the stored one; what lets a model trained without a guide
                (e.g. an unconditional one) be guided toward `labels`.

        Raises:
            ValueError: `cfg_scale` other than 1 on an unconditional model (it has no
                conditional output); guidance without any guide.
        """
        labels = labels.to(self.device)
        with eval_mode(self):
            x = self._chain(labels, generator, steps=steps, sampler=sampler, cfg_scale=cfg_scale,
                            latent_guidance_scale=latent_guidance_scale, class_weight=class_weight,
                            latent_weight=latent_weight, target_latents=target_latents, eta=eta, use_ema=use_ema,
                            guide=guide)
        return self.codec.snap(snap_model_space(x)).replace(labels=labels)

    @property
    def can_vary(self) -> bool:
        """Any flow can be varied (SDEdit, `vary`)."""
        return True

    @torch.no_grad()
    def vary(self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator,
             steps: int = DEFAULT_STEPS, target_latents: torch.Tensor | None = None, **options: Any) -> FlowBatch:
        """SDEdit (Meng et al. 2022): each flow of `batch` (`x (B, 3, L)`) noised part-way
        and denoised back, class-conditioned on its label (`GenerativeModule.vary`).

        A flow of strength s is encoded to model space, noised to the step where the last
        `floor(steps * s)` of the `steps` sampling steps begin, and denoised through them,
        as diffusers' img2img pipelines do (`tsda.generators.diffusion.sampling.denoise` with `init`): the more
        noise, the more of the flow the model redraws, until s = 1 runs the whole chain
        from pure noise (a fresh sample of the class, the very flows `sample` draws for
        the same labels and seed when every strength is 1). A strength below `1 / steps`
        runs no step: the flow comes back through the codec's rounding. The multistep
        solver (`dpmpp`) keeps state per chain, so flows that start at different steps run
        as separate chains, one per start, in order of their start.

        Args:
            batch, strength, generator: see `GenerativeModule.vary`.
            steps: sampling steps of a whole chain (s = 1).
            target_latents: `(B, D)` guidance / conditioning targets, one per flow; default
                as in `sample` (the class centroids of the labels).
            options: those of `sample` (`sampler`, `cfg_scale`, `latent_guidance_scale`,
                `class_weight`, `latent_weight`, `eta`, `use_ema`, `guide`), applied as there.
        """
        def vary(data: FlowBatch, s: torch.Tensor) -> torch.Tensor:
            x0 = to_model_space(data.x)  # (B, C, L)
            start = sdedit_starts(s, steps)  # (B,)
            out = torch.empty_like(x0)  # (B, C, L)
            for k in torch.unique(start).tolist():
                rows = (start == k).nonzero()[:, 0]  # (b,)
                targets = None if target_latents is None else target_latents.to(self.device)[rows]  # (b, D)
                out[rows] = self._chain(data.labels[rows], generator, steps=steps, target_latents=targets,
                                        init=x0[rows], start_index=k, **options)
            return snap_model_space(out)  # (B, 3, L)

        return run_variation(self, batch, strength, vary)

    def _chain(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        *,
        steps: int = DEFAULT_STEPS,
        sampler: SamplerName = "ddim",
        cfg_scale: float = 1.0,
        latent_guidance_scale: float = 0.0,
        class_weight: float = 1.0,
        latent_weight: float | None = None,
        target_latents: torch.Tensor | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
        guide: LatentClassifier | None = None,
        init: torch.Tensor | None = None,
        start_index: int = 0,
    ) -> torch.Tensor:
        """`(B, C, L)` model-space flows of `labels (B,)` from one sampling chain
        (`tsda.generators.diffusion.sampling.denoise`), conditioned and guided as `sample` documents; with
        `init` and `start_index`, the SDEdit chain of `vary`."""
        if not self.conditional and cfg_scale != 1.0:
            raise ValueError(f"cfg_scale={cfg_scale}: classifier-free guidance needs a conditional model "
                             "(this one was trained with conditional: false)")
        latents = None
        if self.hparams.latent_conditioning:
            latents = target_latents if target_latents is not None else self._centroids_of(labels)  # (B, D)
        guidance = self._guidance(labels, float(latent_guidance_scale), class_weight, latent_weight, target_latents,
                                  guide)
        fed = labels if self.conditional else torch.full_like(labels, self.denoiser.null_label)  # (B,)
        return denoise(self.sampling_denoiser(use_ema), self.scheduler_config, fed, generator,
                       int(self.hparams.n_packets), self.denoiser.null_label, steps=steps, sampler=sampler,
                       cfg_scale=float(cfg_scale), latents=latents, guidance=guidance, eta=eta, init=init,
                       start_index=start_index)
