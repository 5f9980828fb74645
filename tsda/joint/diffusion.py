"""The diffusion denoiser as the generator half of joint training (`JointDiffusion`).

It trains as `tsda.generators.diffusion.module.DiffusionModule` does (the denoising loss on
real flows, label dropout for classifier-free guidance) and, through `generator_terms`, hands
`JointModule` the one-step clean-flow prediction `x0_hat(x_t, t)` of that same pass, mapped
back from model space: the latent objectives (class, region, band, diversity) are computed on
it in the co-trained classifier's latent space, so their gradient reaches the denoiser through
the very prediction it is trained to make. `noise` is the flattened `x_t` noise (what the
diversity term compares pairs of flows by).

The classifier's generated share comes from the EMA denoiser, cheaply: a sampling chain is
`steps` denoiser passes, too many per training step, so

- `training_flows` (`JointModule(generated="sample")`) draws from a pool of
  `pool_per_class` flows per class, sampled anew every `pool_refresh` calls: each row picks a
  random flow of its class from the pool (on the device, no host read);
- `vary` (`JointModule(generated="vary")`) runs SDEdit on the batch's own flows: noised to
  the step where the last `floor(steps * s)` of the `steps` steps begin and denoised back
  (`tsda.generators.diffusion.sampling.denoise` with `init`), one chain for a number `s`,
  one chain per distinct strength for a tensor of them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from tsda.data.batch import FlowBatch
from tsda.generators.diffusion.module import DEFAULT_SCHEDULER, PREDICTION_TYPES
from tsda.generators.diffusion.nets import FlowDenoiser
from tsda.generators.diffusion.sampling import (
    MODEL_CHANNELS,
    SAMPLERS,
    denoise,
    from_model_space,
    predict_x0,
    sdedit_starts,
    snap_model_space,
    to_model_space,
)
from tsda.generators.ema import ema_of
from tsda.joint.part import GeneratorTerms, JointGenerator


class JointDiffusion(JointGenerator):
    """A class-conditional `FlowDenoiser` (`tsda.generators.diffusion.nets`) trained jointly.

    Args:
        num_classes: K.
        n_packets: L.
        class_names: the K class names.
        block_out_channels, layers_per_block: the denoiser's UNet (as `DiffusionModule`'s).
        prediction_type: `epsilon` or `v_prediction`.
        label_dropout: probability of the null label per training flow (classifier-free guidance).
        ema_decay: decay of the denoiser's EMA, which samples.
        steps: sampling steps of a whole chain (`generate`, `vary`, the pool).
        sampler: `ddim`, `ddpm` or `dpmpp`.
        pool_per_class: flows per class in the classifier's pool (`training_flows`).
        pool_refresh: calls of `training_flows` between two samplings of the pool.

    Raises:
        ValueError: naming `model.generator_kwargs.<name>`.
    """

    pool: torch.Tensor  # (K, P, 3, L) buffer: the classifier's pool of generated flows

    def __init__(
        self,
        num_classes: int,
        n_packets: int,
        class_names: list[str] | tuple[str, ...],
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        prediction_type: str = "epsilon",
        label_dropout: float = 0.1,
        ema_decay: float = 0.999,
        steps: int = 10,
        sampler: str = "dpmpp",
        pool_per_class: int = 64,
        pool_refresh: int = 50,
    ) -> None:
        super().__init__()
        prefix = "model.generator_kwargs"
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"{prefix}.prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"{prefix}.sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"{prefix}.label_dropout must be in [0, 1), got {label_dropout}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"{prefix}.ema_decay must be in [0, 1), got {ema_decay}")
        for name, value in (("steps", steps), ("pool_per_class", pool_per_class), ("pool_refresh", pool_refresh)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{prefix}.{name} must be an integer >= 1, got {value!r}")
        self.class_names = list(class_names)
        self.n_packets, self.label_dropout = int(n_packets), float(label_dropout)
        self.steps, self.sampler = int(steps), sampler
        self.pool_per_class, self.pool_refresh = int(pool_per_class), int(pool_refresh)
        # diffusers' schedulers are untyped to mypy (`ConfigMixin` attributes)
        self.scheduler: Any = DDPMScheduler(**{**DEFAULT_SCHEDULER, "prediction_type": prediction_type})
        self.denoiser = FlowDenoiser(
            num_classes,
            in_channels=MODEL_CHANNELS,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
        )
        self.denoiser_ema = ema_of(self.denoiser, ema_decay, ramp=True)
        # the pool travels in checkpoints (and the call count, `get_extra_state`): a resumed run
        # draws from the pool the uninterrupted run would have
        self.register_buffer("pool", torch.zeros(num_classes, pool_per_class, 3, n_packets))  # (K, P, 3, L)
        self._calls = 0

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.denoiser.parameters())}

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.scheduler.config)

    def generator_terms(self, batch: FlowBatch, g: torch.Generator) -> GeneratorTerms:
        """The denoising MSE on the real batch; `fake` = its one-step prediction `(B, 3, L)`."""
        x0 = to_model_space(batch.x)  # (B, C, L)
        b, device = len(batch), x0.device
        noise = torch.randn(x0.shape, generator=g, device=device)  # (B, C, L)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=g, device=device)  # (B,)
        x_t = self.scheduler.add_noise(x0, noise, t)
        drop = torch.rand(b, generator=g, device=device) < self.label_dropout  # (B,)
        labels = torch.where(drop, self.denoiser.null_label, batch.labels)  # (B,)
        out = self.denoiser(x_t, t, labels)  # (B, C, L)
        prediction = self.scheduler.config.prediction_type
        target = noise if prediction == "epsilon" else self.scheduler.get_velocity(x0, noise, t)
        loss = F.mse_loss(out, target)
        alpha_bar = self.scheduler.alphas_cumprod.to(device)[t][:, None, None]  # (B, 1, 1)
        x0_hat = predict_x0(out, x_t, alpha_bar, prediction).clamp(-1.0, 1.0)  # (B, C, L)
        fake = from_model_space(x0_hat)  # (B, 3, L), differentiable
        return GeneratorTerms(loss, {"loss_denoise": loss.detach()}, fake, noise.flatten(1))

    def after_generator_step(self) -> None:
        self.denoiser_ema.update_parameters(self.denoiser)

    def _chain(
        self,
        labels: torch.Tensor,
        g: torch.Generator,
        init: torch.Tensor | None = None,
        start_index: int = 0,
        **options: Any,
    ) -> torch.Tensor:
        """`(B, 3, L)` codec-space flows of one chain of the EMA denoiser (SDEdit with `init`)."""
        net = self.denoiser_ema.module
        was_training = net.training
        net.eval()
        options = {"steps": self.steps, "sampler": self.sampler, **options}
        x = denoise(
            net,
            self.scheduler_config,
            labels,
            g,
            self.n_packets,
            self.denoiser.null_label,
            init=init,
            start_index=start_index,
            **options,
        )  # (B, C, L)
        net.train(was_training)
        return snap_model_space(x)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, g: torch.Generator, **options: Any) -> torch.Tensor:
        """`x (B, 3, L)` of `labels (B,)` from the EMA denoiser; options are `denoise`'s
        (`steps`, `sampler`, `cfg_scale`, `eta`)."""
        return self._chain(labels, g, **options)

    @torch.no_grad()
    def training_flows(self, batch: FlowBatch, g: torch.Generator) -> torch.Tensor:
        """`x (B, 3, L)`: for each row a random pool flow of its class (pool refreshed every
        `pool_refresh` calls)."""
        if self._calls % self.pool_refresh == 0:
            k = len(self.class_names)
            classes = torch.arange(k, device=batch.device).repeat_interleave(self.pool_per_class)  # (K * P,)
            self.pool.copy_(self.generate(classes, g).reshape(self.pool.shape))  # (K, P, 3, L)
        self._calls += 1
        pick = torch.randint(0, self.pool_per_class, (len(batch),), generator=g, device=batch.device)  # (B,)
        return self.pool[batch.labels, pick]

    def get_extra_state(self) -> dict[str, int]:
        return {"calls": self._calls}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self._calls = int(state["calls"])

    @property
    def can_vary(self) -> bool:
        return True

    @torch.no_grad()
    def vary(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        strength: torch.Tensor | float,
        g: torch.Generator,
        **options: Any,
    ) -> torch.Tensor:
        """SDEdit of `x (B, 3, L)`: a number `strength` is one chain (its start computed on the
        host, no device read); a `(B,)` tensor one chain per distinct strength."""
        x0 = to_model_space(x)  # (B, C, L)
        steps = int(options.pop("steps", self.steps))
        if not isinstance(strength, torch.Tensor):
            start = int(sdedit_starts(torch.tensor([float(strength)], dtype=torch.float64), steps)[0])  # on the host
            return self._chain(labels, g, init=x0, start_index=start, steps=steps, **options)
        starts = sdedit_starts(strength, steps)  # (B,)
        out = torch.empty_like(x)  # (B, 3, L)
        for k in torch.unique(starts).tolist():
            rows = (starts == k).nonzero()[:, 0]  # (b,)
            out[rows] = self._chain(labels[rows], g, init=x0[rows], start_index=k, steps=steps, **options)
        return out
