"""The contract every generator module (cGAN, diffusion, transformer, joint) fulfils.

`tsda sample`, `tsda evaluate`, the fidelity callback and `GeneratorAugmentation` talk
to generators only through this contract, so each works for every generator. Besides
`sample` (flows of a class from scratch), a generator may `vary` given flows (`can_vary`;
`tsda.generators.variation`): a flow near each, of its class, as near as a strength says.
`prepare_augmentation` is where an augmentation tree meets generator checkpoints: it
gives every augmentation its run context, with `load_generative` as the checkpoint loader.
"""

from __future__ import annotations

import importlib
import os
from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import lightning as L
import torch

from tsda.augment.base import Augmentation, AugmentContext
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.errors import TsdaError
from tsda.lit import class_names_from
from tsda.lit.checkpoint import load_module, read_checkpoint
from tsda.lit.distributed import check_unused_parameters


class GenerativeModule(L.LightningModule):
    """Base of generator LightningModules.

    Subclasses save `num_classes`, `class_names` and the codec settings (`n_packets`,
    `mtu`, `iat_unit`, `iat_max`) in their hparams so that a checkpoint alone can sample
    and decode flows.
    """

    hparams: Any  # for mypy: Lightning types it AttributeDict | MutableMapping, read by attribute here

    #: generators have no validation score to early-stop on; the last checkpoint is kept
    monitor: ClassVar[tuple[str, str] | None] = None

    #: checkpoint key holding the module's import path (written by `on_save_checkpoint`)
    CLASS_PATH_KEY: ClassVar[str] = "tsda_class_path"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # cooperative: a `SeededModule` base after this one saves too
        checkpoint[self.CLASS_PATH_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def load_overrides(cls) -> dict[str, Any]:
        """hparams to override when a checkpoint is loaded for sampling only (e.g. drop a
        training-only dependency such as a guiding classifier's checkpoint path)."""
        return {}

    @property
    def class_names(self) -> list[str]:
        """The K class names (`tsda.lit.class_names_from`)."""
        return class_names_from(self.hparams)

    @property
    def conditional(self) -> bool:
        """Whether the generator draws flows of a requested class (the `conditional` hparam;
        checkpoints from before it existed are conditional). An unconditional generator was
        trained without labels: it still knows the data's `class_names`, but its `sample`
        ignores the labels, so its flows must be labelled by a classifier (`tsda.labelling`,
        `tsda sample --label_with`) before anything uses them as flows of a class."""
        return bool(self.hparams.get("conditional", True))

    @property
    def codec(self) -> FlowCodec:
        h = self.hparams
        return FlowCodec(
            n_packets=h.get("n_packets", 20),
            mtu=h.get("mtu", 1460.0),
            iat_unit=h.get("iat_unit", 1e-3),
            iat_max=h.get("iat_max", 10.0),
        )

    def on_fit_start(self) -> None:
        """Refuse data encoded with codec settings other than the model's, and a manually
        optimised module (cGAN, joint) under DDP without the unused-parameter search
        (`tsda.lit.distributed`)."""
        check_unused_parameters(self)
        codec = getattr(getattr(self.trainer, "datamodule", None), "codec", None)
        if codec is not None and codec != self.codec:
            raise ValueError(
                f"the model's codec settings {self.codec} differ from the data's {codec}: "
                "set model.init_args.n_packets/mtu/iat_unit/iat_max like data.*"
            )

    # -- statistics of the training split refitted every epoch (e.g. a fitted noise prior) --
    def refit_due(self) -> bool:
        """Whether the module has per-epoch statistics of the training split to refit now."""
        return False

    def refit_statistics(self, loader: Iterable[FlowBatch]) -> None:
        """Refit those statistics from the training split's batches (`refit_due` says when)."""

    def on_train_epoch_end(self) -> None:
        self._refit_once()

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._refit_once()

    def _refit_once(self) -> None:
        """`refit_statistics` on the training split after each training epoch and before
        validation, at most once per training step count (validation and checkpoints see
        statistics of the current weights)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not self.refit_due() or getattr(self, "_refit_step", -1) == self.global_step:
            return
        self.refit_statistics(dm.train_eval_dataloader())
        self._refit_step = self.global_step

    @abstractmethod
    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator, **options: Any) -> FlowBatch:
        """Valid encoded flows of the given classes.

        Args:
            labels: `(B,)` int64 classes to generate, on the module's device (an
                unconditional generator, `conditional` False, ignores them except as targets
                of sampling-time guidance).
            generator: the only source of randomness (same seed -> same flows).
            options: sampler-specific settings (e.g. diffusion `steps`, `sampler`,
                `cfg_scale`, `latent_guidance_scale`); unknown options raise `TypeError`.

        Returns:
            `FlowBatch` with `x (B, 3, L)` snapped by `FlowCodec.snap` (valid flows),
            `labels` = the requested labels (unconditional: requests, not the flows' classes).
        """

    # -- the variation contract (anchored generative augmentation) ---------------------------
    @property
    def can_vary(self) -> bool:
        """Whether `vary` can vary flows (False: it raises `TsdaError`)."""
        return False

    def cannot_vary(self, reason: str) -> TsdaError:
        """The error `vary` raises when this generator cannot vary flows, naming it and why."""
        return TsdaError(f"{type(self).__name__} cannot vary flows: {reason}")

    def vary(
        self, batch: FlowBatch, strength: float | torch.Tensor, generator: torch.Generator, **options: Any
    ) -> FlowBatch:
        """A valid flow near each flow of `batch`, of the same class.

        Where `sample` draws flows of a class from scratch, `vary` anchors each draw on a
        real flow: a generative augmentation that stays near the data it augments, by as
        much as `strength` says.

        Args:
            batch: `x (B, 3, L)` valid flows (the codec's), `labels (B,)` their classes.
            strength: a number or a `(B,)` tensor, one per flow, each in [0, 1]: 0 = the
                flow itself (its row, untouched), 1 = a fresh sample of its class, between:
                a flow the nearer to it the smaller the strength.
            generator: the only source of randomness (same seed -> same flows).
            options: family-specific settings (those of `sample`, plus e.g. the
                transformer's `how`); unknown options raise `TypeError`.

        Returns:
            `FlowBatch` with `x (B, 3, L)` valid flows on `batch`'s device, `labels` =
            `batch.labels` (soft labels are not carried: each flow is of its class).

        Raises:
            TsdaError: this generator cannot vary flows (`can_vary` is False).
            ValueError: naming `strength`, a value outside [0, 1] or a wrong shape.
        """
        raise self.cannot_vary("it has no way to start from a given flow (no `vary`)")


def load_generative(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> GenerativeModule:
    """Load any generator checkpoint, finding its class from the checkpoint itself.

    The class comes from the key `on_save_checkpoint` writes, else from LightningCLI's
    `_class_path` hparam. The module is returned in eval mode.

    Raises:
        FileNotFoundError: no such file.
        TsdaError (a ValueError): the file is no checkpoint, names no class, or a class that
            is not a GenerativeModule (e.g. a classifier checkpoint).
    """
    ckpt = read_checkpoint(path)
    class_path = ckpt.get(GenerativeModule.CLASS_PATH_KEY) or ckpt.get("hyper_parameters", {}).get("_class_path")
    if not class_path:
        raise TsdaError(f"{path}: not a generator checkpoint (it names no GenerativeModule class)")
    module_name, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise TsdaError(f"{path}: its class {class_path} cannot be imported ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModule)):
        raise TsdaError(f"{path}: {class_path} is not a generator (GenerativeModule)")
    model = load_module(cls, path, map_location=map_location, **cls.load_overrides())
    return model.eval()


def prepare_augmentation(
    augmentation: Augmentation,
    *,
    device: torch.device,
    class_names: list[str] | tuple[str, ...],
    generator: torch.Generator,
    codec: FlowCodec | None = None,
    datamodule: Any = None,
) -> None:
    """Call `setup` on every augmentation of the tree `augmentation`, with a context whose
    `load_sampler` is `load_generative` (generator-backed augmentations load their
    checkpoint, check it against the data's classes and codec, and fill their pools).

    `datamodule` (a `FlowDataModule`, optional) gives the context the data's codec (unless
    `codec` is given) and the training split's flows (`AugmentContext.train_flows`, encoded
    here if its `setup` has not run), which a variation pool varies flow by flow.
    """
    train = None
    if isinstance(getattr(datamodule, "tensors", None), dict):  # a FlowDataModule
        codec = codec if codec is not None else datamodule.codec
        if "train" not in datamodule.tensors:
            datamodule.setup("fit")
        train = datamodule.tensors["train"]
    context = AugmentContext(
        device=torch.device(device),
        class_names=tuple(class_names),
        generator=generator,
        codec=codec,
        load_sampler=lambda path, dev: load_generative(path, map_location=dev),
        train_flows=train,
    )
    for aug in augmentation.walk():
        aug.setup(context)
