"""`TransformerModule`: a class-conditional autoregressive transformer over packets, the
third generator family, behind the `GenerativeModule` contract.

What is discrete is modelled as discrete (`tsda.generators.transformer.tokens`):
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
none, and `last.ckpt` is the one sampled: the held-out NLL bottoms out well before the
samples stop improving, so early stopping on it would stop too early
(experiments/generators/RESULTS.md).
Training draws no noise: dropout (default 0) is the only randomness beyond the data order,
torch's global generator as in the classifier.

Sampling (`sample`): L steps, each one batched pass of the new position for all flows at
once (keys and values of the earlier positions cached, `PacketTransformer.step`), a packet token then a gap bin per step with `temperature` and optional
`top_k`, every draw from the given `torch.Generator`; tokens never seen in training are
never drawn and a flow has at least one packet; the output goes through `FlowCodec.snap`,
so flows are valid. Unconditional (`conditional=False`): no class embedding, labels ignored.
Variation (`vary`) runs the same loop with some positions taken from a real flow instead
of drawn (a kept prefix, or kept packets), so the model redraws the rest given them.
Latent guidance (as the cGAN's and the diffusion model's) is not built: an autoregressive
sampler has no differentiable sample to guide, and rejection through `tsda sample
--label_with` serves an unconditional model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.generators.base import GenerativeModule
from tsda.generators.regions import eval_mode
from tsda.generators.transformer.nets import PacketTransformer
from tsda.generators.transformer.tokens import EOS, PacketVocabulary
from tsda.generators.variation import run_variation
from tsda.lit import check_class_names

#: how `TransformerModule.vary` keeps parts of a flow
VaryHow = Literal["continuation", "resample"]
VARY_HOWS: tuple[str, ...] = get_args(VaryHow)


def draw(
    logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int | None = None
) -> torch.Tensor:
    """One category per row of `logits (B, N)` (-inf = never): `(B,)` int64, from `generator`."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = torch.topk(logits, top_k, dim=1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)[:, 0]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values (B, L)` where `mask (B, L)` is set (0 where it is nowhere)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


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
        self.vocab = PacketVocabulary(vocab_size, size_bins, gap_bins, max_bytes=math.floor(mtu))
        self.net = PacketTransformer(
            num_classes,
            self.vocab.n_tokens,
            gap_bins,
            n_packets,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            ff_mult=ff_mult,
            dropout=dropout,
            conditional=conditional,
        )

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
            raise ValueError(
                "TransformerModule fits its vocabulary from the datamodule's training split: "
                "fit with a FlowDataModule, or call fit_vocabulary(loader) first"
            )
        self.fit_vocabulary(dm.train_eval_dataloader())

    # -- training -----------------------------------------------------------------------
    def _inputs(
        self, tokens: torch.Tensor, gaps: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forcing inputs: the previous packet's token, gap bin and features, each
        shifted right by one with the start-of-flow row first: `(B, L)`, `(B, L)`, `(B, L, 3)`."""
        b = len(tokens)
        bos = torch.full((b, 1), self.net.bos, dtype=torch.long, device=tokens.device)
        no_gap = torch.full((b, 1), self.net.no_gap, dtype=torch.long, device=tokens.device)
        feats = x.transpose(1, 2)  # (B, L, 3)
        return (
            torch.cat([bos, tokens[:, :-1]], 1),
            torch.cat([no_gap, gaps[:, :-1]], 1),
            torch.cat([torch.zeros_like(feats[:, :1]), feats[:, :-1]], 1),
        )

    def losses(self, batch: FlowBatch) -> dict[str, torch.Tensor]:
        """Teacher-forced cross-entropies: `packet` (tokens of the real packets and of the
        end-of-flow position), `gap` (bins of the packets after the first), `loss` (sum)."""
        tokens, gaps = self.vocab.tokens(batch, float(self.hparams.mtu))  # (B, L), (B, L)
        labels = batch.labels if self.conditional else torch.zeros_like(batch.labels)
        h = self.net(*self._inputs(tokens, gaps, batch.x), labels)  # (B, L, D)
        pos = torch.arange(batch.n_packets, device=batch.device)[None, :]  # (1, L)
        on_packet = pos <= batch.lengths[:, None]  # (B, L) real packets and the EOS position
        on_gap = (pos >= 1) & (pos < batch.lengths[:, None])  # (B, L)
        # every position's cross-entropy and a masked mean: picking the positions with the
        # masks (`h[on_packet]`) has a data-dependent shape, a device sync per step on CUDA
        packet = _masked_mean(
            F.cross_entropy(self.net.packet_logits(h).transpose(1, 2), tokens, reduction="none"), on_packet
        )
        gap_targets = torch.where(on_gap, gaps, 0)  # (B, L): position 0's "no gap" is no class of the head
        gap = _masked_mean(
            F.cross_entropy(self.net.gap_logits(h, tokens).transpose(1, 2), gap_targets, reduction="none"), on_gap
        )  # 0 without gaps (one-packet flows)
        return {"loss": packet + gap, "loss_packet": packet, "loss_gap": gap}

    def training_step(self, batch: FlowBatch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        self.log_dict(
            {f"train_{k}": v.detach() for k, v in out.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=False,
            batch_size=len(batch),
        )
        return out["loss"]

    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        out = self.losses(batch)
        self.log_dict(
            {f"val_{k}": v for k, v in out.items()}, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch)
        )

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hparams
        beta1, beta2 = (float(b) for b in h.betas)
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=h.lr, weight_decay=h.weight_decay, betas=(beta1, beta2))
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

    def _check_sampling(self, temperature: float, top_k: int | None) -> None:
        if not temperature > 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"temperature must be > 0 and top_k >= 1, got {temperature}, {top_k}")
        if not self.vocab.fitted:
            raise ValueError(f"{type(self).__name__}: the vocabulary is not fitted (train the model first)")

    @torch.no_grad()
    def sample(  # type: ignore[override]  # options are each family's own, passed through by the callers
        self, labels: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int | None = None
    ) -> FlowBatch:
        """Valid encoded flows `x (B, 3, L)` of classes `labels (B,)` (see the module docstring).

        Options: `temperature` (> 0) divides the logits of both heads; `top_k` keeps the k
        most likely packet tokens at each step (None = all). An unconditional model ignores
        `labels` (returned as given).

        Raises:
            ValueError: a non-positive temperature or top_k; a model whose vocabulary was
                never fitted (not trained).
        """
        self._check_sampling(temperature, top_k)
        labels = labels.to(self.device)
        with eval_mode(self):
            x = self._generate(labels, generator, temperature, top_k)
        return self.codec.snap(x).replace(labels=labels)

    @property
    def can_vary(self) -> bool:
        """Any flow can be varied (`vary`: a kept prefix, or kept packets)."""
        return True

    @torch.no_grad()
    def vary(  # type: ignore[override]  # options are each family's own, passed through by the callers
        self,
        batch: FlowBatch,
        strength: float | torch.Tensor,
        generator: torch.Generator,
        how: VaryHow = "continuation",
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> FlowBatch:
        """Each flow of `batch` (`x (B, 3, L)`) partly redrawn by the model, conditioned on
        its label and on what is kept of it (`GenerativeModule.vary`).

        `how`:
            `continuation`: the first `round((1 - s) * length)` packets are kept and the
                model continues the flow from them (its length included: the end of flow
                is drawn as in `sample`). When that keeps every packet the flow's end is
                kept too, else a flow could grow at strengths that redraw nothing of it.
            `resample`: left to right, each position is redrawn with probability s given
                the varied flow so far, else kept (a kept position after the flow's end
                keeps the end of flow), so changes are spread along the flow.

        Kept packets keep their exact values (not re-quantised through the vocabulary); s
        = 1 keeps nothing (a fresh sample of the class). Options `temperature`, `top_k` as
        in `sample`.

        Raises:
            ValueError: an unknown `how`, a bad strength, temperature or top_k; an unfitted
                vocabulary.
        """
        if how not in VARY_HOWS:
            raise ValueError(f"how must be one of {VARY_HOWS}, got {how!r}")
        self._check_sampling(temperature, top_k)

        def vary(real: FlowBatch, s: torch.Tensor) -> torch.Tensor:
            if how == "continuation":
                kept = torch.round((1 - s) * real.lengths).long()  # (B,) packets kept
                kept = kept + (kept == real.lengths).long()  # the whole flow: its end too
                forced = torch.arange(real.n_packets, device=self.device)[None, :] < kept[:, None]  # (B, L)
            else:
                u = torch.rand(len(real), real.n_packets, generator=generator, device=generator.device)  # (B, L)
                forced = u.to(self.device) >= s[:, None]  # (B, L) kept with probability 1 - s
            return self._generate(real.labels, generator, temperature, top_k, real, forced)

        return run_variation(self, batch, strength, vary)

    def _generate(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        temperature: float,
        top_k: int | None,
        real: FlowBatch | None = None,
        forced: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sampling loop: `x (B, 3, L)` (not yet snapped) of classes `labels (B,)`.

        Every position is drawn (from `generator`) for every flow; with `real` flows and
        `forced (B, L)` bool, the positions marked are then taken from `real` instead (its
        packet token and gap bin, fed to the next position, and its exact features; an
        end of flow where the real flow has ended), which is how `vary` keeps parts of
        flows through one mechanism with `sample`."""
        b, n = len(labels), int(self.hparams.n_packets)
        fed = labels if self.conditional else torch.zeros_like(labels)
        token = torch.full((b,), self.net.bos, dtype=torch.long, device=self.device)  # (B,) the previous packet's
        gap = torch.full((b,), self.net.no_gap, dtype=torch.long, device=self.device)  # (B,)
        x = torch.zeros(b, 3, n, device=self.device)  # (B, 3, L)
        alive = torch.ones(b, dtype=torch.bool, device=self.device)  # (B,)
        gap_mask = ~self.vocab.gap_allowed  # (G,)
        real_tokens, real_gaps = self.vocab.tokens(real, float(self.hparams.mtu)) if real is not None else (None, None)
        cache = None
        for i in range(n):
            # 1. one pass of the new position (keys and values of the earlier ones cached)
            feats = x[:, :, i - 1] if i > 0 else x.new_zeros(b, 3)  # (B, 3)
            h, cache = self.net.step(token, gap, feats, fed, cache)  # (B, D)
            # 2. the packet token (EOS ends the flow), then its bytes and direction
            token = draw(self._step_logits(h, i), generator, temperature, top_k)  # (B,)
            size, direction = self.vocab.draw_packets(token, generator)  # (B,), (B,)
            # 3. the gap bin given the token, then a gap inside the bin (the first gap is 0)
            if i > 0:
                gap = draw(self.net.gap_logits(h, token).masked_fill(gap_mask, float("-inf")), generator, temperature)
                iat = self.vocab.draw_gaps(gap, generator)  # (B,)
            else:
                gap, iat = torch.full_like(token, self.net.no_gap), torch.zeros(b, device=self.device)
            drawn = x.new_empty(b, 3)  # (B, 3)
            drawn[:, SIZE], drawn[:, DIRECTION], drawn[:, IAT] = size / float(self.hparams.mtu), direction, iat
            if forced is not None:  # 4. kept positions: the real flow's
                assert real is not None and real_tokens is not None and real_gaps is not None  # forced marks real's
                keep = forced[:, i]  # (B,)
                token = torch.where(keep, real_tokens[:, i], token)
                gap = torch.where(keep, real_gaps[:, i], gap)
                drawn = torch.where(keep[:, None], real.x[:, :, i], drawn)
            alive = alive & (token != EOS)
            x[:, :, i] = drawn * alive[:, None].float()
        return x
