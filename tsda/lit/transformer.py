"""`TransformerModule`: a class-conditional autoregressive transformer over packets, the
third generator family (issue 17 part 3), behind the `GenerativeModule` contract.

What is discrete is modelled as discrete (issue 17 part 2; `tsda.lit.packet_tokens`):
- **size and direction** are one categorical per packet over a vocabulary fitted to the
  training split at fit start: the V most frequent exact (direction, bytes) pairs plus
  (direction, byte bin) tokens for the rest, drawn back to bytes from the training
  histogram of the bin. Exact values are what tells real first packets from generated ones
  (handshake records, fixed requests, MTU segments); a joint token keeps each of them in its
  direction. The alternative, fully categorical over all 2 x 1,461 byte values, spends most
  of its output on values seen a handful of times; top-V plus bins keeps the head small
  (the top 256 pairs of a 2 % D1 training split hold 0.80 of its packets) and rare sizes
  at their marginal.
- **length** is the end-of-flow token of that categorical (flows of `n_packets` packets end
  without one), so lengths are modelled, not thresholded.
- **gaps** are a categorical over G quantile bins of the encoded (log-scaled) iat with a
  uniform draw inside the bin, predicted after the packet's token (the gap head sees it):
  no mixture parameters to keep positive, any shape of the gap distribution, and bins
  narrowest where gaps are dense.

Training: teacher forcing; the loss is the mean cross-entropy of the packet tokens (real
packets plus the end-of-flow position) plus that of the gap bins (packets after the first);
AdamW with a linear warm-up. `val_loss` (the same, on the validation split) is logged when
validation runs, as a diagnostic, not a `monitor`: like the other generators the module has
none, and `last.ckpt` is the one sampled. Measured on 10 % of D1
(experiments/generators/RESULTS.md): the validation NLL is lowest at epoch 11-13 and then
rises (5.35 -> 6.3 by epoch 40), while the samples get better up to epoch 30: a classifier
trained on them alone (TSTR) reaches 0.36 from the lowest-NLL checkpoint and 0.39 / 0.41 /
0.41 from those of epochs 20 / 30 / 40 (dropout 0.1); early stopping on the held-out NLL
stops too early. Sampling at temperature 0.9 raises it to 0.43.
Training draws no noise: dropout (default 0) is the only randomness beyond the data order,
torch's global generator as in the classifier.

Sampling (`sample`): L steps, each one batched pass of the new position for all flows at
once (keys and values of the earlier positions cached, `PacketTransformer.step`), a packet token then a gap bin per step with `temperature` and optional
`top_k`, every draw from the given `torch.Generator`; tokens never seen in training are
never drawn and a flow has at least one packet; the output goes through `FlowCodec.snap`,
so flows are valid. Unconditional (`conditional=False`): no class embedding, labels ignored.
Latent guidance (as the cGAN's and the diffusion model's) is not built: an autoregressive
sampler has no differentiable sample to guide, and rejection through `tsda sample
--label-with` serves an unconditional model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.lit import check_class_names
from tsda.lit.generative import GenerativeModule
from tsda.lit.packet_tokens import EOS, PacketVocabulary
from tsda.nets.transformer import PacketTransformer


def draw(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0,
         top_k: int | None = None) -> torch.Tensor:
    """One category per row of `logits (B, N)` (-inf = never): `(B,)` int64, from `generator`."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = torch.topk(logits, top_k, dim=1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)[:, 0]


class TransformerModule(GenerativeModule):
    """Autoregressive packet transformer over `FlowBatch(x (B, 3, L), lengths, labels)`.

    Args:
        num_classes, class_names: K and its names (linked from the datamodule by the CLI).
        n_packets, mtu, iat_unit, iat_max: the `FlowCodec` settings of the training data.
        d_model, n_layers, n_heads, ff_mult, dropout: the `PacketTransformer`.
        vocab_size: V exact (direction, bytes) tokens fitted to the training split.
        size_bins: byte bins per direction for the sizes outside the vocabulary.
        gap_bins: quantile bins of the encoded gap.
        lr, weight_decay, betas: AdamW settings.
        warmup_steps: optimizer steps of linear learning-rate warm-up (0 = none).
        conditional: False = train and sample without labels (no class embedding).
        seed: the run seed (linked by the CLI; training itself draws no noise).
    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        n_packets: int = 20,
        mtu: float = 1460.0,
        iat_unit: float = 1e-3,
        iat_max: float = 10.0,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        vocab_size: int = 256,
        size_bins: int = 32,
        gap_bins: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 0,
        conditional: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_class_names(class_names, num_classes)
        if warmup_steps < 0:
            raise ValueError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"model.lr must be > 0 and model.weight_decay >= 0, got {lr}, {weight_decay}")
        if mtu < 1:
            raise ValueError(f"model.mtu must be >= 1 byte, got {mtu}")
        self.save_hyperparameters()
        self.vocab = PacketVocabulary(vocab_size, size_bins, gap_bins, max_bytes=int(math.floor(mtu)))
        self.net = PacketTransformer(num_classes, self.vocab.n_tokens, gap_bins, n_packets, d_model=d_model,
                                     n_layers=n_layers, n_heads=n_heads, ff_mult=ff_mult, dropout=dropout,
                                     conditional=conditional)

    # -- the vocabulary -----------------------------------------------------------------
    def fit_vocabulary(self, loader: Iterable[FlowBatch]) -> None:
        """Fit the packet tokens and gap bins to the training flows of `loader`."""
        self.vocab.fit(loader, float(self.hparams.mtu))

    def on_fit_start(self) -> None:
        """Check the codec and fit the vocabulary once (kept when resuming or fine-tuning:
        a fitted vocabulary is what the trained heads mean)."""
        super().on_fit_start()
        if self.vocab.fitted:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_eval_dataloader"):
            raise ValueError("TransformerModule fits its vocabulary from the datamodule's training split: "
                             "fit with a FlowDataModule, or call fit_vocabulary(loader) first")
        self.fit_vocabulary(dm.train_eval_dataloader())

    # -- training -----------------------------------------------------------------------
    def _inputs(self, tokens: torch.Tensor, gaps: torch.Tensor, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs: the previous packet's token, gap bin and features, each
        shifted right by one with the start-of-flow row first: `(B, L)`, `(B, L)`, `(B, L, 3)`."""
        b = len(tokens)
        bos = torch.full((b, 1), self.net.bos, dtype=torch.long, device=tokens.device)
        no_gap = torch.full((b, 1), self.net.no_gap, dtype=torch.long, device=tokens.device)
        feats = x.transpose(1, 2)  # (B, L, 3)
        return (torch.cat([bos, tokens[:, :-1]], 1), torch.cat([no_gap, gaps[:, :-1]], 1),
                torch.cat([torch.zeros_like(feats[:, :1]), feats[:, :-1]], 1))

    def losses(self, batch: FlowBatch) -> dict[str, torch.Tensor]:
        """Teacher-forced cross-entropies: `packet` (tokens of the real packets and of the
        end-of-flow position), `gap` (bins of the packets after the first), `loss` (sum)."""
        tokens, gaps = self.vocab.tokens(batch, float(self.hparams.mtu))  # (B, L), (B, L)
        labels = batch.labels if self.conditional else torch.zeros_like(batch.labels)
        h = self.net(*self._inputs(tokens, gaps, batch.x), labels)  # (B, L, D)
        pos = torch.arange(batch.n_packets, device=batch.device)[None, :]  # (1, L)
        on_packet = pos <= batch.lengths[:, None]  # (B, L) real packets and the EOS position
        on_gap = (pos >= 1) & (pos < batch.lengths[:, None])  # (B, L)
        packet = F.cross_entropy(self.net.packet_logits(h[on_packet]), tokens[on_packet])
        gap_logits = self.net.gap_logits(h[on_gap], tokens[on_gap])  # (P, G)
        gap = F.cross_entropy(gap_logits, gaps[on_gap]) if len(gap_logits) else packet.new_zeros(())
        return {"loss": packet + gap, "loss_packet": packet, "loss_gap": gap}

    def training_step(self, batch: FlowBatch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict({f"train_{k}": v.detach() for k, v in out.items()}, on_step=False, on_epoch=True,
                      prog_bar=False, batch_size=len(batch))
        return out["loss"]

    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        out = self.losses(batch)
        self.log_dict({f"val_{k}": v for k, v in out.items()}, on_step=False, on_epoch=True,
                      prog_bar=True, batch_size=len(batch))

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=h.lr, weight_decay=h.weight_decay,
                                      betas=tuple(float(b) for b in h.betas))
        warmup = max(int(h.warmup_steps), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- sampling -----------------------------------------------------------------------
    def _step_logits(self, h: torch.Tensor, position: int) -> torch.Tensor:
        """`(B, T)` packet-token logits at `position` with the never-drawn tokens at -inf
        (unseen in training; EOS at position 0: a flow has a first packet)."""
        allowed = self.vocab.token_allowed.clone()  # (T,)
        if position == 0:
            allowed[EOS] = False
        return self.net.packet_logits(h).masked_fill(~allowed, float("-inf"))

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, temperature: float = 1.0,
               top_k: int | None = None) -> FlowBatch:
        """Valid encoded flows `x (B, 3, L)` of classes `labels (B,)` (see the module docstring).

        Options: `temperature` (> 0) divides the logits of both heads; `top_k` keeps the k
        most likely packet tokens at each step (None = all). An unconditional model ignores
        `labels` (returned as given).

        Raises:
            ValueError: a non-positive temperature or top_k; a model whose vocabulary was
                never fitted (not trained).
        """
        if not temperature > 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"temperature must be > 0 and top_k >= 1, got {temperature}, {top_k}")
        if not self.vocab.fitted:
            raise ValueError("TransformerModule.sample: the vocabulary is not fitted (train the model first)")
        labels = labels.to(self.device)
        was_training = self.training
        self.eval()
        b, n = len(labels), int(self.hparams.n_packets)
        fed = labels if self.conditional else torch.zeros_like(labels)
        token = torch.full((b,), self.net.bos, dtype=torch.long, device=self.device)  # (B,) the previous packet's
        gap = torch.full((b,), self.net.no_gap, dtype=torch.long, device=self.device)  # (B,)
        x = torch.zeros(b, 3, n, device=self.device)  # (B, 3, L)
        alive = torch.ones(b, dtype=torch.bool, device=self.device)  # (B,)
        gap_mask = ~self.vocab.gap_allowed  # (G,)
        cache = None
        for i in range(n):
            # 1. one pass of the new position (keys and values of the earlier ones cached)
            feats = x[:, :, i - 1] if i > 0 else x.new_zeros(b, 3)  # (B, 3)
            h, cache = self.net.step(token, gap, feats, fed, cache)  # (B, D)
            # 2. the packet token (EOS ends the flow), then its bytes and direction
            token = draw(self._step_logits(h, i), generator, temperature, top_k)  # (B,)
            size, direction = self.vocab.draw_packets(token, generator)  # (B,), (B,)
            alive = alive & (token != EOS)
            # 3. the gap bin given the token, then a gap inside the bin (the first gap is 0)
            if i > 0:
                gap = draw(self.net.gap_logits(h, token).masked_fill(gap_mask, float("-inf")), generator, temperature)
                iat = self.vocab.draw_gaps(gap, generator)  # (B,)
            else:
                gap, iat = torch.full_like(token, self.net.no_gap), torch.zeros(b, device=self.device)
            keep = alive.float()
            x[:, SIZE, i] = size / float(self.hparams.mtu) * keep
            x[:, DIRECTION, i] = direction * keep
            x[:, IAT, i] = iat * keep
        self.train(was_training)
        return self.codec.snap(x).replace(labels=labels)
