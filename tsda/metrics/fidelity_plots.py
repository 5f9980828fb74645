"""Plots of real vs synthetic flows: marginal histograms, mean size per position, a latent
t-SNE. Each writes a PNG atomically (`tsda.figures.save_figure`) and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tsda.data.batch import FlowBatch
from tsda.metrics.fidelity import FEATURES, _bins, flow_features, size_curves
from tsda.metrics.latent import subsample, tsne_2d
from tsda.figures import pyplot, save_figure


def _plot_classes(real: FlowBatch, class_names: Sequence[str], max_classes: int) -> list[int]:
    counts = torch.bincount(real.labels.cpu(), minlength=len(class_names))
    return [int(k) for k in torch.argsort(counts, descending=True)[:max_classes] if counts[k] > 0]


def plot_marginals(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path,
                   max_classes: int = 5) -> Path:
    """Histograms of each feature, real vs synthetic: all flows, then the largest classes."""
    plt = pyplot()

    columns = [("all", real, synthetic)] + [
        (class_names[k], real.index(real.labels == k), synthetic.index(synthetic.labels == k))
        for k in _plot_classes(real, class_names, max_classes)
    ]
    fig, axes = plt.subplots(len(FEATURES), len(columns), figsize=(3 * len(columns), 2.2 * len(FEATURES)),
                             squeeze=False)
    for j, (title, r, s) in enumerate(columns):
        fr, fs = flow_features(r), flow_features(s)
        for i, feature in enumerate(FEATURES):
            ax = axes[i, j]
            bins = _bins(feature, fr[feature], fs[feature], real.n_packets)
            ax.hist(fr[feature], bins=bins, density=True, alpha=0.5, label="real")
            ax.hist(fs[feature], bins=bins, density=True, alpha=0.5, label="synthetic")
            if i == 0:
                ax.set_title(str(title)[:28], fontsize=8)
            if j == 0:
                ax.set_ylabel(feature)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_size_curves(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path,
                     max_classes: int = 6) -> Path:
    plt = pyplot()

    k = len(class_names)
    cr, cs = size_curves(real, k), size_curves(synthetic, k)
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, c in enumerate(_plot_classes(real, class_names, max_classes)):
        color = f"C{n}"
        ax.plot(cr[c], color=color, label=str(class_names[c])[:24])
        ax.plot(cs[c], color=color, linestyle="--")
    ax.set_xlabel("packet position"); ax.set_ylabel("mean size / MTU")
    ax.set_title("mean size per position: real (solid) vs synthetic (dashed)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_latent_tsne(z_real: np.ndarray, z_syn: np.ndarray, path: Path, max_points: int = 1500,
                     seed: int = 0) -> Path:
    """t-SNE of real and synthetic latents together, coloured by source."""
    plt = pyplot()

    a = z_real[subsample(len(z_real), max_points, seed)]
    b = z_syn[subsample(len(z_syn), max_points, seed)]
    xy = tsne_2d(np.concatenate([a, b]), seed)  # (Na + Nb, 2)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(*xy[: len(a)].T, s=3, alpha=0.5, label="real")
    ax.scatter(*xy[len(a) :].T, s=3, alpha=0.5, label="synthetic")
    ax.legend(); ax.set_xticks([]); ax.set_yticks([])
    ax.set_title("classifier latent space (t-SNE)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
