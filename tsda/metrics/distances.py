"""Distances between sets of points (`(N, D)` arrays: latents of a classifier or flattened
flows): Frechet distance, k-NN precision/recall/density/coverage, memorisation.

    prdc: Naeem et al. 2020, k = 5 by default.
    memorisation: nearest-neighbour distance of each synthetic point to the real training
        points vs that of real test points: medians, their ratio (< 1: synthetic points sit
        closer to training points than unseen real ones do), `share_below_p5` (the share of
        synthetic points closer to a training point than 95 % of real test points are;
        about 0.05 when nothing is copied) and `share_exact_copies`.
    variation_distances: of variations of real flows (`tsda sample --vary`), the distance
        to the flow each was made from and, apart from it, to the nearest other training
        flow (`nearest_distances`, the search memorisation uses).
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


def nearest_distances(reference: np.ndarray, points: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """`(M,)` Euclidean distance of each of `points (M, D)` to its nearest `reference (N, D)`
    point: the one nearest-neighbour search of memorisation and of variations.

    Args:
        exclude: `(M,)` int, a reference row that does not count for each point (-1: none),
            e.g. the very flow a variation was made from; with it, the nearest other row.
    """
    from sklearn.neighbors import NearestNeighbors

    k = 1 if exclude is None else min(2, len(reference))
    d, i = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(points)  # (M, k)
    if exclude is None:
        return d[:, 0]
    if k < 2:  # a single reference row: nothing else to be near
        return np.where(i[:, 0] == exclude, np.inf, d[:, 0])
    return np.where(i[:, 0] == exclude, d[:, 1], d[:, 0])


def memorisation(train: np.ndarray, test: np.ndarray, synthetic: np.ndarray) -> dict[str, float | None]:
    """Nearest-training-flow distances of synthetic vs real test points (see the module doc)."""
    d_test = nearest_distances(train, test)
    d_syn = nearest_distances(train, synthetic)
    p5 = float(np.percentile(d_test, 5))
    med_test, med_syn = float(np.median(d_test)), float(np.median(d_syn))
    return {
        "median_nn_synthetic": med_syn,
        "median_nn_test": med_test,
        "ratio": med_syn / med_test if med_test > 0 else None,
        "share_below_p5": float((d_syn < p5).mean()),
        "share_exact_copies": float((d_syn < 1e-9).mean()),
    }


def variation_distances(
    train: np.ndarray, sources: np.ndarray, variations: np.ndarray, source_in_train: np.ndarray
) -> dict[str, float]:
    """How near variations stay to their own source and to the other training points.

    Args:
        train: `(N, D)` training points.
        sources: `(M, D)` the point each variation was made from.
        variations: `(M, D)`.
        source_in_train: `(M,)` int, the row of `train` that is each variation's source
            (-1 where it is not a training point); left out of its nearest-neighbour search.

    Returns:
        `mean_source_distance` / `median_source_distance` (to the own source),
        `mean_nn_other_train` / `median_nn_other_train` (to the nearest other training
        point) and `share_nearer_source` (variations nearer their source than any other
        training point: near copies; a fresh sample of the class is not).
    """
    d_source = np.linalg.norm(variations - sources, axis=1)  # (M,)
    d_other = nearest_distances(train, variations, exclude=source_in_train)  # (M,)
    return {
        "n": float(len(variations)),
        "mean_source_distance": float(d_source.mean()),
        "median_source_distance": float(np.median(d_source)),
        "mean_nn_other_train": float(d_other.mean()),
        "median_nn_other_train": float(np.median(d_other)),
        "share_nearer_source": float((d_source < d_other).mean()),
    }
