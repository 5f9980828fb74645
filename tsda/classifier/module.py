"""`ClassifierModule`: one module for every condition; the augmentation is an argument."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from tsda.augment.base import Augmentation, select
from tsda.classifier.nets import BackboneName, FlowClassifier, build_classifier
from tsda.data.batch import FlowBatch
from tsda.lit import check_class_names
from tsda.lit.checkpoint import reshape_optimizer_states
from tsda.lit.rng import SeededModule

Policy = Literal["double", "replace"]


@contextmanager
def native_bincount() -> Iterator[None]:
    """Deterministic algorithms off inside the block, restored (with their `warn_only`) after it.

    While they are on (`tsda fit` sets `trainer.deterministic`), torchmetrics counts classes
    with a `(N, K*K)` comparison instead of `torch.bincount` (for the GPU case where an old
    torch refused it), which costs more than the batch's forward pass at K = 53 on a CPU
    (benchmarks/RESULTS.md). `torch.bincount` without weights is deterministic on
    CPU and CUDA (integer counts, not in the list of `torch.use_deterministic_algorithms`),
    so counts, and every metric computed from them, are the same; only metric updates
    belong in the block."""
    if not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)


class ClassifierModule(SeededModule):
    """Train and evaluate a traffic classifier, optionally with an augmentation.

    Args:
        num_classes: K (linked from the datamodule by the CLI).
        class_names: names of the K classes; saved in the checkpoint so that `tsda test`
            can match another file's labels by name.
        backbone: `cnn_resblock` (the PAM 2024 1D-CNN) or `gru`.
        backbone_kwargs: extra arguments of the backbone (e.g. `{"width": 64}`).
        lr, weight_decay: Adam settings.
        augmentation: applied to training batches (hand-crafted or a generator); None = no
            augmentation.
        policy: `double` = the paper's protocol: every step trains on the B originals plus
            B augmented copies (its no-augmentation baseline then uses batch 2B);
            `replace` = each flow is replaced by its augmented copy with probability
            `augment_p` (batch stays B).
        augment_p: probability for `replace`.
        seed: seeds the augmentation's `torch.Generator` (the CLI links `seed_everything`).
        label_smoothing: cross-entropy label smoothing.
        latent_points: after testing, score the latent geometry of the test split's
            embeddings `encode(x)` (`tsda.metrics.latent`) on a seeded subsample of at most
            this many flows, stored as `latent_*` in `metrics.json`; 0 = off.
    """

    hparams: Any  # for mypy: Lightning types it AttributeDict | MutableMapping, read by attribute here

    #: (metric, mode) that checkpointing and early stopping follow
    monitor: ClassVar[tuple[str, str] | None] = ("val_weighted_f1", "max")

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        backbone: BackboneName = "cnn_resblock",
        backbone_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        augmentation: Augmentation | None = None,
        policy: Policy = "double",
        augment_p: float = 0.5,
        seed: int = 0,
        label_smoothing: float = 0.0,
        latent_points: int = 2000,
    ) -> None:
        super().__init__()
        if policy not in ("double", "replace"):
            raise ValueError(f"model.policy must be 'double' or 'replace', got {policy!r}")
        if not 0.0 <= augment_p <= 1.0:
            raise ValueError(f"model.augment_p must be in [0, 1], got {augment_p}")
        if latent_points < 0:
            raise ValueError(f"model.latent_points must be >= 0, got {latent_points}")
        check_class_names(class_names, num_classes)
        self.save_hyperparameters(ignore=["augmentation"])
        self.net: FlowClassifier = build_classifier(backbone, num_classes, **(backbone_kwargs or {}))
        self.augmentation = augmentation
        self.init_run_generator(seed, "augmentation")
        #: the training forward after `compile_networks` (a function, not a submodule: the
        #: checkpoint keeps `net.*` keys only), and whether Adam runs fused
        self._compiled_net: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._fused_adam = False
        #: this epoch's sum of per-step `loss * batch size` (a 0-d float32 tensor on the
        #: device, no sync per step) and of batch sizes not yet logged (`log_train_loss`)
        self._train_loss_sum: torch.Tensor | None = None
        self._train_loss_count = 0
        k = num_classes
        self.val_metrics = self._metrics(k, "val")
        self.test_metrics = self._metrics(k, "test")
        self.test_per_class = MulticlassF1Score(k, average="none")
        self.per_class_f1: dict[str, float] = {}
        self._test_z: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: `(z (N, D), labels (N,))` of the last test's subsample (CPU), for plots
        self.test_latent: tuple[torch.Tensor, torch.Tensor] | None = None
        self.latent_scores: dict[str, float] = {}

    @classmethod
    def load_classifier(cls, path: str | Path, map_location: str = "cpu") -> ClassifierModule:
        """The classifier of checkpoint `path`: a `ClassifierModule`'s, or the classifier part
        of a subclass's (`tsda.joint.module.JointModule`); weights stored beside the classifier
        (a trained augmentation, a joint generator) are left out.

        Raises:
            FileNotFoundError: no checkpoint at `path`.
            TsdaError: not a readable checkpoint, or one that lacks classifier weights.
        """
        from tsda.errors import TsdaError
        from tsda.lit.checkpoint import load_module, read_checkpoint

        stored = set(read_checkpoint(path)["state_dict"])
        model = load_module(cls, path, map_location=map_location, strict=False)
        missing = sorted(set(model.state_dict()) - stored)
        if missing:
            raise TsdaError(f"{path}: checkpoint lacks classifier weights {missing[:5]}")
        return model

    @classmethod
    def load_frozen(cls, path: str, num_classes: int | None = None) -> ClassifierModule:
        """A trained classifier checkpoint (`load_classifier`) in eval mode with gradients
        off: a generator's guide (`model.classifier_ckpt`), `tsda evaluate --classifier`.

        Raises:
            FileNotFoundError: no checkpoint at `path`.
            ValueError: the classifier's class count differs from `num_classes`.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"model.classifier_ckpt not found: {path}")
        guide = cls.load_classifier(path)
        if num_classes is not None and guide.hparams.num_classes != num_classes:
            raise ValueError(f"model.classifier_ckpt has {guide.hparams.num_classes} classes, the data {num_classes}")
        return guide.eval().requires_grad_(False)

    @staticmethod
    def _metrics(k: int, prefix: str) -> torch.nn.ModuleDict:
        return torch.nn.ModuleDict(
            {
                f"{prefix}_weighted_f1": MulticlassF1Score(k, average="weighted"),
                f"{prefix}_macro_f1": MulticlassF1Score(k, average="macro"),
                f"{prefix}_accuracy": MulticlassAccuracy(k, average="micro"),
            }
        )

    @property
    def class_names(self) -> list[str]:
        """The K class names (`tsda.lit.class_names_from`, shared with the generators)."""
        from tsda.lit import class_names_from

        return class_names_from(self.hparams)

    # -- the seam generators are guided by ------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, 3, L)` -> `z (B, D)`."""
        return self.net.encode(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x (B, 3, L)` -> `logits (B, K)` (through the compiled backbone when training
        after `compile_networks`)."""
        if self._compiled_net is not None and torch.is_grad_enabled():
            return self._compiled_net(x)
        return self.net(x)

    def compile_networks(self) -> None:
        """Train through a `torch.compile`d backbone and a fused Adam (`tsda fit --compile true`).

        Only the training forward (grad enabled) is compiled, with static shapes: two graphs
        per run (the training batch and the epoch's last, partial one), each compiled once
        and kept in inductor's on-disk cache for the campaign's later runs (and in the
        process, for a warm worker's). Validation and test (no grad, other batch sizes,
        inference mode: four more graphs) stay eager: they are a few percent of a run, while
        compiling them costs more than they would save. A backbone that can run
        channels-last (the CNN: `use_channels_last`) does, the layout bf16 convolutions
        prefer. Checkpoints keep their keys and shapes and load uncompiled anywhere. The fused
        Adam (one kernel over all parameters instead of a few per tensor) is what the
        optimiser step needs to keep up with the fused training step; it rounds like the
        foreach Adam, not bit-identically."""
        channels_last = getattr(self.net, "use_channels_last", None)
        if channels_last is not None:
            channels_last()
        self._compiled_net = torch.compile(self.net.forward, dynamic=False)
        self._fused_adam = True

    # -- training -----------------------------------------------------------------------
    def augmentation_generator(self) -> torch.Generator:
        """The seeded generator of every augmentation draw: `run_generator` under the name
        the augmentation tree's callers (an ensemble, the benchmarks) know it by."""
        return self.run_generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the augmentation is not an hparam (LightningCLI re-parses hparams as init arguments
        # on resume); its repr is kept beside them for the record
        checkpoint["augmentation_repr"] = repr(self.augmentation) if self.augmentation is not None else None
        super().on_save_checkpoint(checkpoint)  # the run generator's state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # the run generator's state
        if len(checkpoint.get("optimizer_states") or []) == 1:  # this class's one Adam (a subclass may have more)
            reshape_optimizer_states(checkpoint, list(self.parameters()))  # resuming an older form's run

    def on_fit_start(self) -> None:
        self.prepare_augmentation(getattr(self.trainer, "datamodule", None))

    def prepare_augmentation(self, datamodule: Any = None) -> None:
        """Give the augmentation tree its run context on this module's device (generator
        checkpoints load here and are checked against the data's classes and codec before
        training starts; a variation pool varies the training flows of `datamodule`, a
        `FlowDataModule`); an ensemble calls it for each member."""
        if self.augmentation is None:
            return
        from tsda.generators.base import prepare_augmentation

        prepare_augmentation(
            self.augmentation,
            device=self.device,
            class_names=self.class_names,
            generator=self.augmentation_generator(),
            codec=getattr(datamodule, "codec", None),
            datamodule=datamodule,
        )

    def start_augmentation_epoch(self, epoch: int) -> None:
        """The augmentations' epoch hooks (pool refreshes) with this run's generator."""
        if self.augmentation is None:
            return
        for aug in self.augmentation.walk():
            aug.on_epoch_start(epoch, self.augmentation_generator())

    def on_train_epoch_start(self) -> None:
        if self.augmentation is None:
            return
        self.start_augmentation_epoch(self.current_epoch)
        stats = self.augmentation_stats()
        if stats:
            self.log_dict(stats, on_step=False, on_epoch=True)

    def augmentation_stats(self) -> dict[str, float]:
        """`augment_<key>` of every augmentation's `stats()` (e.g. `augment_pool_seconds`)."""
        if self.augmentation is None:
            return {}
        return {f"augment_{k}": v for aug in self.augmentation.walk() for k, v in aug.stats().items()}

    def training_batch(self, batch: FlowBatch) -> FlowBatch:
        """The batch the optimiser step sees, after the augmentation policy."""
        if self.augmentation is None:
            return batch
        g = self.augmentation_generator()
        with torch.no_grad():
            augmented = self.augmentation(batch, g)
        if self.hparams.policy == "double":
            return FlowBatch.cat([batch, augmented], self.hparams.num_classes)
        chosen = torch.rand(len(batch), generator=g, device=batch.device) < self.hparams.augment_p
        return select(chosen, augmented, batch)

    def loss(self, logits: torch.Tensor, batch: FlowBatch) -> torch.Tensor:
        smoothing = float(self.hparams.label_smoothing)
        if batch.soft_labels is None:
            return F.cross_entropy(logits, batch.labels, label_smoothing=smoothing)
        return F.cross_entropy(logits, batch.soft_labels, label_smoothing=smoothing)

    def training_step(self, batch: FlowBatch, batch_idx: int) -> torch.Tensor:
        train = self.training_batch(batch)
        logits = self(train.x)
        loss = self.loss(logits, train)
        self.accumulate_train_loss(loss, len(train))
        trainer = self._trainer  # None when a step runs outside a Trainer (`self.trainer` raises)
        if trainer is not None and trainer.is_last_batch:
            self.log_train_loss()
        return loss

    def accumulate_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Add a step's mean `loss` (0-d) over `batch_size` flows to the epoch's `train_loss`,
        on the device: one `self.log` per epoch instead of one per step (each costs ~2 ms of
        Python, a GPU step of this classifier a few)."""
        weighted = loss.detach() * batch_size  # the same float32 arithmetic as Lightning's mean
        self._train_loss_sum = weighted if self._train_loss_sum is None else self._train_loss_sum + weighted
        self._train_loss_count += batch_size

    def log_train_loss(self) -> None:
        """Log the flow-weighted mean of the accumulated step losses as the epoch's
        `train_loss` (as `self.log(..., on_epoch=True, batch_size=B)` on every step would,
        to the same bits), then start over; nothing when nothing accumulated."""
        if self._train_loss_sum is None or not self._train_loss_count:
            return
        mean = self._train_loss_sum / self._train_loss_count
        self._train_loss_sum, self._train_loss_count = None, 0
        self.log("train_loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)

    def on_train_epoch_end(self) -> None:
        # the last batch logs the epoch's train_loss (so the progress bar and callbacks see it
        # at epoch end); what an epoch stopped early (max_steps, max_time) left unlogged, here
        self.log_train_loss()
        super().on_train_epoch_end()

    def _evaluate(self, batch: FlowBatch, metrics: torch.nn.ModuleDict, prefix: str) -> None:
        logits = self(batch.x)
        preds = logits.argmax(dim=1)
        self.log(f"{prefix}_loss", F.cross_entropy(logits, batch.labels), batch_size=len(batch))
        with native_bincount():
            for metric in metrics.values():
                assert isinstance(metric, Metric)  # the ModuleDicts of _metrics hold metrics
                metric.update(preds, batch.labels)
            if prefix == "test":
                self.test_per_class.update(preds, batch.labels)
        for name, metric in metrics.items():
            assert isinstance(metric, Metric)
            self.log(name, metric, on_epoch=True, prog_bar=name.endswith("weighted_f1"), batch_size=len(batch))

    def validation_step(self, batch: FlowBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: FlowBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")
        if self.hparams.latent_points:
            self._test_z.append((self.encode(batch.x).detach().cpu(), batch.labels.cpu()))  # (B, D), (B,)

    def on_test_epoch_end(self) -> None:
        values = self.test_per_class.compute().tolist()
        self.per_class_f1 = dict(zip(self.class_names, (float(v) for v in values)))
        self.test_per_class.reset()
        if self._test_z:
            from tsda.metrics.latent import latent_metrics, subsample

            z = torch.cat([b[0] for b in self._test_z])  # (N, D)
            labels = torch.cat([b[1] for b in self._test_z])  # (N,)
            keep = torch.as_tensor(subsample(len(z), self.hparams.latent_points, self.hparams.seed))
            self.test_latent = (z[keep], labels[keep])
            self.latent_scores = latent_metrics(*self.test_latent, max_points=len(keep))
            self._test_z = []

    def run_metrics(self) -> dict[str, Any]:
        """What `metrics.json` adds beyond the logged test metrics."""
        latent = {f"latent_{k}": v for k, v in self.latent_scores.items()}
        return {"test_per_class_f1": self.per_class_f1, **latent, **self.augmentation_stats()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            fused=True if self._fused_adam else None,
        )
