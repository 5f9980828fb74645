"""`FlowCodec`: real units (bytes, directions, seconds) <-> `(B, 3, L)` float32 tensors.

Encoding (channel order size, direction, iat; positions `>= length` are 0):
    size      = clip(bytes, 0, mtu) / mtu                     in [0, 1]
    direction = +1 client to server (tcbench 0), -1 server to client (tcbench 1)
    iat       = log1p(gap_seconds / iat_unit) / log1p(iat_max / iat_unit)
                gap = time of packet i - time of packet i-1 (0 for the first packet);
                with the defaults (unit 1 ms, max 10 s) a 10 s gap encodes to 1.0 and larger
                gaps above 1 (no clipping, so decoding inverts exactly).

Decoding snaps what a generator produces into a valid flow: the length is the first
position whose |direction| < 0.5 (padding only at the end), sizes are clipped to
[0, mtu] and rounded to whole bytes, directions are the sign, negative gaps become 0 and
times are the cumulative sum of gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.table import FlowTable


@dataclass(frozen=True)
class FlowCodec:
    """Encode and decode flows.

    Args:
        n_packets: `L`, packets per encoded flow.
        mtu: bytes that encode to 1.0; larger payloads (merged segments) are clipped.
        iat_unit: seconds; gaps are measured in this unit before the log.
        iat_max: seconds that encode to 1.0.
    """

    n_packets: int = 20
    mtu: float = 1460.0
    iat_unit: float = 1e-3
    iat_max: float = 10.0

    def __post_init__(self) -> None:
        if self.n_packets < 1:
            raise ValueError(f"FlowCodec.n_packets must be >= 1, got {self.n_packets}")
        if self.mtu <= 0 or self.iat_unit <= 0 or self.iat_max <= self.iat_unit:
            raise ValueError("FlowCodec needs mtu > 0 and iat_max > iat_unit > 0")

    #: the longest gap `snap` keeps (seconds); longer or infinite generated gaps are cut to it
    MAX_GAP_S: ClassVar[float] = 3600.0

    @property
    def _iat_norm(self) -> float:
        return float(np.log1p(self.iat_max / self.iat_unit))

    def gaps_from_iat(self, iat: torch.Tensor) -> torch.Tensor:
        """Encoded iat `(..., L)` -> gaps in seconds `(..., L)` (the decode formula, in torch)."""
        return torch.expm1(iat.clamp_min(0.0) * self._iat_norm) * self.iat_unit

    def iat_from_gaps(self, gaps: torch.Tensor) -> torch.Tensor:
        """Gaps in seconds `(..., L)` -> encoded iat `(..., L)` (the encode formula, in torch)."""
        return torch.log1p(gaps.clamp_min(0.0) / self.iat_unit) / self._iat_norm

    def encode_arrays(
        self,
        sizes: np.ndarray,
        directions: np.ndarray,
        times: np.ndarray,
        lengths: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode padded `(N, P)` arrays; returns `x (N, 3, L)` float32 and `lengths (N,)`."""
        n = sizes.shape[0]
        L = self.n_packets
        p = min(sizes.shape[1], L)
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), L)
        real = np.arange(L)[None, :] < lengths[:, None]  # (N, L)
        x = np.zeros((n, 3, L), dtype=np.float32)
        size = np.zeros((n, L))
        size[:, :p] = sizes[:, :p]
        dirs = np.zeros((n, L))
        dirs[:, :p] = directions[:, :p]
        t = np.zeros((n, L))
        t[:, :p] = times[:, :p]
        gaps = np.diff(t, axis=1, prepend=t[:, :1])  # (N, L), first gap 0
        gaps = np.clip(gaps, 0.0, None)
        x[:, SIZE] = np.clip(size, 0.0, self.mtu) / self.mtu
        x[:, DIRECTION] = np.where(dirs > 0, -1.0, 1.0)
        x[:, IAT] = np.log1p(gaps / self.iat_unit) / self._iat_norm
        x *= real[:, None, :]
        return torch.from_numpy(x), torch.from_numpy(lengths)

    def encode(self, table: FlowTable) -> FlowBatch:
        """Encode a table: `FlowBatch` with `x (N, 3, L)` on CPU."""
        x, lengths = self.encode_arrays(table.sizes, table.directions, table.times, table.lengths)
        return FlowBatch(x, lengths, torch.from_numpy(table.labels.astype(np.int64)))

    def snap(self, x: torch.Tensor) -> FlowBatch:
        """Turn raw generator output `(B, 3, L)` into a valid encoded batch (labels zero).

        The length is the first position with |direction| < 0.5, at least 1 (a flow has a
        first packet: a generator unsure of it still yields a valid one-packet flow); sizes
        are clipped to [0, 1], directions become +-1, iat is clipped to [0, the encoding of
        `MAX_GAP_S`] and the first gap set to 0. NaN reads as 0 and +-inf as the bounds, so
        any tensor snaps to valid, finite flows.
        """
        if x.ndim != 3 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, L), got {tuple(x.shape)}")
        x = torch.nan_to_num(x.detach().float(), nan=0.0)  # (B, 3, L); +-inf -> the largest finite floats
        present = x[:, DIRECTION].abs() >= 0.5  # (B, L)
        lengths = torch.cumprod(present.long(), dim=1).sum(dim=1).clamp_min(1)  # (B,) run of leading present
        pos = torch.arange(x.shape[2], device=x.device)
        real = (pos[None, :] < lengths[:, None]).float()  # (B, L)
        out = torch.empty_like(x)
        out[:, SIZE] = x[:, SIZE].clamp(0.0, 1.0)
        out[:, DIRECTION] = torch.where(x[:, DIRECTION] >= 0, 1.0, -1.0)
        iat = x[:, IAT].clamp(0.0, float(self.iat_from_gaps(torch.tensor(self.MAX_GAP_S))))
        iat[:, 0] = 0.0
        out[:, IAT] = iat
        out = out * real[:, None, :]
        labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return FlowBatch(out, lengths, labels)

    def decode_arrays(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode `x (N, 3, L)` to padded sizes (bytes), directions (0/1), times (s)."""
        xs = x.detach().cpu().double().numpy()
        lens = lengths.detach().cpu().numpy().astype(np.int64)
        real = np.arange(xs.shape[2])[None, :] < lens[:, None]  # (N, L)
        sizes = np.rint(np.clip(xs[:, SIZE], 0.0, 1.0) * self.mtu) * real
        directions = ((xs[:, DIRECTION] < 0) & real).astype(np.int8)
        gaps = np.expm1(np.clip(xs[:, IAT], 0.0, None) * self._iat_norm) * self.iat_unit
        gaps[:, 0] = 0.0
        times = np.cumsum(gaps * real, axis=1) * real
        return sizes, directions, times

    def decode(self, batch: FlowBatch, class_names: tuple[str, ...]) -> FlowTable:
        """Decode a batch into a `FlowTable` with real units."""
        sizes, directions, times = self.decode_arrays(batch.x, batch.lengths)
        lengths = batch.lengths.detach().cpu().numpy().astype(np.int64)
        return FlowTable(
            labels=batch.labels.detach().cpu().numpy().astype(np.int64),
            class_names=tuple(class_names),
            sizes=sizes,
            directions=directions,
            times=times,
            lengths=lengths,
            packets=lengths.copy(),
        )
