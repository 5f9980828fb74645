"""Latent-space geometry of a classifier: how well its embedding `z` separates the classes.

The paper's first agenda item: good augmentations should separate classes better in the
classifier's latent space. `latent_metrics` scores an embedding `z (N, D)` with labels
`(N,)`; `plot_latent` draws a t-SNE of it, with augmented training samples overlaid.

Metrics (keys of `latent_metrics`, stored with a `latent_` prefix in `metrics.json`):
    silhouette: mean silhouette coefficient (sklearn), in [-1, 1], higher = better separated.
    davies_bouldin: Davies-Bouldin index (sklearn), >= 0, lower = better separated.
    calinski_harabasz: Calinski-Harabasz score (sklearn), higher = better separated.
    spread: mean distance of a point to its class centroid divided by the mean distance
        between class centroids (scale-free), lower = tighter classes.
    margin: mean over points of `(d_other - d_own) / (d_other + d_own)`, with `d_own` the
        distance to the point's class centroid and `d_other` to the nearest other centroid
        (scale-free, in [-1, 1]); > 0 means the nearest centroid is the right one.
Scale-free definitions keep runs with differently scaled embeddings comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsda.figures import pyplot, save_figure
from tsda.seeds import seeded_generator

LATENT_KEYS = ("silhouette", "davies_bouldin", "calinski_harabasz", "spread", "margin")
#: direction of each metric: +1 = higher is better separated, -1 = lower is better
LATENT_DIRECTION = {"silhouette": 1, "davies_bouldin": -1, "calinski_harabasz": 1, "spread": -1, "margin": 1}


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """`(m,)` sorted row indices: all `n` rows when `n <= max_points`, else a seeded draw."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=seeded_generator(seed))[:max_points].numpy())


def _as_numpy(z: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(z, torch.Tensor):
        # latents computed under bf16 autocast arrive as bfloat16, which numpy has no type for
        z = z.detach().cpu()
        z = (z.float() if z.dtype in (torch.bfloat16, torch.float16) else z).numpy()
    else:
        z = np.asarray(z)
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"z must be (N, D) and labels (N,), got {z.shape} and {labels.shape}")
    return z.astype(np.float64), labels.astype(np.int64)


def centroid_geometry(z: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Scale-free `spread` and `margin` of `z (N, D)` around its class centroids (>= 2 classes)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    centroids = np.stack([z[inverse == i].mean(axis=0) for i in range(len(classes))])  # (C, D)
    dist = np.linalg.norm(z[:, None, :] - centroids[None, :, :], axis=2)  # (N, C)
    own = dist[np.arange(len(z)), inverse]  # (N,)
    dist[np.arange(len(z)), inverse] = np.inf
    other = dist.min(axis=1)  # (N,)
    between = np.linalg.norm(centroids[:, None] - centroids[None, :], axis=2)  # (C, C)
    mean_between = between[np.triu_indices(len(classes), k=1)].mean()
    margin = (other - own) / np.maximum(other + own, 1e-12)
    return {"spread": float(own.mean() / max(mean_between, 1e-12)), "margin": float(margin.mean())}


def latent_metrics(z: Any, labels: Any, max_points: int = 2000, seed: int = 0) -> dict[str, float]:
    """Cluster-separation metrics of an embedding (see the module docstring).

    Args:
        z: `(N, D)` embeddings (numpy or torch).
        labels: `(N,)` int class of each row.
        max_points: score a seeded subsample of at most this many rows (silhouette is
            quadratic in N).
        seed: seeds the subsample.
    Returns:
        `{name: value}` for `LATENT_KEYS`; NaN everywhere when fewer than 2 classes or
        fewer rows than classes + 1 remain.
    """
    z, labels = _as_numpy(z, labels)
    keep = subsample(len(z), max_points, seed)
    z, labels = z[keep], labels[keep]
    n_classes = len(np.unique(labels))
    if n_classes < 2 or len(z) <= n_classes:
        return dict.fromkeys(LATENT_KEYS, math.nan)
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    return {
        "silhouette": float(silhouette_score(z, labels)),
        "davies_bouldin": float(davies_bouldin_score(z, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(z, labels)),
        **centroid_geometry(z, labels),
    }


def tsne_2d(z: np.ndarray, seed: int = 0) -> np.ndarray:
    """`z (N, D)` -> `(N, 2)` t-SNE coordinates (sklearn, PCA init, seeded)."""
    from sklearn.manifold import TSNE

    if len(z) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(z)}")
    perplexity = float(min(30.0, (len(z) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)


def plot_latent(
    z: Any,
    labels: Any,
    path: str | Path,
    class_names: list[str] | None = None,
    z_augmented: Any | None = None,
    labels_augmented: Any | None = None,
    seed: int = 0,
    title: str = "latent space (t-SNE)",
) -> Path:
    """t-SNE PNG of `z (N, D)` coloured by class; `z_augmented (M, D)` overlaid as crosses.

    Both sets are embedded together so that their positions are comparable.
    """
    plt = pyplot()

    z, labels = _as_numpy(z, labels)
    n = len(z)
    if z_augmented is not None:
        za, la = _as_numpy(z_augmented, labels_augmented)
        z, labels_all = np.concatenate([z, za]), np.concatenate([labels, la])
    else:
        labels_all = labels
    xy = tsne_2d(z, seed)  # (N + M, 2)
    k = int(labels_all.max()) + 1
    names = class_names or [str(i) for i in range(k)]
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in np.unique(labels_all):
        own = labels_all[:n] == c
        ax.scatter(xy[:n][own, 0], xy[:n][own, 1], s=6, color=cmap(c % cmap.N), label=names[c], alpha=0.8)
        if len(xy) > n:
            aug = labels_all[n:] == c
            ax.scatter(xy[n:][aug, 0], xy[n:][aug, 1], s=14, marker="x", color=cmap(c % cmap.N), alpha=0.6)
    if len(xy) > n:
        ax.scatter([], [], marker="x", color="grey", label="augmented (train)")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if k <= 25:
        ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
