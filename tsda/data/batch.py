"""`FlowBatch`: the canonical tensor form of flows that models and augmentations exchange."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

#: channel order of `FlowBatch.x`
SIZE, DIRECTION, IAT = 0, 1, 2
CHANNELS = ("size", "direction", "iat")


@dataclass
class FlowBatch:
    """A batch of encoded flows.

    Attributes:
        x: `(B, C=3, L)` float32 channels (size, direction, iat) as `FlowCodec` encodes them:
            size in [0, 1] (bytes / MTU), direction +1 (client to server) / -1 (server to
            client) on real packets and 0 on padding, iat = log-scaled gap to the previous
            packet (0 for the first packet and on padding).
        lengths: `(B,)` int64 real packets per flow; positions `>= lengths` are zero.
        labels: `(B,)` int64 class index (for mixed samples: the dominant class).
        soft_labels: optional `(B, K)` float32 target distribution, set by mixing
            augmentations (Mixup across classes); the classifier then trains on it.
        rows: optional `(B,)` int64 row of each flow in the training split, on batches
            drawn from it (`FlowDataModule` keeps them on its training tensors, so every
            `index` of those carries them): what lets an augmentation look up state kept
            per training flow (a pool of each flow's variations). Carried by `index`, `to`,
            `replace` and `cat` (when every part has them); None on generated flows.
    """

    x: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.x.shape[1] != len(CHANNELS):
            raise ValueError(f"FlowBatch.x must be (B, 3, L), got {tuple(self.x.shape)}")
        b = self.x.shape[0]
        if self.lengths.shape != (b,) or self.labels.shape != (b,):
            raise ValueError(
                f"FlowBatch lengths {tuple(self.lengths.shape)} and labels {tuple(self.labels.shape)} must be ({b},)"
            )
        if self.soft_labels is not None and (self.soft_labels.ndim != 2 or self.soft_labels.shape[0] != b):
            raise ValueError(f"FlowBatch.soft_labels must be (B={b}, K)")
        if self.rows is not None and self.rows.shape != (b,):
            raise ValueError(f"FlowBatch.rows {tuple(self.rows.shape)} must be ({b},)")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_packets(self) -> int:
        """`L`."""
        return int(self.x.shape[2])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> FlowBatch:
        soft = None if self.soft_labels is None else self.soft_labels.to(device)
        rows = None if self.rows is None else self.rows.to(device)
        return FlowBatch(self.x.to(device), self.lengths.to(device), self.labels.to(device), soft, rows)

    def index(self, idx: torch.Tensor | slice) -> FlowBatch:
        """Rows `idx` (`(b,)` int64 or bool, or a slice: views)."""
        soft = None if self.soft_labels is None else self.soft_labels[idx]
        rows = None if self.rows is None else self.rows[idx]
        return FlowBatch(self.x[idx], self.lengths[idx], self.labels[idx], soft, rows)

    def targets(self, num_classes: int) -> torch.Tensor:
        """`(B, K)` float target distribution: `soft_labels`, or one-hot `labels`."""
        if self.soft_labels is not None:
            return self.soft_labels
        return torch.nn.functional.one_hot(self.labels, num_classes).to(self.x.dtype)

    def replace(self, **changes: torch.Tensor) -> FlowBatch:
        return replace(self, **changes)

    def mask(self) -> torch.Tensor:
        """`(B, L)` bool, True on real packets."""
        pos = torch.arange(self.n_packets, device=self.x.device)
        return pos[None, :] < self.lengths[:, None]

    @staticmethod
    def cat(batches: list[FlowBatch], num_classes: int | None = None) -> FlowBatch:
        """Concatenate along B; soft labels are kept when any part has them (needs K),
        training rows when every part has them (a generated part has none)."""
        soft = None
        if any(b.soft_labels is not None for b in batches):
            k = num_classes or next(b.soft_labels.shape[1] for b in batches if b.soft_labels is not None)
            soft = torch.cat([b.targets(k) for b in batches])
        parts = [b.rows for b in batches if b.rows is not None]
        rows = torch.cat(parts) if len(parts) == len(batches) else None
        return FlowBatch(
            torch.cat([b.x for b in batches]),
            torch.cat([b.lengths for b in batches]),
            torch.cat([b.labels for b in batches]),
            soft,
            rows,
        )
