"""`FlowDenoiser`: diffusers' 1D UNet with class and classifier-latent conditioning.

Why not `UNet1DModel.forward` as is: `UNet1DModel` computes its time embedding from the
timestep inside `forward` and offers no entry for anything else, and its default
configuration (the Dance-Diffusion blocks, `sample_size=65536`, a Fourier time embedding
repeated along `L` as extra channels) is built for raw audio. So `FlowDenoiser` builds a
`UNet1DModel` in the temporal-ResNet configuration (`DownResnetBlock1D` /
`UpResnetBlock1D` / `MidResTemporalBlock1D` / `OutConv1DBlock`, the configuration of
diffusers' RL "diffuser" planner), whose blocks take a `(B, C0)` embedding vector, and runs
its blocks in its own `forward` with the conditioning added to that vector:

    emb = time_mlp(time_proj(t)) + label_embedding(y) + latent_proj(z)      # (B, C0)

The weights, configuration and blocks stay diffusers' (`self.unet.config` describes them);
only the ten lines of the block loop are ours.

Data go in and out in the model space of `tsda.generators.diffusion.sampling` (every channel in [-1, 1]).
`L` is padded with zeros to a multiple of the UNet's down-sampling factor
`2 ** (len(block_out_channels) - 1)` and the output cropped back to `L`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet1DModel
from torch import nn


class FlowDenoiser(nn.Module):
    """Predicts the noise (or v) of noisy flows given the timestep, class and latent.

    Args:
        num_classes: K; the label embedding has K + 1 rows, index K is the null label of
            classifier-free guidance (`null_label`).
        in_channels: C, channels of a flow (3: size, direction, iat).
        block_out_channels: widths of the UNet levels, e.g. `(32, 64, 128)`; the first
            is also the width `C0` of the conditioning vector. At least two levels.
        layers_per_block: extra residual blocks per level.
        latent_dim: D of an optional classifier latent `z (B, D)` added to the
            conditioning (0 = no latent conditioning).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        latent_dim: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        block_out_channels = tuple(int(c) for c in block_out_channels)
        if len(block_out_channels) < 2 or any(c < 8 or c % 8 for c in block_out_channels):
            raise ValueError(
                f"block_out_channels needs >= 2 levels, each a multiple of 8 (GroupNorm of 8 "
                f"groups), got {block_out_channels}"
            )
        if latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {latent_dim}")
        n = len(block_out_channels)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        # diffusers' models are untyped to mypy (`ConfigMixin` attributes, blocks built from names)
        self.unet: Any = UNet1DModel(
            sample_size=32,  # informative only: any padded L works
            in_channels=in_channels,
            out_channels=in_channels,
            block_out_channels=block_out_channels,
            time_embedding_type="positional",
            use_timestep_embedding=True,
            flip_sin_to_cos=False,
            freq_shift=1.0,
            down_block_types=("DownResnetBlock1D",) * n,
            up_block_types=("UpResnetBlock1D",) * (n - 1),
            mid_block_type="MidResTemporalBlock1D",
            out_block_type="OutConv1DBlock",
            act_fn="mish",
            layers_per_block=layers_per_block,
        )
        width = block_out_channels[0]  # C0: the blocks' embedding width
        self.label_embedding = nn.Embedding(num_classes + 1, width)
        self.latent_proj = nn.Linear(latent_dim, width) if latent_dim else None

    @property
    def null_label(self) -> int:
        """The label index meaning "no class" (classifier-free guidance)."""
        return self.num_classes

    @property
    def length_multiple(self) -> int:
        """`L` is padded to a multiple of this inside `forward`."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def conditioning(self, timesteps: torch.Tensor, labels: torch.Tensor, latents: torch.Tensor | None) -> torch.Tensor:
        """`(B, C0)` embedding of timestep + label (+ latent)."""
        emb = self.unet.time_mlp(self.unet.time_proj(timesteps))  # (B, C0)
        emb = emb + self.label_embedding(labels)  # (B, C0)
        if latents is not None:
            if self.latent_proj is None:
                raise ValueError("latents given to a FlowDenoiser built with latent_dim=0")
            emb = emb + self.latent_proj(latents)  # (B, D) -> (B, C0)
        return emb

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        labels: torch.Tensor,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoiser output for noisy flows.

        Args:
            x: `(B, C, L)` noisy flows in model space.
            timesteps: `(B,)` int64 diffusion steps (or a scalar for all rows).
            labels: `(B,)` int64 classes in [0, K]; K = null label.
            latents: optional `(B, D)` classifier latents (rows of zeros = no latent).

        Returns:
            `(B, C, L)` prediction (noise or v, as trained).
        """
        b, _, length = x.shape
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        # 1. conditioning vector
        emb = self.conditioning(timesteps.to(x.device), labels, latents).to(x.dtype)  # (B, C0)
        # 2. pad L to the down-sampling multiple
        pad = -length % self.length_multiple
        h = F.pad(x, (0, pad))  # (B, C, L + pad)
        # 3. down path, keeping the skip states
        skips: list[torch.Tensor] = []
        for block in self.unet.down_blocks:
            h, states = block(hidden_states=h, temb=emb)
            skips.extend(states)
        # 4. middle
        h = self.unet.mid_block(h, emb)
        # 5. up path: each up block takes the deepest unused skip state
        for block in self.unet.up_blocks:
            h = block(h, res_hidden_states_tuple=(skips.pop(),), temb=emb)
        # 6. output convolution, crop back to L
        h = self.unet.out_block(h, emb)  # (B, C, L + pad)
        return h[:, :, :length]
