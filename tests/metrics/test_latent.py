"""Latent-space geometry: cluster metrics, subsampling, t-SNE plot, augmented overlay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsda.augment.base import Augmentation
from tsda.callbacks import embed_augmented
from tsda.classifier.module import ClassifierModule
from tsda.data.batch import FlowBatch
from tsda.metrics.latent import LATENT_KEYS, latent_metrics, plot_latent, subsample


def blobs(
    separation: float, n_per_class: int = 60, k: int = 3, d: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`k` Gaussian clusters in `d` dims, centres `separation` apart: `z (N, D)`, `labels (N,)`."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    centres = np.eye(k, d) * separation  # (k, D)
    return centres[labels] + rng.normal(size=(len(labels), d)), labels


def test_separated_clusters_score_better_than_mixed_ones() -> None:
    z_far, labels = blobs(separation=12.0)
    z_near, _ = blobs(separation=0.0)
    far, near = latent_metrics(z_far, labels), latent_metrics(z_near, labels)
    assert set(far) == set(LATENT_KEYS)
    assert far["silhouette"] > 0.6 > near["silhouette"]
    assert far["davies_bouldin"] < near["davies_bouldin"]
    assert far["calinski_harabasz"] > 10 * near["calinski_harabasz"]
    assert far["spread"] < near["spread"]
    assert far["margin"] > 0.5 and abs(near["margin"]) < 0.2


def test_scale_free_metrics_do_not_change_with_the_scale() -> None:
    z, labels = blobs(separation=3.0)
    a, b = latent_metrics(z, labels), latent_metrics(100.0 * z, labels)
    for key in ("silhouette", "davies_bouldin", "spread", "margin"):
        assert a[key] == pytest.approx(b[key], rel=1e-6)


def test_torch_input_and_subsample_are_seeded() -> None:
    z, labels = blobs(separation=2.0, n_per_class=200)
    a = latent_metrics(torch.as_tensor(z), torch.as_tensor(labels), max_points=100, seed=3)
    b = latent_metrics(z, labels, max_points=100, seed=3)
    c = latent_metrics(z, labels, max_points=100, seed=4)
    assert a == b and a != c
    idx = subsample(600, 100, seed=1)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100 and idx.max() < 600
    assert np.array_equal(idx, subsample(600, 100, seed=1))
    assert np.array_equal(subsample(50, 100), np.arange(50))


def test_bad_inputs_raise_and_one_class_gives_nan() -> None:
    with pytest.raises(ValueError, match="max_points"):
        subsample(10, 0)
    with pytest.raises(ValueError, match="labels"):
        latent_metrics(np.zeros((5, 2)), np.zeros(4))
    one = latent_metrics(np.random.default_rng(0).normal(size=(20, 3)), np.zeros(20, dtype=int))
    assert all(math.isnan(v) for v in one.values())


def test_plot_latent_writes_a_png_with_the_overlay(tmp_path) -> None:
    z, labels = blobs(separation=6.0, n_per_class=20)
    za, la = blobs(separation=6.0, n_per_class=5, seed=1)
    path = plot_latent(z, labels, tmp_path / "tsne.png", ["a", "b", "c"], za, la)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))  # written through a temporary file


class AddOne(Augmentation):
    """Adds 1 to every size (enough to check that the overlay sees augmented flows)."""

    def __call__(self, batch: FlowBatch, generator: torch.Generator) -> FlowBatch:
        return batch.replace(x=batch.x + torch.tensor([1.0, 0.0, 0.0])[None, :, None])


def tiny_batch(n: int = 40, k: int = 3, seed: int = 0) -> FlowBatch:
    g = torch.Generator().manual_seed(seed)
    return FlowBatch(torch.rand(n, 3, 20, generator=g), torch.full((n,), 20), torch.arange(n) % k)


def test_embed_augmented_encodes_augmented_training_flows() -> None:
    batch = tiny_batch()
    plain = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8})
    assert embed_augmented(plain, batch, 10) is None
    model = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8}, augmentation=AddOne())
    model.eval()
    z, labels = embed_augmented(model, batch, 10, seed=0)
    assert z.shape == (10, model.net.latent_dim) and labels.shape == (10,)
    keep = torch.as_tensor(subsample(len(batch), 10, 0))
    with torch.no_grad():
        expected = model.encode(AddOne()(batch.index(keep), torch.Generator()).x)
    assert torch.allclose(z, expected, atol=1e-6)
    assert torch.equal(labels, batch.labels[keep])


def test_classifier_module_scores_the_test_embeddings() -> None:
    model = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8}, latent_points=30)
    model.eval()
    with torch.no_grad():
        for i in range(2):
            model.test_step(tiny_batch(seed=i), i)
    model.on_test_epoch_end()
    z, labels = model.test_latent
    assert z.shape == (30, model.net.latent_dim) and labels.shape == (30,)
    metrics = model.run_metrics()
    assert {f"latent_{k}" for k in LATENT_KEYS} <= set(metrics)
    assert -1.0 <= metrics["latent_silhouette"] <= 1.0
    with pytest.raises(ValueError, match="latent_points"):
        ClassifierModule(num_classes=3, latent_points=-1)
