"""Distances between sets of points (`(N, D)` arrays: latents of a classifier or flattened
flows): Frechet distance, k-NN precision/recall/density/coverage, memorisation.

    prdc: Naeem et al. 2020, k = 5 by default.
    memorisation: nearest-neighbour distance of each synthetic point to the real training
        points vs that of real test points: medians, their ratio (< 1: synthetic points sit
        closer to training points than unseen real ones do), `share_below_p5` (the share of
        synthetic points closer to a training point than 95 % of real test points are;
        about 0.05 when nothing is copied) and `share_exact_copies`.
"""

from __future__ import annotations

import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to `a (N, D)` and `b (M, D)`."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
    return max(value, 0.0)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """k-NN precision, recall, density and coverage (Naeem et al. 2020) of `fake (M, D)`
    against `real (N, D)`."""
    from sklearn.metrics import pairwise_distances

    if min(len(real), len(fake)) <= k:
        raise ValueError(f"prdc needs more than k={k} points in each set")

    def radii(x: np.ndarray) -> np.ndarray:
        d = pairwise_distances(x)  # (N, N)
        return np.partition(d, k, axis=1)[:, k]  # (N,) distance to the k-th neighbour (self = 0)

    r_real, r_fake = radii(real), radii(fake)
    d = pairwise_distances(real, fake)  # (N, M)
    inside_real = d < r_real[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d < r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < r_real).mean()),
    }


def memorisation(train: np.ndarray, test: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    """Nearest-training-flow distances of synthetic vs real test points (see the module doc)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(train)
    d_test = nn.kneighbors(test)[0][:, 0]
    d_syn = nn.kneighbors(synthetic)[0][:, 0]
    p5 = float(np.percentile(d_test, 5))
    med_test, med_syn = float(np.median(d_test)), float(np.median(d_syn))
    return {
        "median_nn_synthetic": med_syn,
        "median_nn_test": med_test,
        "ratio": med_syn / med_test if med_test > 0 else None,
        "share_below_p5": float((d_syn < p5).mean()),
        "share_exact_copies": float((d_syn < 1e-9).mean()),
    }
