"""Lightning callbacks (logger-specific and plotting code lives here, not in modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from tsda.data.batch import FlowBatch
from tsda.seeds import seeded_generator


class FidelityCallback(L.Callback):
    """At validation end of any `GenerativeModule`, sample flows of the classes of (at most
    `max_flows`) validation flows and log their marginal distances to them through
    `pl_module.log` (every logger: CSV, W&B), so generators compare side by side.

    Logged keys: `fidelity/<feature>_w1` and `fidelity/<feature>_js` over all flows, and
    `fidelity/mean_w1`, `fidelity/mean_js` (means over features), with features as in
    `tsda.metrics.fidelity.FEATURES`.

    Args:
        max_flows: validation flows compared (the first ones of the validation loader).
        every_n_epochs: run every this many epochs.
        seed: seeds the sampling generator (the same flows' noise every time).
    """

    def __init__(self, max_flows: int = 1000, every_n_epochs: int = 1, seed: int = 0) -> None:
        if max_flows < 10:
            raise ValueError(f"FidelityCallback.max_flows must be >= 10, got {max_flows}")
        if every_n_epochs < 1:
            raise ValueError(f"FidelityCallback.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.max_flows, self.every_n_epochs, self.seed = max_flows, every_n_epochs, seed

    def _reference(self, trainer: L.Trainer) -> FlowBatch | None:
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        parts: list[FlowBatch] = []
        n = 0
        for loader in loaders:
            for batch in loader or []:
                parts.append(batch.to("cpu"))
                n += len(batch)
                if n >= self.max_flows:
                    break
        if not parts:
            return None
        real = FlowBatch.cat(parts)
        return real.index(torch.arange(min(n, self.max_flows)))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tsda.generators.base import GenerativeModule
        from tsda.metrics.fidelity import FEATURES, marginal_distances

        if trainer.sanity_checking or not isinstance(pl_module, GenerativeModule):
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        real = self._reference(trainer)
        if real is None or len(real) == 0:
            return
        g = seeded_generator(self.seed, pl_module.device)
        synthetic = pl_module.sample(real.labels.to(pl_module.device), g).to("cpu")
        overall = marginal_distances(real, synthetic, pl_module.class_names)["overall"]
        logged: dict[str, Any] = {}
        for feature in FEATURES:
            for metric in ("w1", "js"):
                value = overall[feature][metric]
                if value is not None:
                    logged[f"fidelity/{feature}_{metric}"] = value
        for metric in ("w1", "js"):
            values = [v for k, v in logged.items() if k.endswith(f"_{metric}")]
            if values:
                logged[f"fidelity/mean_{metric}"] = sum(values) / len(values)
        pl_module.log_dict(logged, on_epoch=True, batch_size=len(real))


@torch.no_grad()
def embed_augmented(
    model: L.LightningModule, batch: FlowBatch, max_points: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Augmented copies of a seeded subsample of training `batch`, embedded by `model`.

    `model` must expose `augmentation` (None = no augmentation) and `encode(x) -> z (B, D)`.
    Returns `(z (M, D), labels (M,))` on the CPU, or None without an augmentation.
    """
    from tsda.metrics.latent import subsample

    augmentation = getattr(model, "augmentation", None)
    if augmentation is None or len(batch) == 0:
        return None
    keep = torch.as_tensor(subsample(len(batch), max_points, seed), device=batch.device)
    sample = batch.index(keep)
    augmented = augmentation(sample, seeded_generator(seed, sample.device))
    was_training = model.training
    model.eval()
    # duck-typed `encode` (see above): nn.Module.__getattr__'s stub types it Tensor | Module
    z = model.encode(augmented.x.to(model.device))  # type: ignore[operator]  # (M, D)
    model.train(was_training)
    return z.cpu(), augmented.labels.cpu()


class LatentPlotCallback(L.Callback):
    """After testing, the run's latent t-SNE PNG (`path`, e.g. `run_dir/latent_tsne.png`).

    Uses the test embeddings the module kept (`pl_module.test_latent`: `(z (N, D), labels
    (N,))`, see `ClassifierModule(latent_points=...)`) and, when the module has an
    augmentation and the datamodule training tensors (`datamodule.tensors['train']`), as
    many augmented training samples as a quarter of the test points, overlaid. Nothing
    when the module kept no embeddings; only on the global-zero rank.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.written: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tsda.metrics.latent import plot_latent

        kept = getattr(pl_module, "test_latent", None)
        if not trainer.is_global_zero or kept is None or len(kept[0]) < 4:
            return
        z, labels = kept
        # Lightning sets trainer.datamodule at run time; its stub does not declare it
        train = getattr(trainer.datamodule, "tensors", {}).get("train")  # type: ignore[attr-defined]
        seed = int(getattr(pl_module, "hparams", {}).get("seed", 0))
        augmented = embed_augmented(pl_module, train, max(len(z) // 4, 1), seed) if train is not None else None
        za, la = augmented if augmented is not None else (None, None)
        names = getattr(pl_module, "class_names", None)
        self.written = plot_latent(z, labels, self.path, names, za, la, seed=seed)
