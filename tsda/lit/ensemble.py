"""Ensemble training: N classifier runs of one architecture trained as one batched model.

A campaign's runs are small models (a ~116k-parameter CNN) trained one process each, so a
campaign pays N times the process start, the data load and a launch-bound training loop.
`train_ensemble` trains the N members of a group in one loop instead:

- one batched model: the members' weights are stacked (`torch.func.stack_module_state`) and
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
  sliced out), so the others go on at the speed of a smaller ensemble.

Members must share what makes their tensors stack: backbone and its arguments, optimiser
settings, label smoothing, and the training batch (batch size, policy, whether an
augmentation doubles it); `tsda.commands.ensemble` groups a campaign's runs that way.
Dropout > 0 is refused (its draws under `vmap` would come from the global RNG).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule
from tsda.lit.classifier import ClassifierModule
from tsda.nets.classifier import FlowClassifier


@dataclass(frozen=True)
class EnsembleSettings:
    """The Trainer settings every member of an ensemble shares.

    `max_steps` < 0: no step limit; `check_val_every_n_epoch`: validate every n-th epoch;
    `validate`: False = never validate (no early stopping; the final weights are the best)."""

    max_epochs: int = 20
    max_steps: int = -1
    patience: int = 10
    check_val_every_n_epoch: int = 1
    validate: bool = True
    device: str = "cpu"


@dataclass
class MemberOutcome:
    """What a member's training left: `best_state` (its `net.state_dict()` at the best
    validation, CPU), `best_score`/`best_epoch` (None without validation), `epochs`
    trained, `steps`, `history` (one row per epoch: epoch, step, train_loss and the val_*
    metrics when validated) and `fit_seconds` (wall time from the ensemble's start)."""

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


def evaluate_members(stack: StackedClassifier, split: FlowBatch, num_classes: int,
                     batch_size: int) -> list[dict[str, float]]:
    """Per member `{loss, weighted_f1, macro_f1, accuracy}` on `split` (one pass of all members)."""
    preds, losses = [], []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            part = split.index(torch.arange(start, min(start + batch_size, len(split)), device=split.device))
            logits = stack(part.x, train=False)  # (N, b, K)
            preds.append(logits.argmax(2))
            n, b, k = logits.shape
            ce = F.cross_entropy(logits.reshape(n * b, k), part.labels.repeat(n), reduction="none").view(n, b)
            losses.append(ce.sum(1))
    pred = torch.cat(preds, 1)  # (N, M)
    loss = torch.stack(losses).sum(0) / len(split)  # (N,)
    rows = []
    for k in range(len(stack)):
        p, y = pred[k], split.labels
        rows.append({
            "loss": float(loss[k]),
            "weighted_f1": float(multiclass_f1_score(p, y, num_classes, average="weighted")),
            "macro_f1": float(multiclass_f1_score(p, y, num_classes, average="macro")),
            "accuracy": float(multiclass_accuracy(p, y, num_classes, average="micro")),
        })
    return rows


def prepare_members(members: Sequence[ClassifierModule], datamodule: FlowDataModule, device: torch.device) -> None:
    """Move the members to `device` and give each augmentation its run context (as
    `ClassifierModule.on_fit_start` does inside a Trainer)."""
    from tsda.lit.generative import prepare_augmentation

    for m in members:
        m.to(device)
        if m.augmentation is not None:
            prepare_augmentation(m.augmentation, device=device, class_names=m.class_names,
                                 generator=m.augmentation_generator(), codec=datamodule.codec)


def start_epoch(members: Sequence[ClassifierModule], epoch: int) -> None:
    """The augmentations' epoch hooks (pool refreshes), as `on_train_epoch_start` calls them."""
    for m in members:
        if m.augmentation is not None:
            for aug in m.augmentation.walk():
                aug.on_epoch_start(epoch, m.augmentation_generator())


OnDone = Callable[[MemberOutcome], None]


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


def train_ensemble(members: Sequence[ClassifierModule], datamodule: FlowDataModule, settings: EnsembleSettings,
                   on_done: OnDone) -> None:
    """Train `members` (ClassifierModules of one group) on `datamodule`'s splits as one
    batched model; `on_done(outcome)` as each member stops (early stopping, `max_epochs`,
    `max_steps`), in the order they stop."""
    device = torch.device(settings.device)
    datamodule.setup()
    for name in ("train", "val"):
        datamodule.tensors[name] = datamodule.tensors[name].to(device)
    train, val = datamodule.tensors["train"], datamodule.tensors["val"]
    prepare_members(members, datamodule, device)
    first = members[0].hparams
    stack = StackedClassifier([m.net for m in members])
    optimizer: torch.optim.Optimizer = torch.optim.Adam(stack.params.values(), lr=first.lr,
                                                        weight_decay=first.weight_decay)
    samplers = [datamodule.train_sampler(int(m.hparams.seed)) for m in members]
    active = list(range(len(members)))  # member index of each stack row
    trackers = [_Tracker() for _ in members]
    started, step = time.perf_counter(), 0
    k = int(first.num_classes)

    def finish(i: int, epochs: int) -> None:
        t = trackers[i]
        state = t.best_state if t.best_state is not None else stack.member_state(active.index(i))
        on_done(MemberOutcome(i, state, t.best_score, t.best_epoch, epochs, step,
                              time.perf_counter() - started, t.history))

    for epoch in range(settings.max_epochs):
        live = [members[i] for i in active]
        start_epoch(live, epoch)
        orders = []
        for i in active:
            samplers[i].set_epoch(epoch)
            orders.append(list(iter(samplers[i])))
        loss_sum = torch.zeros(len(active), device=device)
        flows = 0
        stopped_by_steps = False
        for b in range(len(orders[0])):
            batches = [m.training_batch(train.index(order[b].to(device))) for m, order in zip(live, orders)]
            x = torch.stack([batch.x for batch in batches])  # (N, B', C, L)
            losses = member_loss(stack(x, train=True), batches, k, float(first.label_smoothing))  # (N,)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            loss_sum += losses.detach() * len(batches[0])
            flows += len(batches[0])
            step += 1
            if 0 <= settings.max_steps <= step:
                stopped_by_steps = True
                break
        train_loss = (loss_sum / max(flows, 1)).tolist()
        validate = settings.validate and (epoch + 1) % settings.check_val_every_n_epoch == 0
        scores = evaluate_members(stack, val, k, datamodule.hparams.eval_batch_size) if validate else None
        stopping = []
        for row, i in enumerate(active):
            entry: dict[str, float] = {"epoch": epoch, "step": step, "train_loss": train_loss[row]}
            if scores is not None:
                entry.update({f"val_{name}": v for name, v in scores[row].items()})
                if trackers[i].update(scores[row]["weighted_f1"], epoch,
                                      lambda r=row: stack.member_state(r), settings.patience):
                    stopping.append(i)
            trackers[i].history.append(entry)
        last = stopped_by_steps or epoch + 1 == settings.max_epochs
        for i in (list(active) if last else stopping):
            finish(i, epoch + 1)
        if last:
            return
        if stopping:
            active_rows = [r for r, i in enumerate(active) if i not in stopping]
            if not active_rows:
                return
            optimizer = stack.keep(torch.tensor(active_rows, device=device), optimizer)
            active = [active[r] for r in active_rows]
