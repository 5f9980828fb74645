"""Traffic classifiers with a latent seam: `encode(x) -> z (B, D)`, `head(z) -> logits (B, K)`.

Generators are guided through that seam, so every backbone exposes it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch
from torch import nn

BackboneName = Literal["cnn_resblock", "gru"]


class LatentClassifier(Protocol):
    """What guidance needs of a classifier: the latent seam of `FlowClassifier` (any object with
    `encode` and `head` will do)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...  # (B, 3, L) -> (B, D)

    def head(self, z: torch.Tensor) -> torch.Tensor: ...  # (B, D) -> (B, K)


class SeqConv(nn.Conv2d):
    """A bias-free Conv1d over the packets, held as a Conv2d with a `(1, k)` kernel on
    `(B, C, 1, L)`: torch runs a Conv1d as exactly this Conv2d, so fp32 and bf16 results are
    bit-identical to `nn.Conv1d` (tested), while inductor compiles the 4-D form into a much
    faster bf16 training step on CPU (`benchmarks/RESULTS.md`), and the 4-D form can run
    channels-last (`use_channels_last`). A checkpoint of the Conv1d form (weight
    `(C_out, C_in, k)`) loads unchanged."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(c_in, c_out, (1, k), stride=(1, stride), padding=(0, padding), bias=False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 3:  # the Conv1d form
            state_dict[prefix + "weight"] = weight.unsqueeze(2)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ResBlock1d(nn.Module):
    """Conv(k3, stride 2)+BN+ReLU, Conv(k3)+BN, plus a 1x1 stride-2 conv+BN shortcut,
    then ReLU (CESNET's `CNN_ResBlock` block), over the packet axis of
    `(B, C_in, 1, L) -> (B, C_out, 1, ceil(L/2))`."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            SeqConv(c_in, c_out, 3, stride=2, padding=1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            SeqConv(c_out, c_out, 3, padding=1),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Sequential(SeqConv(c_in, c_out, 1, stride=2), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class FlowClassifier(nn.Module):
    """Base: `forward(x) = head(encode(x))`.

    Args of subclasses share `num_classes` (K) and `in_channels` (C, 3 by default).
    """

    latent_dim: int

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, C, L)` -> `z (B, D)`."""
        raise NotImplementedError

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """`z (B, D)` -> `logits (B, K)`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x))


class CNNResBlockClassifier(FlowClassifier):
    """The PAM 2024 backbone: Conv1d(3->64, k3)+BN+ReLU, ResBlock(64->64),
    ResBlock(64->128), global average pool, Linear(128->K). About 116k parameters for
    K = 20; the 128-d pooled vector is the latent space. The convolutions run as `(1, k)`
    Conv2d on `(B, C, 1, L)` (`SeqConv`: the same results as Conv1d)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.latent_dim = 2 * width
        self.features = nn.Sequential(
            SeqConv(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            ResBlock1d(width, width),
            ResBlock1d(width, 2 * width),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * width, num_classes)
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> None:
        """Run the convolutions channels-last (weights and activations), the layout oneDNN's
        and cuDNN's bf16 convolutions prefer: on CPU an eager bf16 step runs about twice as
        fast (a compiled one hardly changes: `benchmarks/train_step_modes.py`); results
        change by float rounding only. Checkpoints keep the same keys and shapes."""
        self.memory_format = torch.channels_last
        self.features.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented, untyped

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(2).contiguous(memory_format=self.memory_format))  # (B, 2W, 1, ceil(L/4))
        return h.mean(dim=(2, 3))  # (B, D=2W)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(z))


class GRUClassifier(FlowClassifier):
    """Bidirectional GRU over the real packets (sequences packed by length, so padding never
    enters either direction); the latent is the mean of the hidden states over real
    packets, projected to `latent_dim`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden: int = 64,
        layers: int = 2,
        latent_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.latent_dim = latent_dim
        self.rnn = nn.GRU(
            in_channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.proj = nn.Sequential(nn.Linear(2 * hidden, latent_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(latent_dim, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.transpose(1, 2)  # (B, L, C)
        real = x[:, 1].abs() > 0.5  # (B, L) the direction channel marks real packets
        # packing takes the lengths on the host (cuDNN's packed-sequence API): one device sync
        # per forward on CUDA, kept on purpose, since running the padded sequence instead
        # would feed the padding into the backward direction
        lengths = real.sum(1).clamp_min(1).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.rnn(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[2])  # (B, L, 2H)
        pooled = h.sum(1) / lengths.to(h.device, h.dtype)[:, None]  # (B, 2H), padding outputs are 0
        return self.proj(pooled)  # (B, D)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier(z)


def build_classifier(name: BackboneName, num_classes: int, **kwargs: object) -> FlowClassifier:
    """The backbone called `name` (closed choice; an unknown name raises)."""
    if name == "cnn_resblock":
        return CNNResBlockClassifier(num_classes, **kwargs)  # type: ignore[arg-type]
    if name == "gru":
        return GRUClassifier(num_classes, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown backbone {name!r}: choose cnn_resblock or gru")
