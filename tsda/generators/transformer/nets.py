"""`PacketTransformer`: a small class-conditional causal transformer over a flow's packets
(a plain `nn.Module`; tokens, losses and sampling live in `tsda.generators.transformer.module`).

One position per packet. The input at position `i` describes packet `i - 1` (a learned
start-of-flow row at `i = 0`), so the output at `i` predicts packet `i` from the packets
before it (teacher forcing in training, one batched pass per position when sampling):

    e_i = tok_emb(token_{i-1}) + gap_emb(gap_bin_{i-1}) + feat_proj(x_{i-1})      # (B, S, D)
          + pos_emb(i) + class_emb(y)                                              # (B, S, D)
    h   = TransformerEncoder(e, causal mask)                                       # (B, S, D)
    packet logits  = packet_head(h_i)                               # (B, S, T) over packet tokens
    gap logits     = gap_head(h_i + given_emb(token_i))             # (B, S, G) over gap bins

`token` is the packet token (end of flow, an exact (direction, bytes) value or a (direction,
byte bin) value, `tsda.generators.transformer.tokens`), `gap_bin` the quantile bin of the packet's
encoded gap, `x` the packet's encoded (size, direction, iat) as floats, which carries the
exact size inside a bin token and the exact gap inside its bin. The gap head also sees the
packet's own token (the drawn one when sampling), so a packet's gap depends on what packet
it is (a server's reply after a request, a burst of MTU-sized segments), not only on the
history. The class is an embedding added at every position (`conditional=False`: none at
all, and the labels given are ignored).

The layers are our own pre-norm blocks (`CausalBlock`: attention through
`F.scaled_dot_product_attention`, then a GELU MLP) rather than `nn.TransformerEncoder`,
for one reason: sampling. `step` runs one new position against the keys and values cached
from the earlier ones, so drawing L packets costs L single-position passes instead of L
passes over growing prefixes (~10x less at L = 20: 1,024 flows in about a second on a CPU
core instead of seven). `forward` (training, all positions at once) and `step` compute the
same function (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: per block, the cached keys and values of the positions so far: 2 x `(B, H, P, D / H)`
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalBlock(nn.Module):
    """Pre-norm transformer block: `e + attn(norm(e))`, then `e + mlp(norm(e))`.

    Args:
        d_model, n_heads: width and attention heads (`d_model % n_heads == 0`).
        ff: hidden width of the MLP.
        dropout: on the attention and MLP outputs (torch's global generator; 0 = none).
    """

    def __init__(self, d_model: int, n_heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, e: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`e (B, S, D)` -> `(B, S, D)` and the keys and values of all positions so far.

        Without `past`: S positions attend causally to each other. With `past` (keys and
        values `(B, H, P, D / H)` of P earlier positions): one new position (S = 1) attends
        to them and to itself.
        """
        b, s, d = e.shape
        qkv = self.qkv(self.norm1(e)).view(b, s, 3, self.n_heads, d // self.n_heads)  # (B, S, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, Dh)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)  # (B, H, P + 1, Dh)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and s > 1)  # (B, H, S, Dh)
        e = e + self.drop(self.proj(att.transpose(1, 2).reshape(b, s, d)))  # (B, S, D)
        e = e + self.drop(self.mlp(self.norm2(e)))
        return e, (k, v)


class PacketTransformer(nn.Module):
    """Causal transformer over packet positions.

    Args:
        num_classes: K (rows of the class embedding; unused when `conditional` is False).
        n_tokens: T, size of the packet-token vocabulary (the input table has one more
            row: the start-of-flow token `bos = T`).
        n_gap_bins: G, gap bins (the input table has one more row: `no_gap = G`, the gap
            of the first packet, which is always 0 and not modelled).
        n_packets: L, the most positions (learned position embedding of L rows).
        d_model, n_layers, n_heads: transformer width, depth and attention heads.
        ff_mult: feed-forward width as a multiple of `d_model`.
        dropout: dropout of the transformer layers (torch's global generator, as the
            classifier's dropout; 0 = none).
        conditional: False = no class embedding (an unconditional generator).
    """

    def __init__(
        self,
        num_classes: int,
        n_tokens: int,
        n_gap_bins: int,
        n_packets: int,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        conditional: bool = True,
    ) -> None:
        super().__init__()
        if min(num_classes, n_tokens, n_gap_bins, n_packets, d_model, n_layers, n_heads, ff_mult) < 1:
            raise ValueError("PacketTransformer sizes must all be >= 1")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_tokens, self.n_gap_bins, self.n_packets = n_tokens, n_gap_bins, n_packets
        self.tok_emb = nn.Embedding(n_tokens + 1, d_model)  # + bos
        self.gap_emb = nn.Embedding(n_gap_bins + 1, d_model)  # + no_gap
        self.feat_proj = nn.Linear(3, d_model)
        self.pos_emb = nn.Embedding(n_packets, d_model)
        self.class_emb = nn.Embedding(num_classes, d_model) if conditional else None
        self.blocks = nn.ModuleList(CausalBlock(d_model, n_heads, ff_mult * d_model, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.packet_head = nn.Linear(d_model, n_tokens)
        self.given_emb = nn.Embedding(n_tokens, d_model)
        self.gap_head = nn.Linear(d_model, n_gap_bins)

    @property
    def bos(self) -> int:
        """Input token of position 0 (start of flow)."""
        return self.n_tokens

    @property
    def no_gap(self) -> int:
        """Input gap bin of the first packet (whose gap is always 0)."""
        return self.n_gap_bins

    def embed(
        self, tokens: torch.Tensor, gaps: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        """Input embeddings `(B, S, D)` of positions `start .. start + S - 1` (arguments as
        in `forward`)."""
        s = tokens.shape[1]
        if start + s > self.n_packets:
            raise ValueError(f"at most {self.n_packets} positions, got {start + s}")
        e = self.tok_emb(tokens) + self.gap_emb(gaps) + self.feat_proj(feats)  # (B, S, D)
        e = e + self.pos_emb.weight[start : start + s][None]  # (B, S, D)
        if self.class_emb is not None:
            e = e + self.class_emb(labels)[:, None, :]  # (B, S, D)
        return e

    def forward(
        self, tokens: torch.Tensor, gaps: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Hidden states of all positions at once (training).

        Args:
            tokens: `(B, S)` int64 packet token of the previous packet (`bos` at 0), S <= L.
            gaps: `(B, S)` int64 gap bin of the previous packet (`no_gap` at 0 and 1).
            feats: `(B, S, 3)` float encoded (size, direction, iat) of the previous packet.
            labels: `(B,)` int64 classes (ignored when unconditional).

        Returns:
            `(B, S, D)` hidden states; position i predicts packet i.
        """
        e = self.embed(tokens, gaps, feats, labels)  # (B, S, D)
        for block in self.blocks:
            e, _ = block(e)
        return self.norm(e)

    def step(
        self,
        tokens: torch.Tensor,
        gaps: torch.Tensor,
        feats: torch.Tensor,
        labels: torch.Tensor,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """The hidden state of the next position (sampling), given the cache of the earlier ones.

        Args:
            tokens, gaps: `(B,)` int64 token and gap bin of the previous packet.
            feats: `(B, 3)` its encoded features; labels: `(B,)`.
            cache: what the previous `step` returned (None at position 0).

        Returns:
            `(B, D)` hidden state of the new position and the cache including it.
        """
        start = 0 if cache is None else cache[0][0].shape[2]
        e = self.embed(tokens[:, None], gaps[:, None], feats[:, None, :], labels, start)  # (B, 1, D)
        new: KVCache = []
        for i, block in enumerate(self.blocks):
            e, kv = block(e, None if cache is None else cache[i])
            new.append(kv)
        return self.norm(e)[:, 0], new

    def packet_logits(self, h: torch.Tensor) -> torch.Tensor:
        """`h (..., D)` -> `(..., T)` logits of the packet token."""
        return self.packet_head(h)

    def gap_logits(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`h (..., D)` and the packet's own token `tokens (...)` -> `(..., G)` gap-bin logits."""
        return self.gap_head(h + self.given_emb(tokens))
