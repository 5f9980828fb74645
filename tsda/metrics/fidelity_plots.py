"""Plots of real vs synthetic flows: marginal histograms, mean size per position, a latent
t-SNE, example flows as packet sequences, and a comparison of generators. Each writes a PNG atomically (`tsda.figures.save_figure`) and returns its path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tsda.data.batch import FlowBatch
from tsda.figures import pyplot, save_figure
from tsda.metrics.fidelity import FEATURES, _bins, flow_features, size_curves
from tsda.metrics.latent import subsample, tsne_2d
from tsda.seeds import seeded_generator


def _plot_classes(real: FlowBatch, class_names: Sequence[str], max_classes: int) -> list[int]:
    counts = torch.bincount(real.labels.cpu(), minlength=len(class_names))
    return [int(k) for k in torch.argsort(counts, descending=True)[:max_classes] if counts[k] > 0]


def plot_marginals(
    real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path, max_classes: int = 5
) -> Path:
    """Histograms of each feature, real vs synthetic: all flows, then the largest classes."""
    plt = pyplot()

    columns = [("all", real, synthetic)] + [
        (class_names[k], real.index(real.labels == k), synthetic.index(synthetic.labels == k))
        for k in _plot_classes(real, class_names, max_classes)
    ]
    fig, axes = plt.subplots(
        len(FEATURES), len(columns), figsize=(3 * len(columns), 2.2 * len(FEATURES)), squeeze=False
    )
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


def plot_size_curves(
    real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path, max_classes: int = 6
) -> Path:
    plt = pyplot()

    k = len(class_names)
    cr, cs = size_curves(real, k), size_curves(synthetic, k)
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, c in enumerate(_plot_classes(real, class_names, max_classes)):
        color = f"C{n}"
        ax.plot(cr[c], color=color, label=str(class_names[c])[:24])
        ax.plot(cs[c], color=color, linestyle="--")
    ax.set_xlabel("packet position")
    ax.set_ylabel("mean size / MTU")
    ax.set_title("mean size per position: real (solid) vs synthetic (dashed)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_latent_tsne(
    z_real: np.ndarray,
    z_syn: np.ndarray,
    path: Path,
    labels_real: np.ndarray | None = None,
    labels_syn: np.ndarray | None = None,
    class_names: Sequence[str] = (),
    max_classes: int = 4,
    max_points: int = 1500,
    seed: int = 0,
) -> Path:
    """t-SNE of real and synthetic latents `(N, D)`, `(M, D)` embedded together: left, all
    flows coloured by source; right (with labels), the `max_classes` largest real classes,
    coloured by class, real as dots and synthetic as crosses."""
    plt = pyplot()
    a_rows, b_rows = subsample(len(z_real), max_points, seed), subsample(len(z_syn), max_points, seed)
    xy = tsne_2d(np.concatenate([z_real[a_rows], z_syn[b_rows]]), seed)  # (Na + Nb, 2)
    xa, xb = xy[: len(a_rows)], xy[len(a_rows) :]
    by_class = labels_real is not None and labels_syn is not None
    fig, axes = plt.subplots(1, 2 if by_class else 1, figsize=(12 if by_class else 6, 6), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(*xa.T, s=3, alpha=0.5, label="real")
    ax.scatter(*xb.T, s=3, alpha=0.5, label="synthetic")
    ax.legend()
    ax.set_title("classifier latent space (t-SNE)")
    if labels_real is not None and labels_syn is not None:  # by_class
        la, lb = labels_real[a_rows], labels_syn[b_rows]
        ax = axes[0, 1]
        for n, k in enumerate(np.argsort(-np.bincount(la))[:max_classes]):
            name = str(class_names[k])[:24] if len(class_names) > k else str(k)
            ax.scatter(*xa[la == k].T, s=5, color=f"C{n}", alpha=0.6, label=f"{name} real")
            ax.scatter(*xb[lb == k].T, s=14, marker="x", color=f"C{n}", alpha=0.6, label=f"{name} synthetic")
        ax.legend(fontsize=6)
        ax.set_title(f"the {max_classes} largest classes")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_example_flows(
    real: FlowBatch,
    synthetic: FlowBatch,
    class_names: Sequence[str],
    path: Path,
    max_classes: int = 4,
    per_class: int = 3,
    seed: int = 0,
) -> Path:
    """Example flows as packet sequences, real (left) and synthetic (right) of the largest
    classes: each packet a bar at its arrival time (cumulative encoded iat), height the size,
    up for client to server and down for server to client."""
    plt = pyplot()
    classes = _plot_classes(real, class_names, max_classes)
    fig, axes = plt.subplots(len(classes), 2, figsize=(11, 1.9 * len(classes)), squeeze=False, sharey=True)
    g = seeded_generator(seed)
    for row, k in enumerate(classes):
        for col, (title, batch) in enumerate((("real", real), ("synthetic", synthetic))):
            ax, own = axes[row, col], torch.nonzero(batch.labels.cpu() == k).flatten()
            for n, i in enumerate(own[torch.randperm(len(own), generator=g)[:per_class]].tolist()):
                m = int(batch.lengths[i])
                x = batch.x[i, :, :m].detach().cpu().double()  # (3, m)
                t = torch.cumsum(x[2], 0).numpy()  # arrival positions in encoded-iat units
                ax.bar(t + 0.02 * n, (x[0] * x[1]).numpy(), width=0.03, color=f"C{n}", alpha=0.8)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{str(class_names[k])[:28]}: {title}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (cumulative encoded iat)")
    axes[0, 0].set_ylabel("size x direction")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def plot_comparison(
    rows: list[dict],
    path: Path,
    keys: Sequence[str] = ("ratio", "discriminative", "discriminative_gru", "latent_precision"),
) -> Path:
    """One bar panel per headline metric of `tsda evaluate`'s comparison rows, a bar per generator."""
    plt = pyplot()
    keys = [k for k in keys if any(isinstance(r.get(k), float) for r in rows)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(3.2 * max(len(keys), 1), 3.2), squeeze=False)
    names = [str(r["generator"]) for r in rows]
    for ax, key in zip(axes[0], keys):
        ax.bar(range(len(rows)), [r.get(key) or 0.0 for r in rows], color=[f"C{i}" for i in range(len(rows))])
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(key, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
