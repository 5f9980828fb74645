"""Ensemble training: N classifier runs of one architecture trained as one batched model.

A campaign's runs are small models (a ~116k-parameter CNN) trained one process each, so a
campaign pays N times the process start, the data load and a launch-bound training loop.
`fit_ensemble` trains the N members of a group as one run instead:

- one LightningModule (`EnsembleModule`) run by Lightning's Trainer over a batched model:
  the members' weights are stacked (`torch.func.stack_module_state`) and
  the forward pass is `vmap(functional_call)` over the member axis. Chosen over grouped
  convolutions because it batches any `FlowClassifier` (CNN or GRU) without a second
  implementation of each backbone, and its BatchNorm running statistics stay per member
  (the stacked buffers are updated in place under `vmap`). Adam is element-wise, so one
  Adam over the stacked tensors is N independent Adams;
- per member, everything a separate `tsda fit` run has of its own: initial weights (built
  from its seed), batch order (`FlowDataModule.train_sampler(seed)`), class-weighted
  sampling, augmentation and its `torch.Generator` draws (`ClassifierModule.training_batch`);
- the data on the device once (the group shares one datamodule's tensors); validation
  flows go through all members in one pass (`vmap` with the batch shared);
- per-member validation and early stopping with Lightning's rules (strict improvement of
  the monitor, `patience` validations without one); a member that stops keeps its best
  weights and leaves the stack (the weights, buffers and Adam moments of the others are
  sliced out, the Trainer gets the sliced optimiser), so the others go on at the speed of a
  smaller ensemble; the Trainer stops when no member is left.

Each step is one optimiser step of every active member (manual optimisation: one Adam over
the stacked tensors, one backward of the members' summed losses, which keeps their
gradients apart because no tensor is shared). The training loader yields `(N, B)` index
tensors, row r drawn by member r's sampler.

Members must share what makes their tensors stack: backbone and its arguments, optimiser
settings, label smoothing, and the training batch (batch size, policy, whether an
augmentation doubles it); `tsda.commands.ensemble` groups a campaign's runs that way.
Dropout > 0 is refused (its draws under `vmap` would come from the global RNG).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.data import DataLoader, Dataset, Sampler

from tsda.classifier.module import ClassifierModule
from tsda.classifier.nets import FlowClassifier
from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule, IndexBatchSampler


@dataclass(frozen=True)
class EnsembleSettings:
    """The Trainer settings every member of an ensemble shares.

    `max_steps` < 0: no step limit; `check_val_every_n_epoch`: validate every n-th epoch;
    `validate`: False = never validate (no early stopping; the final weights are the best);
    `precision`: the Trainer's, `32-true` or `bf16-mixed` (`BATCHED_PRECISIONS`: Lightning
    runs the steps under autocast, a context the batched `vmap` forward runs inside like any
    other; `16-mixed` would need a gradient scaler across the optimiser that `_drop`
    replaces, so such runs are not batched)."""

    max_epochs: int = 20
    max_steps: int = -1
    patience: int = 10
    check_val_every_n_epoch: int = 1
    validate: bool = True
    device: str = "cpu"
    precision: str = "32-true"


#: the Trainer precisions an ensemble trains with (`EnsembleSettings.precision`)
BatchedPrecision = Literal["32", "32-true", "bf16-mixed"]
BATCHED_PRECISIONS: tuple[BatchedPrecision, ...] = ("32", "32-true", "bf16-mixed")


def batched_precision(value: object) -> BatchedPrecision:
    """`value` as one of `BATCHED_PRECISIONS` (ValueError when it is none of them)."""
    precision = next((p for p in BATCHED_PRECISIONS if p == str(value)), None)
    if precision is None:
        raise ValueError(f"an ensemble trains with precision {' or '.join(BATCHED_PRECISIONS)}, not {value!r}")
    return precision


@dataclass
class MemberOutcome:
    """What a member's training left: `best_state` (its `net.state_dict()` at the best
    validation, CPU), `best_score`/`best_epoch` (None without validation), `epochs`
    trained, `steps` (the ensemble's optimiser steps when it ended), `history` (one row per
    validation: epoch, step, train_loss, val_*) and `fit_seconds` (wall time from the
    ensemble's start to the member's end)."""

    index: int
    best_state: dict[str, torch.Tensor]
    best_score: float | None
    best_epoch: int | None
    epochs: int
    steps: int
    fit_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


class StackedClassifier:
    """N `FlowClassifier`s of one architecture as stacked tensors and a batched forward.

    `params`/`buffers`: `{name: (N, ...)}`; `__call__(x)` with `x (N, B, C, L)` (each member
    its batch) or `(B, C, L)` (one batch for all) -> logits `(N, B, K)`."""

    def __init__(self, nets: Sequence[FlowClassifier]) -> None:
        if any(m.p > 0 for net in nets for m in net.modules() if isinstance(m, torch.nn.Dropout)):
            raise ValueError("ensemble members cannot use dropout > 0 (its draws under vmap are not seeded)")
        params, buffers = stack_module_state(list(nets))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.base = copy.deepcopy(nets[0]).to("meta")  # the architecture; weights come from the stacks

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def _one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))  # (B, C, L) -> (B, K)

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        self.base.train(train)
        shared = x.ndim == 3
        return vmap(self._one, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, x)

    def to(self, device: torch.device) -> None:
        """Move the stacks to `device` (before an optimiser is built over them)."""
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v.to(device) for k, v in self.buffers.items()}

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member `k`'s weights and buffers as a `net.state_dict()` (detached CPU copies)."""
        return {name: t[k].detach().cpu().clone() for name, t in (*self.params.items(), *self.buffers.items())}

    def keep(self, rows: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Keep members `rows (n,)` only: weights, buffers and the optimiser's per-element
        state are sliced; the new optimiser (same class and settings) is returned."""
        old = dict(self.params)
        self.params = {k: v.detach()[rows].clone().requires_grad_(True) for k, v in old.items()}
        self.buffers = {k: v[rows].clone() for k, v in self.buffers.items()}
        new = type(optimizer)(self.params.values(), **optimizer.defaults)
        for name, p in old.items():
            state = optimizer.state.get(p)
            if state:
                new.state[self.params[name]] = {key: (val[rows].clone() if torch.is_tensor(val) and val.ndim > 0 else val)
                                                for key, val in state.items()}
        return new


def member_loss(logits: torch.Tensor, batches: Sequence[FlowBatch], num_classes: int,
                label_smoothing: float) -> torch.Tensor:
    """`(N,)` each member's mean cross-entropy: `logits (N, B, K)` against its batch's labels
    (or soft labels, when any member's augmentation mixes classes)."""
    n, b, k = logits.shape
    flat = logits.reshape(n * b, k)
    if any(batch.soft_labels is not None for batch in batches):
        target = torch.cat([batch.targets(num_classes) for batch in batches])  # (N*B, K)
    else:
        target = torch.cat([batch.labels for batch in batches])  # (N*B,)
    return F.cross_entropy(flat, target, reduction="none", label_smoothing=label_smoothing).view(n, b).mean(1)


def member_scores(pred: torch.Tensor, loss_sum: torch.Tensor, labels: torch.Tensor,
                  num_classes: int) -> list[dict[str, float]]:
    """Per member `{loss, weighted_f1, macro_f1, accuracy}` from `pred (N, M)` predictions of
    the `M` flows of `labels (M,)` and `loss_sum (N,)` summed cross-entropies.

    The scores are torchmetrics' (`multiclass_f1_score` weighted and macro, where classes
    neither true nor predicted do not count, and micro `multiclass_accuracy`, in float32),
    computed for all members at once from their confusion counts, and read back to the
    host once (a read per member and score would wait for the device 4 N times)."""
    n, m, k = pred.shape[0], len(labels), num_classes
    member = torch.arange(n, device=pred.device)[:, None]  # (N, 1)
    cells = (member * k + labels.to(pred.device)[None, :]) * k + pred  # (N, M) (member, true, predicted)
    confusion = torch.bincount(cells.flatten(), minlength=n * k * k).view(n, k, k)  # (N, K, K)
    tp = confusion.diagonal(dim1=1, dim2=2).float()  # (N, K)
    fn, fp = confusion.sum(2).float() - tp, confusion.sum(1).float() - tp  # (N, K)

    def divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:  # torchmetrics' _safe_divide
        return torch.where(den != 0, num / den, torch.zeros((), device=num.device))

    f1 = divide(2 * tp, 2 * tp + fn + fp)  # (N, K)
    support = tp + fn
    present = (tp + fp + fn != 0).float()
    weighted = divide(support * f1, support.sum(1, keepdim=True)).sum(1)  # (N,)
    macro = divide(present * f1, present.sum(1, keepdim=True)).sum(1)
    accuracy = divide(tp.sum(1), (tp + fn).sum(1))
    table = torch.stack([loss_sum.float().to(pred.device), weighted, macro, accuracy], 1).tolist()  # (N, 4)
    return [{"loss": loss / m, "weighted_f1": w, "macro_f1": mac, "accuracy": acc}
            for loss, w, mac, acc in table]


class StackedIndices(Sampler[torch.Tensor]):
    """Yields `(N, b)` int64 index tensors: row r is the next batch of the r-th active
    member's own `IndexBatchSampler` (its seed, epoch and class weighting). `active` is
    shared with the module, so members that stop leave the draws from the next epoch on."""

    def __init__(self, samplers: Sequence[IndexBatchSampler], active: list[int]) -> None:
        self.samplers, self.active = list(samplers), active

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for rows in zip(*(iter(self.samplers[i]) for i in list(self.active))):
            yield torch.stack(rows)

    def __len__(self) -> int:
        return len(self.samplers[0])


class _Indices(Dataset):
    """`dataset[idx] = idx`: the training loader hands the `(N, B)` index tensors through."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return idx


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class _Tracker:
    """Early stopping and best weights of one member (Lightning's rules)."""

    best_score: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    wait: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def update(self, score: float, epoch: int, state: Callable[[], dict[str, torch.Tensor]], patience: int) -> bool:
        """Record a validation; True when the member should stop."""
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_epoch, self.best_state, self.wait = score, epoch, state(), 0
            return False
        self.wait += 1
        return self.wait >= patience


class EnsembleModule(L.LightningModule):
    """`members` (ClassifierModules of one group, see the module docstring) as one module.

    Args:
        members: the runs; their nets' weights become the stack (the members keep their
            hparams, augmentations and augmentation generators).
        datamodule: the shared data (its tensors are the training and validation flows).
        patience: validations without a strict improvement of `val_weighted_f1` after
            which a member stops.

    After `Trainer.fit`, `outcomes` holds one `MemberOutcome` per member, in member order.
    """

    hparams: Any  # for mypy: Lightning types it AttributeDict | MutableMapping, read by attribute here

    def __init__(self, members: Sequence[ClassifierModule], datamodule: FlowDataModule, patience: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self._members = tuple(members)  # a tuple: not registered as submodules (no weights of theirs here)
        self._data = datamodule
        self.patience = patience
        self.stack = StackedClassifier([m.net for m in members])
        self.active = list(range(len(members)))  # member index of each stack row
        self.trackers = [_Tracker() for _ in members]
        self.outcomes: list[MemberOutcome | None] = [None] * len(members)
        self.num_classes = int(members[0].hparams.num_classes)
        self.smoothing = float(members[0].hparams.label_smoothing)
        self._started = time.perf_counter()
        self._loss_sum: torch.Tensor | None = None
        self._flows = 0
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- data: each member's own batch order, one shared copy of the flows ------------------
    def train_dataloader(self) -> DataLoader:
        samplers = [self._data.train_sampler(int(m.hparams.seed)) for m in self._members]
        return DataLoader(_Indices(), sampler=StackedIndices(samplers, self.active), batch_size=None,
                          collate_fn=_identity)  # type: ignore[arg-type]  # batch_size=None: one item, not a list

    def val_dataloader(self) -> DataLoader:
        return self._data.val_dataloader()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.stack.to(self.device)
        h = self._members[0].hparams
        return torch.optim.Adam(self.stack.params.values(), lr=h.lr, weight_decay=h.weight_decay)

    def on_fit_start(self) -> None:
        """Members on the device, each augmentation given its run context (as
        `ClassifierModule.on_fit_start`), the flows on the device once (the datamodule is
        not the Trainer's, so it is told the device)."""
        self._data.place_on(self.device)
        self._data.setup()
        for m in self._members:
            m.to(self.device)
            m.prepare_augmentation(self._data)
        self._started = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        for i in self.active:
            self._members[i].start_augmentation_epoch(self.current_epoch)
        self._loss_sum, self._flows = None, 0

    def training_step(self, idx: torch.Tensor, batch_idx: int) -> None:
        """`idx (N, B)`: one optimiser step of every active member on its own batch."""
        train = self._data.tensors["train"]
        # one member after another: each member's augmentation is its own tree of ops (they
        # may differ, a generator's pool included) drawing from its own torch.Generator, so
        # that member k's flows are those of `tsda fit` with seed k; a batched draw would
        # interleave the streams. The indices are on the data's device already.
        batches = [self._members[i].training_batch(train.index(idx[r].to(train.device)))
                   for r, i in enumerate(self.active)]
        losses = member_loss(self.stack(torch.stack([b.x for b in batches]), train=True), batches,
                             self.num_classes, self.smoothing)  # (N,)
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers returns one
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(losses.sum())
        optimizer.step()
        weighted = losses.detach() * len(batches[0])
        self._loss_sum = weighted if self._loss_sum is None else self._loss_sum + weighted
        self._flows += len(batches[0])

    # -- validation, early stopping and best weights per member -----------------------------
    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        logits = self.stack(batch.x, train=False)  # (N, b, K)
        n, b, k = logits.shape
        ce = F.cross_entropy(logits.reshape(n * b, k), batch.labels.repeat(n), reduction="none").view(n, b)
        self._val.append((logits.argmax(2), ce.sum(1)))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val:
            self._val = []
            return
        pred = torch.cat([p for p, _ in self._val], 1)  # (N, M)
        loss = torch.stack([s for _, s in self._val]).sum(0)  # (N,)
        self._val = []
        scores = member_scores(pred, loss, self._data.tensors["val"].labels.to(pred.device), self.num_classes)
        train_loss = (self._loss_sum / max(self._flows, 1)).tolist() if self._loss_sum is not None else None
        stopping = []
        for r, i in enumerate(self.active):
            entry = {"epoch": self.current_epoch, "step": self.global_step,
                     **({"train_loss": train_loss[r]} if train_loss else {}),
                     **{f"val_{name}": v for name, v in scores[r].items()}}
            self.trackers[i].history.append(entry)
            if self.trackers[i].update(scores[r]["weighted_f1"], self.current_epoch,
                                       partial(self.stack.member_state, r), self.patience):
                stopping.append(i)
        for i in stopping:
            self._finish(i, self.current_epoch + 1)
        self._drop(stopping)

    def _finish(self, i: int, epochs: int) -> None:
        t = self.trackers[i]
        state = t.best_state if t.best_state is not None else self.stack.member_state(self.active.index(i))
        self.outcomes[i] = MemberOutcome(i, state, t.best_score, t.best_epoch, epochs, self.global_step,
                                         time.perf_counter() - self._started, t.history)

    def _drop(self, stopping: list[int]) -> None:
        """Slice the stopped members out of the stack and the Trainer's optimiser; stop the
        Trainer when none is left."""
        if not stopping:
            return
        rows = [r for r, i in enumerate(self.active) if i not in stopping]
        if not rows:
            self.trainer.should_stop = True
            return
        self.trainer.strategy.optimizers = [self.stack.keep(torch.tensor(rows, device=self.device),
                                                            self.trainer.optimizers[0])]
        self.active[:] = [self.active[r] for r in rows]

    def on_fit_end(self) -> None:
        """Members still training at the end (max_epochs, max_steps) end with their best
        weights (the last ones when they were never validated); `epochs` is the Trainer's
        epoch count, as `tsda fit` records it."""
        for i in list(self.active):
            if self.outcomes[i] is None:
                self._finish(i, max(self.current_epoch, 1))


def fit_ensemble(members: Sequence[ClassifierModule], datamodule: FlowDataModule,
                 settings: EnsembleSettings) -> list[MemberOutcome]:
    """Train `members` on `datamodule` as one `EnsembleModule` with Lightning's Trainer; one
    `MemberOutcome` per member (member order)."""
    precision = batched_precision(settings.precision)
    module = EnsembleModule(members, datamodule, settings.patience)
    trainer = L.Trainer(accelerator="gpu" if settings.device == "cuda" else "cpu", devices=1,
                        precision=precision,
                        max_epochs=settings.max_epochs, max_steps=settings.max_steps,
                        check_val_every_n_epoch=settings.check_val_every_n_epoch,
                        limit_val_batches=1.0 if settings.validate else 0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(module)
    return [o for o in module.outcomes if o is not None]
