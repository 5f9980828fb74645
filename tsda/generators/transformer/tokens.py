"""`PacketVocabulary`: what the transformer generator (`tsda.generators.transformer.module`) predicts per
packet, as tokens fitted once to the training split and kept as buffers (so a checkpoint
alone can sample).

Packet tokens (one categorical per position; T = 1 + V + 2 NB):

    0                     end of flow (EOS): the flow has as many packets as positions before it
    1 .. V                an exact (direction, bytes) pair: the V most frequent of the training split
    V + 1 .. V + 2 NB     (direction, byte bin) for every other size: NB equal-width bins of
                          [0, max_bytes] per direction

Why joint with the direction and exact: real first packets take exact, app-specific sizes
(TLS records, fixed requests, MTU-sized segments) in one direction, and a continuous output
or an independent direction head blurs exactly that. A bin token is drawn back
to bytes from the training histogram of the bin's non-vocabulary sizes (`residual`), so even
the rare sizes keep their training marginal, and every byte value belongs to exactly one
token (the tokenisation is a partition: `byte_token`). Tokens never seen in training are
masked when sampling (`token_allowed`).

Gap bins: G quantile bins of the encoded iat of the training packets after the first
(`gap_edges (G + 1,)`); a drawn bin becomes a uniform draw inside it. The encoded iat is
already log-scaled (`FlowCodec`), so quantile bins are fine where gaps are dense (the
microsecond bursts) and coarse only in the sparse tail. Duplicate edges (atoms) give empty
bins, which are masked like unseen tokens (`gap_allowed`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch

#: the end-of-flow token
EOS = 0
#: at most this many gap values are kept to fit the quantile bins (a strided subsample beyond)
MAX_GAP_VALUES = 4_000_000


class PacketVocabulary(nn.Module):
    """Packet tokens and gap bins of a training split (buffers; `fit` fills them).

    Args:
        vocab_size: V exact (direction, bytes) tokens.
        size_bins: NB byte bins per direction for the other sizes.
        gap_bins: G quantile bins of the encoded gap.
        max_bytes: M, the largest size in bytes (`floor(mtu)`): sizes are 0 .. M.
    """

    # buffers (`__init__`)
    exact_bytes: torch.Tensor
    exact_dir: torch.Tensor
    byte_token: torch.Tensor
    residual: torch.Tensor
    token_count: torch.Tensor
    gap_edges: torch.Tensor
    gap_count: torch.Tensor

    def __init__(self, vocab_size: int = 256, size_bins: int = 32, gap_bins: int = 64, max_bytes: int = 1460) -> None:
        super().__init__()
        if vocab_size < 0 or size_bins < 1 or gap_bins < 1 or max_bytes < 1:
            raise ValueError("PacketVocabulary needs vocab_size >= 0, size_bins >= 1, gap_bins >= 1, max_bytes >= 1")
        if size_bins > max_bytes + 1:
            raise ValueError(f"size_bins={size_bins} exceeds the {max_bytes + 1} byte values")
        self.vocab_size, self.size_bins, self.gap_bins, self.max_bytes = vocab_size, size_bins, gap_bins, max_bytes
        self.register_buffer("exact_bytes", torch.full((vocab_size,), -1, dtype=torch.long))  # (V,), -1 unused
        self.register_buffer("exact_dir", torch.zeros(vocab_size))  # (V,) +-1, 0 unused
        self.register_buffer("byte_token", self._bin_tokens())  # (2, M + 1) token of (direction index, bytes)
        self.register_buffer("residual", torch.zeros(2, max_bytes + 1))  # (2, M + 1) counts outside the vocabulary
        self.register_buffer("token_count", torch.zeros(self.n_tokens))  # (T,)
        self.register_buffer("gap_edges", torch.zeros(gap_bins + 1))  # (G + 1,)
        self.register_buffer("gap_count", torch.zeros(gap_bins))  # (G,)

    @property
    def n_tokens(self) -> int:
        """T = 1 + V + 2 NB."""
        return 1 + self.vocab_size + 2 * self.size_bins

    @property
    def fitted(self) -> bool:
        return bool(self.token_count.sum() > 0)

    @property
    def token_allowed(self) -> torch.Tensor:
        """`(T,)` bool: tokens seen in training (the others are never drawn)."""
        return self.token_count > 0

    @property
    def gap_allowed(self) -> torch.Tensor:
        """`(G,)` bool: gap bins holding training gaps."""
        return self.gap_count > 0

    def _bin_tokens(self) -> torch.Tensor:
        """`(2, M + 1)` the bin token of every (direction index, bytes)."""
        nb, m = self.size_bins, self.max_bytes
        bins = (torch.arange(m + 1) * nb // (m + 1)).clamp_max(nb - 1)  # (M + 1,)
        return 1 + self.vocab_size + torch.arange(2)[:, None] * nb + bins[None, :]

    # -- fitting --------------------------------------------------------------------------
    def packet_fields(self, batch: FlowBatch, mtu: float) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, L)` int64 bytes (rounded, 0 .. M) and `(B, L)` int64 direction index (0: +1,
        1: -1) of every position (padding reads as bytes 0, index 0)."""
        size = torch.round(batch.x[:, SIZE] * mtu).clamp(0, self.max_bytes).long()  # (B, L)
        return size, (batch.x[:, DIRECTION] < 0).long()

    @torch.no_grad()
    def fit(self, batches: Iterable[FlowBatch], mtu: float) -> None:
        """Fit the tokens and gap bins to the training flows of `batches` (in place)."""
        device = self.token_count.device
        counts = torch.zeros(2, self.max_bytes + 1, device=device, dtype=torch.float64)  # (2, M + 1)
        eos, gaps = 0.0, []
        for batch in batches:
            batch = batch.to(device)
            real = batch.mask()  # (B, L)
            size, d = self.packet_fields(batch, mtu)
            counts.index_put_(
                (d[real], size[real]), torch.ones(int(real.sum()), device=device, dtype=counts.dtype), accumulate=True
            )
            eos += float((batch.lengths < batch.n_packets).sum())
            gaps.append(batch.x[:, IAT, 1:][real[:, 1:]].float())
        if counts.sum() == 0:
            raise ValueError("PacketVocabulary.fit: the training split holds no packets")
        self._fit_sizes(counts, eos)
        self._fit_gaps(torch.cat(gaps))

    def _fit_sizes(self, counts: torch.Tensor, eos: float) -> None:
        """Vocabulary, token map, residual histogram and token counts from `counts (2, M + 1)`."""
        flat = counts.flatten()  # (2 (M + 1),)
        order = torch.sort(flat, descending=True, stable=True).indices
        top = order[: min(self.vocab_size, int((flat > 0).sum()))]  # (V',) most frequent seen pairs
        d, size = top // (self.max_bytes + 1), top % (self.max_bytes + 1)
        self.exact_bytes.fill_(-1)
        self.exact_dir.zero_()
        self.exact_bytes[: len(top)] = size
        self.exact_dir[: len(top)] = 1.0 - 2.0 * d.float()
        token = self._bin_tokens().to(counts.device)  # (2, M + 1)
        token[d, size] = 1 + torch.arange(len(top), device=counts.device)
        self.byte_token.copy_(token)
        residual = counts.clone()
        residual[d, size] = 0
        self.residual.copy_(residual.float())
        tc = torch.zeros(self.n_tokens, device=counts.device, dtype=torch.float64)
        tc.index_add_(0, token.flatten(), flat)
        tc[EOS] = eos
        self.token_count.copy_(tc.float())

    def _fit_gaps(self, values: torch.Tensor) -> None:
        """Quantile edges `(G + 1,)` and per-bin counts `(G,)` of encoded gaps `values (N,)`."""
        if len(values) == 0:  # only one-packet flows: one bin at 0
            self.gap_edges.zero_()
            self.gap_count.zero_()
            self.gap_count[0] = 1.0
            return
        if len(values) > MAX_GAP_VALUES:
            values = values[:: len(values) // MAX_GAP_VALUES + 1]
        ordered = torch.sort(values).values  # (N,)
        q = torch.linspace(0, 1, self.gap_bins + 1, device=values.device)  # (G + 1,)
        self.gap_edges.copy_(ordered[(q * (len(ordered) - 1)).round().long()])
        self.gap_count.copy_(torch.bincount(self.gap_bin(values), minlength=self.gap_bins).float())

    # -- tokens of real flows -------------------------------------------------------------
    def gap_bin(self, iat: torch.Tensor) -> torch.Tensor:
        """Encoded gaps `(...)` -> their bins `(...)` int64 in [0, G)."""
        inner = self.gap_edges[1:-1].contiguous()
        return torch.searchsorted(inner, iat.contiguous(), right=True)

    def tokens(self, batch: FlowBatch, mtu: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The targets of `batch`: packet tokens `(B, L)` int64 (EOS at the position of
        `lengths` and after) and gap bins `(B, L)` int64 (`G`, i.e. none, at position 0)."""
        size, d = self.packet_fields(batch, mtu)
        tokens = torch.where(batch.mask(), self.byte_token[d, size], EOS)  # (B, L)
        gaps = self.gap_bin(batch.x[:, IAT])  # (B, L)
        gaps[:, 0] = self.gap_bins
        return tokens, gaps

    # -- drawing --------------------------------------------------------------------------
    def draw_packets(self, tokens: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Packet tokens `(B,)` -> bytes `(B,)` float and direction `(B,)` float (+-1).

        Exact tokens give their value; a bin token draws bytes from the bin's training
        histogram (`residual`); EOS gives (0 bytes, +1), to be masked by the caller. One
        `torch.multinomial` over `(B, M + 1)` weights per call, from `generator`."""
        v, nb = self.vocab_size, self.size_bins
        exact = (tokens >= 1) & (tokens <= v)  # (B,)
        binned = tokens > v  # (B,)
        d = ((tokens - v - 1).clamp_min(0) // nb).clamp_max(1)  # (B,) direction index of bin tokens
        weights = self.residual[d] * (self.byte_token[d] == tokens[:, None])  # (B, M + 1)
        empty = weights.sum(1) <= 0  # (B,) EOS, exact tokens (and never-seen bins)
        weights = torch.where(empty[:, None], torch.ones_like(weights), weights)
        drawn = torch.multinomial(weights, 1, generator=generator)[:, 0]  # (B,)
        idx = (tokens - 1).clamp(0, max(v - 1, 0))  # (B,)
        exact_bytes = self.exact_bytes[idx] if v else torch.zeros_like(tokens)
        exact_dir = self.exact_dir[idx] if v else torch.ones_like(tokens, dtype=torch.float)
        size = torch.where(exact, exact_bytes, torch.where(binned, drawn, 0)).float()
        direction = torch.where(exact, exact_dir, torch.where(binned, 1.0 - 2.0 * d.float(), 1.0))
        return size, direction

    def draw_gaps(self, bins: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gap bins `(B,)` -> encoded gaps `(B,)`, uniform inside the bin (one `torch.rand`)."""
        lo, hi = self.gap_edges[bins], self.gap_edges[bins + 1]  # (B,)
        u = torch.rand(bins.shape, generator=generator, device=bins.device)  # (B,)
        return lo + u * (hi - lo)
