"""Diffusion sampling for flows: pure functions (no Lightning, no global RNG).

Model space. The denoiser sees flows as `MODEL_CHANNELS = 4` channels, every one in
[-1, 1], so diffusers' schedulers may keep their default `clip_sample=True` (x0 estimates
clipped to [-1, 1]):

    size' = 2 size - 1,   direction' = direction,   iat' = 2 min(iat, 1) - 1,
    presence' = +1 on packets, -1 on padding

(`FlowCodec` encodes size in [0, 1], direction in {-1, 0, +1}, iat >= 0 with 1 = `iat_max`;
gaps above `iat_max` are clipped to it, so generated gaps are at most `iat_max`).
Why a presence channel: in codec space padding is direction 0 and packets +-1, so a
direction the model is unsure of (x0 near 0, the mean of +1 and -1) reads as padding and
cuts the flow short. With presence, the length is the monotone mask that agrees best with
the presence channel (`presence_lengths`) and the direction is only its sign.

Sampling loop (`denoise`). Whatever the denoiser predicts (epsilon or v, the training
scheduler's `prediction_type`), each step

1. runs the denoiser, twice with classifier-free guidance: out = u + w (c - u), with
   u the output for the null label (and no latent) and c the conditional output;
2. turns the output into an estimate x0 of the clean flow;
3. with classifier-latent guidance, moves x0 along the gradient of
   `class_weight * log p(y | x0) - latent_weight * mean_d (encode(x0) - target)^2`
   computed by a frozen classifier on x0 (in `FlowCodec` space), times `scale`;
4. steps x_t -> x_{t-1} with a DDPM, DDIM or DPM-Solver++ (multistep, second order)
   scheduler configured with `prediction_type="sample"`, fed the (guided) x0. DDPM and
   DDIM clip x0 themselves (`clip_sample`); DPM-Solver++ has no such option, so for it the
   loop clips x0 to the same range when the training config clips.

Samplers: `ddpm` (ancestral, needs many steps), `ddim` (deterministic at `eta = 0`) and
`dpmpp` (diffusers' `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`:
a second-order multistep solver of the probability-flow ODE in x0 form, deterministic,
which reaches DDIM-25 quality in about 10 steps; `benchmarks/sampling_throughput.py`).

SDEdit (`denoise(init=..., start_index=...)`, what `DiffusionModule.vary` runs): the same
loop started part-way, from given flows noised to that step, so the result stays near them
(the fewer steps left, the nearer).

Feeding x0 to the scheduler makes epsilon and v models share one loop and lets guidance
act where the classifier is meaningful: on clean-flow estimates, not on noisy x_t.
The gradient is taken with respect to x0 only (no back-propagation through the
denoiser), which keeps guided sampling at about the cost of one classifier backward
pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from tsda.classifier.nets import LatentClassifier
from tsda.data.batch import DIRECTION, IAT, SIZE
from tsda.seeds import cumsum

SamplerName = Literal["ddpm", "ddim", "dpmpp"]
SAMPLERS: tuple[str, ...] = get_args(SamplerName)
#: what a denoiser output is (`sample`: x0 itself, what the loop feeds the sampling schedulers)
X0Prediction = Literal["epsilon", "v_prediction", "sample"]
Scheduler = DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler

#: channels the denoiser sees: size, direction, iat, presence
MODEL_CHANNELS = 4
PRESENCE = 3
#: channel-wise affine map codec space -> model space: x' = x * _SCALE + _SHIFT
_SCALE = (2.0, 1.0, 2.0)
_SHIFT = (-1.0, 0.0, -1.0)


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    """`(B, 3, L)` codec-encoded flows -> `(B, 4, L)` model space (every channel in
    [-1, 1]; channel `PRESENCE` is +1 where |direction| >= 0.5, i.e. on packets)."""
    x = x.clone()
    x[:, IAT] = x[:, IAT].clamp(0.0, 1.0)
    x[:, SIZE] = x[:, SIZE].clamp(0.0, 1.0)
    scale = x.new_tensor(_SCALE)[None, :, None]  # (1, 3, 1)
    shift = x.new_tensor(_SHIFT)[None, :, None]  # (1, 3, 1)
    presence = torch.where(x[:, DIRECTION].abs() >= 0.5, 1.0, -1.0).to(x.dtype)  # (B, L)
    return torch.cat([x * scale + shift, presence[:, None]], dim=1)  # (B, 4, L)


def from_model_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_model_space`: `(B, 4, L)` -> `(B, 3, L)` codec space, differentiable
    (direction is scaled by the soft presence `(presence + 1) / 2` clamped to [0, 1];
    not yet snapped: see `snap_model_space`)."""
    if x.ndim != 3 or x.shape[1] != MODEL_CHANNELS:
        raise ValueError(f"expected model-space flows (B, {MODEL_CHANNELS}, L), got {tuple(x.shape)}")
    scale = x.new_tensor(_SCALE)[None, :, None]  # (1, 3, 1)
    shift = x.new_tensor(_SHIFT)[None, :, None]  # (1, 3, 1)
    out = (x[:, :PRESENCE] - shift) / scale  # (B, 3, L)
    soft = ((x[:, PRESENCE] + 1.0) / 2.0).clamp(0.0, 1.0)  # (B, L)
    return torch.cat([out[:, :DIRECTION], (out[:, DIRECTION] * soft)[:, None], out[:, DIRECTION + 1 :]], dim=1)


def presence_lengths(presence: torch.Tensor) -> torch.Tensor:
    """`(B, L)` presence scores (> 0: packet) -> `(B,)` lengths: the `k` whose monotone mask
    (packets at positions < k, padding after) agrees best with the scores, i.e. the argmax
    over k = 0..L of the prefix sums of `presence` (the shortest on ties). An isolated
    uncertain position does not end the flow, as a first-dip rule would."""
    prefix = F.pad(cumsum(presence, 1), (1, 0))  # (B, L + 1), prefix[:, k] = sum_{i<k}
    return prefix.argmax(dim=1)


def snap_model_space(x: torch.Tensor) -> torch.Tensor:
    """`(B, 4, L)` generated model-space flows -> `(B, 3, L)` codec space with hard lengths.

    The length comes from the presence channel (`presence_lengths`); packets get the sign
    of the direction channel (+1 at exactly 0) as direction, whatever its magnitude, and
    later positions direction 0, so `FlowCodec.snap` reads the same length."""
    out = from_model_space(x).detach().clone()  # (B, 3, L)
    lengths = presence_lengths(x[:, PRESENCE].detach())  # (B,)
    present = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # (B, L)
    out[:, DIRECTION] = torch.where(x[:, DIRECTION] >= 0, 1.0, -1.0) * present
    return out


@dataclass(frozen=True)
class LatentGuidance:
    """Classifier-latent guidance settings.

    Attributes:
        classifier: frozen classifier in eval mode (its BatchNorm must not update).
        scale: overall step size; 0 turns guidance off.
        class_weight: weight of the `log p(y | x0)` term.
        latent_weight: weight of the `-mean_d (encode(x0) - target)^2` term.
        targets: `(B, D)` target latents (e.g. the class centroids of the labels);
            needed when `latent_weight > 0`.
        labels: `(B,)` classes to guide toward; None = the labels the denoiser is given
            (an unconditional model is given the null label and guided toward these).
    """

    classifier: LatentClassifier
    scale: float
    class_weight: float = 1.0
    latent_weight: float = 0.0
    targets: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.scale < 0 or self.class_weight < 0 or self.latent_weight < 0:
            raise ValueError("LatentGuidance scale, class_weight and latent_weight must be >= 0")
        if self.latent_weight > 0 and self.targets is None:
            raise ValueError("LatentGuidance.latent_weight > 0 needs targets (B, D)")


def guidance_gradient(x0: torch.Tensor, labels: torch.Tensor, guidance: LatentGuidance) -> torch.Tensor:
    """`(B, 3, L)` gradient, w.r.t. the model-space `x0`, of the guidance objective (toward
    `guidance.labels` when set, else `labels (B,)`)."""
    labels = guidance.labels if guidance.labels is not None else labels
    with torch.enable_grad():
        x = x0.detach().requires_grad_(True)
        z = guidance.classifier.encode(from_model_space(x))  # (B, D)
        objective = x.new_zeros(x.shape[0])  # (B,)
        if guidance.class_weight > 0:
            log_p = F.log_softmax(guidance.classifier.head(z), dim=1)  # (B, K)
            objective = objective + guidance.class_weight * log_p.gather(1, labels[:, None])[:, 0]
        if guidance.latent_weight > 0:
            assert guidance.targets is not None
            distance = (z - guidance.targets.to(z)).pow(2).mean(dim=1)  # (B,)
            objective = objective - guidance.latent_weight * distance
        (grad,) = torch.autograd.grad(objective.sum(), x)
    return grad


def sdedit_starts(strength: torch.Tensor, steps: int) -> torch.Tensor:
    """`(B,)` int64: the first of `steps` sampling steps each flow's SDEdit chain runs, for
    strengths `(B,)` in [0, 1] (diffusers' img2img: `init_timestep = min(int(steps * s), steps)`,
    robust to float32 rounding of s): `steps` at s = 0 (no step), 0 at s = 1 (the whole chain)."""
    return steps - (strength.double() * steps + 1e-6).floor().long().clamp(0, steps)


def make_scheduler(scheduler_config: dict[str, Any], sampler: SamplerName, steps: int) -> Scheduler:
    """A sampling scheduler from the training `DDPMScheduler` config, with `steps`
    inference steps and `prediction_type="sample"` (the loop feeds it x0)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    train_steps = int(scheduler_config["num_train_timesteps"])
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be in [1, {train_steps}], got {steps}")
    config = {k: v for k, v in scheduler_config.items() if k != "prediction_type"}
    if sampler == "dpmpp":
        # x0 clipping is done by the loop (`denoise`); the solver's own thresholding stays off
        scheduler = DPMSolverMultistepScheduler.from_config(
            config, prediction_type="sample", algorithm_type="dpmsolver++", solver_order=2
        )
    else:
        cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        scheduler = cls.from_config(config, prediction_type="sample")
    scheduler.set_timesteps(steps)
    return scheduler


def predict_x0(
    output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: X0Prediction
) -> torch.Tensor:
    """Clean-flow estimate `(B, C, L)` from a denoiser output at cumulative alpha `alpha_bar` (scalar)."""
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - s * output) / a
    if prediction_type == "v_prediction":
        return a * x_t - s * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {prediction_type!r}")


def guided_output(
    denoiser: torch.nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    null_label: int,
    cfg_scale: float,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoiser output `(B, C, L)` with classifier-free guidance `u + w (c - u)`.

    `w = 1` is the plain conditional output (one pass), `w = 0` the unconditional one.
    """
    b = x_t.shape[0]
    timesteps = t.to(x_t.device).expand(b)  # (B,)
    if cfg_scale == 1.0:
        return denoiser(x_t, timesteps, labels, latents)
    null = torch.full_like(labels, null_label)  # (B,)
    null_latents = None if latents is None else torch.zeros_like(latents)
    if cfg_scale == 0.0:
        return denoiser(x_t, timesteps, null, null_latents)
    both_latents = None if latents is None or null_latents is None else torch.cat([null_latents, latents])  # (2B, D)
    out = denoiser(
        torch.cat([x_t, x_t]), torch.cat([timesteps, timesteps]), torch.cat([null, labels]), both_latents
    )  # (2B, C, L)
    uncond, cond = out.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


@torch.no_grad()
def denoise(
    denoiser: torch.nn.Module,
    scheduler_config: dict[str, Any],
    labels: torch.Tensor,
    generator: torch.Generator,
    n_packets: int,
    null_label: int,
    *,
    steps: int = 50,
    sampler: SamplerName = "ddim",
    cfg_scale: float = 1.0,
    latents: torch.Tensor | None = None,
    guidance: LatentGuidance | None = None,
    eta: float = 0.0,
    channels: int = MODEL_CHANNELS,
    init: torch.Tensor | None = None,
    start_index: int = 0,
) -> torch.Tensor:
    """Sample flows in model space, from pure noise or (SDEdit) from given flows.

    Args:
        denoiser: `(x (B, C, L), t (B,), labels (B,), latents (B, D) | None) -> (B, C, L)`,
            e.g. `FlowDenoiser` (in eval mode).
        scheduler_config: the training `DDPMScheduler` config (its `prediction_type` says
            what the denoiser predicts).
        labels: `(B,)` int64 classes.
        generator: the only source of randomness (initial noise, DDPM / DDIM-eta noise).
        n_packets: `L`.
        null_label: the denoiser's "no class" index (classifier-free guidance).
        steps: inference steps.
        sampler: `ddpm` (ancestral), `ddim` (deterministic for `eta = 0`) or `dpmpp`
            (DPM-Solver++ multistep, deterministic; `eta` does not apply).
        cfg_scale: classifier-free guidance weight `w` (1 = conditional, 0 = unconditional).
        latents: optional `(B, D)` classifier latents the denoiser is conditioned on.
        guidance: classifier-latent guidance, or None.
        eta: DDIM noise (0 = deterministic).
        init: `(B, C, L)` model-space flows to start from (SDEdit, Meng et al. 2022):
            `init` is noised to the step `scheduler.timesteps[start_index]` (the training
            `DDPMScheduler.add_noise`) and denoised from there, i.e. the last
            `steps - start_index` of the `steps` steps are run (diffusers' img2img
            pipelines). `start_index = 0` is the whole chain from pure noise, as without
            `init`; `start_index = steps` returns `init` itself.
        start_index: the first of the `steps` sampling steps to run, in [0, steps]; > 0
            needs `init`.

    Returns:
        `(B, C, L)` flows in model space (pass through `snap_model_space` and
        `FlowCodec.snap` for valid flows).
    """
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0, got {cfg_scale}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    # diffusers' schedulers are untyped to mypy (`ConfigMixin` attributes)
    scheduler: Any = make_scheduler(scheduler_config, sampler, steps)
    if not 0 <= start_index <= steps or (start_index > 0 and init is None):
        raise ValueError(f"start_index must be in [0, steps={steps}] and > 0 only with init, got {start_index}")
    prediction_type = scheduler_config["prediction_type"]
    device = labels.device
    alphas = scheduler.alphas_cumprod.to(device)  # (T,)
    shape = (labels.shape[0], channels, n_packets)
    if init is not None and tuple(init.shape) != shape:
        raise ValueError(f"init must be model-space flows {shape}, got {tuple(init.shape)}")
    x = torch.randn(shape, generator=generator, device=generator.device).to(device)  # (B, C, L)
    timesteps = scheduler.timesteps[start_index:]
    if start_index > 0:  # SDEdit: the given flows, noised to the first step run
        assert init is not None  # start_index > 0 needs init (checked above)
        x = (
            init.to(device)
            if len(timesteps) == 0
            else DDPMScheduler.from_config(scheduler_config).add_noise(
                init.to(device), x, timesteps[:1].to(device).expand(shape[0])
            )
        )
        if hasattr(scheduler, "set_begin_index"):  # multistep solvers count steps from where they start
            scheduler.set_begin_index(start_index)
    step_kwargs: dict[str, Any] = {"eta": eta} if sampler == "ddim" else {}
    clip = None  # DDPM/DDIM clip x0 inside `step` (their clip_sample); DPM-Solver++ cannot
    if sampler == "dpmpp" and scheduler_config.get("clip_sample"):
        clip = float(scheduler_config.get("clip_sample_range", 1.0))
    # the scheduler's timesteps stay on the host, where its `step` reads them as numbers; the
    # denoiser's and x0's per-step tensors are copied to the device once, here: a step's `t`
    # copied there inside the loop would be a blocking copy, a host sync per step on CUDA
    t_device = timesteps.to(device)  # (S,)
    alpha_steps = alphas[t_device]  # (S,)
    for i, t in enumerate(timesteps):
        out = guided_output(denoiser, x, t_device[i], labels, null_label, cfg_scale, latents)  # (B, C, L)
        x0 = predict_x0(out, x, alpha_steps[i], prediction_type)  # (B, C, L)
        if guidance is not None and guidance.scale > 0:
            x0 = x0 + guidance.scale * guidance_gradient(x0, labels, guidance)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        x = scheduler.step(x0, t, x, generator=generator, **step_kwargs).prev_sample
    return x
