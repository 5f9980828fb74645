"""Fidelity of synthetic flows: how close a generator's flows are to real ones, and how
useful; `tsda evaluate`.

    tsda evaluate --real ../shared/data/fgnet/d1.parquet --invalid-rows drop \\
        --synthetic runs/fgnet_cgan/synthetic.parquet \\
        [--classifier runs/fgnet_baseline/checkpoints/best.ckpt] --out runs/fgnet_cgan/fidelity

Every metric works on encoded flows (`FlowBatch`, the codec's units), so all features live
on comparable scales: size = bytes / MTU in [0, 1], iat = the codec's log-scaled gap (1.0 =
10 s), direction share = fraction of server-to-client packets of a flow, length = real
packets / L. The real reference is the held-out **test** split of the real source, curated
and split exactly as `FlowDataModule` does (same options); the training split serves the
memorisation check and TRTR.

Metrics (keys of `fidelity.json`):
    marginals: per feature, over all flows and per class, Wasserstein-1 (`w1`, scipy) and
        Jensen-Shannon distance (`js`, base 2, in [0, 1], on 50-bin histograms; lengths on
        integer bins); `mean_per_class` averages over classes present in both sets.
    size_curves: per class, the mean size at each packet position; `mean_abs_diff` of the
        real and synthetic curves (over classes and positions).
    discriminative: a fresh gradient-boosting classifier (sklearn) tells real from synthetic
        flows (balanced, trained on one half, scored on the other); `score = |acc - 0.5|`,
        0 = indistinguishable, 0.5 = trivially told apart.
    tstr / trtr: weighted F1 on the real test split of the traffic classifier
        (`ClassifierModule`, Lightning's Trainer, fixed epochs, last weights, class-weighted
        sampler in both) trained on synthetic flows only (TSTR) and on the real training
        split (TRTR); `ratio = tstr / trtr`.
    latent (with `--classifier`): in that classifier's latent space `encode(x) (N, D)`, the
        Frechet distance, k-NN precision / recall / density / coverage (Naeem et al. 2020,
        k = 5) of synthetic vs real test flows.
    memorisation: nearest-neighbour distance of each synthetic flow to the real training
        flows vs that of real test flows (input space; latent space too with a classifier):
        medians, their ratio (< 1: synthetic flows sit closer to training flows than unseen
        real flows do) and `share_below_p5`, the share of synthetic flows closer to a training
        flow than 95 % of real test flows are (about 0.05 when nothing is copied).
Plots: `marginals.png` (real vs synthetic histograms, all flows and the largest classes),
`size_curves.png`, `latent_tsne.png` (with `--classifier`).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tsda.data.batch import DIRECTION, IAT, SIZE, FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.table import FlowTable

FEATURES = ("size", "iat", "direction_share", "length")
N_BINS = 50


# -- marginals ---------------------------------------------------------------------------
def flow_features(batch: FlowBatch) -> dict[str, np.ndarray]:
    """Per-packet (`size`, `iat` after the first packet) and per-flow (`direction_share`,
    `length`) values of an encoded batch, in codec units (see the module docstring)."""
    x = batch.x.detach().cpu()
    mask = batch.mask().cpu()  # (B, L)
    lengths = batch.lengths.cpu().clamp_min(1).double()
    down = ((x[:, DIRECTION] < 0) & mask).sum(1).double()  # (B,) server-to-client packets
    return {
        "size": x[:, SIZE][mask].double().numpy(),
        "iat": x[:, IAT, 1:][mask[:, 1:]].double().numpy(),
        "direction_share": (down / lengths).numpy(),
        "length": (batch.lengths.cpu().double() / batch.n_packets).numpy(),
    }


def _bins(feature: str, a: np.ndarray, b: np.ndarray, n_packets: int) -> np.ndarray:
    if feature == "length":
        return (np.arange(n_packets + 2) - 0.5) / n_packets
    top = max(1.0, float(np.max(a, initial=0.0)), float(np.max(b, initial=0.0)))
    return np.linspace(0.0, top, N_BINS + 1)


def distribution_distances(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> dict[str, float | None]:
    """Wasserstein-1 and base-2 Jensen-Shannon distance of two samples (None if one is empty)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    if len(a) == 0 or len(b) == 0:
        return {"w1": None, "js": None}
    ha, _ = np.histogram(a, bins=bins)
    hb, _ = np.histogram(b, bins=bins)
    return {"w1": float(wasserstein_distance(a, b)), "js": float(jensenshannon(ha, hb, base=2))}


def _features_distances(fa: dict[str, np.ndarray], fb: dict[str, np.ndarray], n_packets: int) -> dict[str, Any]:
    return {f: distribution_distances(fa[f], fb[f], _bins(f, fa[f], fb[f], n_packets)) for f in FEATURES}


def marginal_distances(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str]) -> dict[str, Any]:
    """W1 and JS distance per feature: `overall`, `per_class` (by name) and the mean over
    classes present in both sets (`mean_per_class`)."""
    if real.n_packets != synthetic.n_packets:
        raise ValueError(f"real flows have {real.n_packets} packets, synthetic {synthetic.n_packets}")
    n_packets = real.n_packets
    out: dict[str, Any] = {"overall": _features_distances(flow_features(real), flow_features(synthetic), n_packets)}
    per_class: dict[str, Any] = {}
    for k, name in enumerate(class_names):
        ra, sb = real.index(real.labels == k), synthetic.index(synthetic.labels == k)
        if len(ra) and len(sb):
            per_class[name] = _features_distances(flow_features(ra), flow_features(sb), n_packets)
    out["per_class"] = per_class
    out["mean_per_class"] = {
        f: {m: float(np.mean([c[f][m] for c in per_class.values() if c[f][m] is not None]))
            if per_class else None for m in ("w1", "js")}
        for f in FEATURES
    }
    return out


def size_curves(batch: FlowBatch, num_classes: int) -> np.ndarray:
    """`(K, L)` mean encoded size at each position over the class's flows that have a packet
    there (NaN where none)."""
    x = batch.x[:, SIZE].detach().cpu().double()  # (B, L)
    mask = batch.mask().cpu().double()  # (B, L)
    onehot = torch.nn.functional.one_hot(batch.labels.cpu(), num_classes).double()  # (B, K)
    total = onehot.T @ (x * mask)  # (K, L)
    count = onehot.T @ mask  # (K, L)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count).numpy()


def size_curve_distance(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str]) -> dict[str, Any]:
    k = len(class_names)
    diff = np.abs(size_curves(real, k) - size_curves(synthetic, k))  # (K, L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = np.nanmean(diff, axis=1)
    return {
        "mean_abs_diff": float(np.nanmean(diff)) if np.isfinite(diff).any() else None,
        "per_class": {n: float(v) for n, v in zip(class_names, per_class) if np.isfinite(v)},
    }


# -- discriminative score ----------------------------------------------------------------
def _flat(batch: FlowBatch) -> np.ndarray:
    """`(B, 3L + 1)` flattened channels plus the normalised length."""
    x = batch.x.detach().cpu().flatten(1).double()  # (B, 3L)
    return torch.cat([x, batch.lengths.cpu().double()[:, None] / batch.n_packets], 1).numpy()


def discriminative_score(real: FlowBatch, synthetic: FlowBatch, seed: int = 0) -> dict[str, float]:
    """|accuracy - 0.5| of a fresh real-vs-synthetic classifier on held-out flows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    n = min(len(real), len(synthetic))
    if n < 10:
        raise ValueError(f"discriminative score needs >= 10 flows of each, got {n}")
    rng = np.random.default_rng(seed)
    a = _flat(real)[rng.permutation(len(real))[:n]]
    b = _flat(synthetic)[rng.permutation(len(synthetic))[:n]]
    features = np.concatenate([a, b])
    is_real = np.concatenate([np.ones(n), np.zeros(n)])
    xa, xb, ya, yb = train_test_split(features, is_real, test_size=0.5, stratify=is_real, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(xa, ya)
    accuracy = float((model.predict(xb) == yb).mean())
    return {"accuracy": accuracy, "score": abs(accuracy - 0.5), "n_per_source": int(n)}


# -- TSTR --------------------------------------------------------------------------------
def classifier_score(
    train: FlowTable,
    test: FlowTable,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    codec: FlowCodec = FlowCodec(),
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Test metrics of a fresh `ClassifierModule` trained `epochs` epochs on `train`
    (class-weighted sampler, last weights) and tested on `test` (same classes)."""
    import lightning as L

    from tsda.data.datamodule import FlowDataModule
    from tsda.lit.classifier import ClassifierModule

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if train.class_names != test.class_names:
        raise ValueError("train and test tables must share class_names")
    dm = FlowDataModule.from_tables(
        train, test.take(np.arange(0)), test, n_packets=codec.n_packets, mtu=codec.mtu,
        iat_unit=codec.iat_unit, iat_max=codec.iat_max, batch_size=batch_size,
        sampler="class_weighted", split_seed=seed,
    )
    torch.manual_seed(seed)  # the network's initial weights
    model = ClassifierModule(num_classes=len(train.class_names), class_names=list(train.class_names),
                             seed=seed, **{"latent_points": 0, **(model_kwargs or {})})
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    return {k.removeprefix("test_"): float(v) for k, v in result.items() if k != "test_loss"}


def tstr(
    synthetic: FlowTable, real_train: FlowTable, real_test: FlowTable, epochs: int = 10, seed: int = 0,
    codec: FlowCodec = FlowCodec(), model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR)."""
    out = {
        "tstr": classifier_score(synthetic, real_test, epochs, seed, codec=codec, model_kwargs=model_kwargs),
        "trtr": classifier_score(real_train, real_test, epochs, seed, codec=codec, model_kwargs=model_kwargs),
        "epochs": epochs,
        "n_train": {"synthetic": len(synthetic), "real": len(real_train)},
    }
    trtr = out["trtr"]["weighted_f1"]
    out["ratio"] = out["tstr"]["weighted_f1"] / trtr if trtr > 0 else None
    return out


# -- latent space and memorisation -------------------------------------------------------
@torch.no_grad()
def encode_batch(classifier: Any, batch: FlowBatch, batch_size: int = 2048) -> np.ndarray:
    """`(N, D)` latents `classifier.encode(x)` of a batch (the classifier in eval mode)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    parts = [classifier.encode(batch.x[i : i + batch_size].to(device)).cpu()
             for i in range(0, len(batch), batch_size)]
    return torch.cat(parts).double().numpy()


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


def latent_fidelity(
    classifier: Any, real: FlowBatch, synthetic: FlowBatch, train: FlowBatch, k: int = 5
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Frechet distance, PRDC and memorisation in `classifier`'s latent space; also returns
    the real and synthetic latents `(N, D)`, `(M, D)` for plots."""
    z_real, z_syn = encode_batch(classifier, real), encode_batch(classifier, synthetic)
    z_train = encode_batch(classifier, train)
    out = {"frechet": frechet_distance(z_real, z_syn), **prdc(z_real, z_syn, k),
           "memorisation": memorisation(z_train, z_real, z_syn)}
    return out, z_real, z_syn


# -- plots -------------------------------------------------------------------------------
def _plot_classes(real: FlowBatch, class_names: Sequence[str], max_classes: int) -> list[int]:
    counts = torch.bincount(real.labels.cpu(), minlength=len(class_names))
    return [int(k) for k in torch.argsort(counts, descending=True)[:max_classes] if counts[k] > 0]


def plot_marginals(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path,
                   max_classes: int = 5) -> Path:
    """Histograms of each feature, real vs synthetic: all flows, then the largest classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tsda.runs import atomic_path

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def plot_size_curves(real: FlowBatch, synthetic: FlowBatch, class_names: Sequence[str], path: Path,
                     max_classes: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tsda.runs import atomic_path

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def plot_latent_tsne(z_real: np.ndarray, z_syn: np.ndarray, path: Path, max_points: int = 1500,
                     seed: int = 0) -> Path:
    """t-SNE of real and synthetic latents together, coloured by source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tsda.metrics.latent import subsample, tsne_2d
    from tsda.runs import atomic_path

    a = z_real[subsample(len(z_real), max_points, seed)]
    b = z_syn[subsample(len(z_syn), max_points, seed)]
    xy = tsne_2d(np.concatenate([a, b]), seed)  # (Na + Nb, 2)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(*xy[: len(a)].T, s=3, alpha=0.5, label="real")
    ax.scatter(*xy[len(a) :].T, s=3, alpha=0.5, label="synthetic")
    ax.legend(); ax.set_xticks([]); ax.set_yticks([])
    ax.set_title("classifier latent space (t-SNE)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


# -- the whole evaluation ----------------------------------------------------------------
def stratified_cap(table: FlowTable, max_flows: int, seed: int = 0) -> FlowTable:
    """At most `max_flows` flows, keeping every class's share (all flows when fewer)."""
    from tsda.data.curation import stratified_fraction

    if max_flows < 1:
        raise ValueError(f"max_flows must be >= 1, got {max_flows}")
    if len(table) <= max_flows:
        return table
    return table.take(stratified_fraction(table.labels, max_flows / len(table), seed))


def evaluate(
    real_train: FlowTable,
    real_test: FlowTable,
    synthetic: FlowTable,
    out_dir: str | Path,
    codec: FlowCodec = FlowCodec(),
    classifier: Any = None,
    tstr_epochs: int = 5,
    max_flows: int = 5000,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Any]:
    """Every fidelity metric of `synthetic` against the real splits; writes `fidelity.json`
    (atomically) and the plots into `out_dir` and returns the metrics. The three tables
    must share `class_names` (relabel the synthetic one first); `tstr_epochs=0` skips TSTR."""
    from tsda.runs import write_json_atomic

    started = time.perf_counter()
    names = real_test.class_names
    if synthetic.class_names != names or real_train.class_names != names:
        raise ValueError("real_train, real_test and synthetic must share class_names")
    out_dir = Path(out_dir)
    encode = lambda t: codec.encode(t.truncate(codec.n_packets))  # noqa: E731
    real_b = encode(stratified_cap(real_test, max_flows, seed))
    syn_b = encode(stratified_cap(synthetic, max_flows, seed))
    train_b = encode(stratified_cap(real_train, max_flows, seed))
    result: dict[str, Any] = {
        "n_flows": {"real_test": len(real_b), "synthetic": len(syn_b), "real_train": len(train_b),
                    "synthetic_total": len(synthetic)},
        "synthetic_class_counts": dict(zip(names, synthetic.class_counts().tolist())),
        "marginals": marginal_distances(real_b, syn_b, names),
        "size_curves": size_curve_distance(real_b, syn_b, names),
        "discriminative": discriminative_score(real_b, syn_b, seed),
        "memorisation_input": memorisation(_flat(train_b), _flat(real_b), _flat(syn_b)),
    }
    if classifier is not None:
        result["latent"], z_real, z_syn = latent_fidelity(classifier, real_b, syn_b, train_b)
    if tstr_epochs > 0:
        result["tstr"] = tstr(synthetic, real_train, real_test, tstr_epochs, seed, codec)
    if plots:
        plot_marginals(real_b, syn_b, names, out_dir / "marginals.png")
        plot_size_curves(real_b, syn_b, names, out_dir / "size_curves.png")
        if classifier is not None:
            plot_latent_tsne(z_real, z_syn, out_dir / "latent_tsne.png", seed=seed)
    result["seconds"] = time.perf_counter() - started
    write_json_atomic(out_dir / "fidelity.json", result)
    return result


def summary_line(result: dict[str, Any]) -> str:
    m = result["marginals"]["overall"]
    parts = [f"{f} W1 {m[f]['w1']:.4f} JS {m[f]['js']:.3f}" for f in FEATURES if m[f]["w1"] is not None]
    parts.append(f"discriminative {result['discriminative']['score']:.3f}")
    if "tstr" in result:
        t = result["tstr"]
        parts.append(f"TSTR wF1 {t['tstr']['weighted_f1']:.4f} vs TRTR {t['trtr']['weighted_f1']:.4f}"
                     + (f" (ratio {t['ratio']:.3f})" if t["ratio"] is not None else ""))
    if "latent" in result:
        parts.append(f"latent FD {result['latent']['frechet']:.3f}, coverage {result['latent']['coverage']:.3f}")
    return "; ".join(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tsda evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, help="'synthetic' (the embedded simulator) or a Parquet file")
    p.add_argument("--synthetic", required=True, help="generated flows (Parquet, e.g. from tsda sample)")
    p.add_argument("--classifier", help="ClassifierModule checkpoint for the latent-space metrics")
    p.add_argument("--out", required=True, help="output folder (fidelity.json and plots)")
    p.add_argument("--tstr-epochs", type=int, default=5, help="classifier epochs for TSTR/TRTR (0 = skip)")
    p.add_argument("--max-flows", type=int, default=5000, help="flows per set for the distribution metrics")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (as data.split_seed) and the metrics")
    p.add_argument("--no-plots", action="store_true")
    g = p.add_argument_group("real data (as FlowDataModule's options)")
    g.add_argument("--invalid-rows", choices=("error", "drop"), default="error")
    g.add_argument("--min-packets", type=int, default=10)
    g.add_argument("--min-class-size", type=int, default=100)
    g.add_argument("--n-packets", type=int, default=20)
    g.add_argument("--split", choices=("stratified", "group"), default="stratified")
    g.add_argument("--train-fraction", type=float, default=1.0, help="fraction of the real training split for TRTR")
    g.add_argument("--synthetic-scale", type=float, default=1.0)
    g.add_argument("--synthetic-apps", type=int, default=20)
    return p


def main(argv: list[str]) -> None:
    from tsda.data.datamodule import FlowDataModule
    from tsda.data.sources import read_parquet

    args = _parser().parse_args(argv)
    classifier = None
    if args.classifier:
        from tsda.lit.classifier import ClassifierModule

        classifier = ClassifierModule.load_frozen(args.classifier)
    dm = FlowDataModule(
        path=None if args.real == "synthetic" else args.real, synthetic_scale=args.synthetic_scale,
        synthetic_apps=args.synthetic_apps, invalid_rows=args.invalid_rows, min_packets=args.min_packets,
        min_class_size=args.min_class_size, n_packets=args.n_packets, split=args.split,
        train_fraction=args.train_fraction, split_seed=args.seed,
        class_names=list(classifier.class_names) if classifier is not None else None,
    )
    if classifier is not None and len(dm.table) == 0:
        raise ValueError(f"--classifier {args.classifier} was trained on other classes than --real {args.real}")
    if dm.dropped_classes:
        warnings.warn(f"--real {args.real}: left out classes the classifier lacks: {dm.dropped_classes}",
                      stacklevel=1)
    names = dm.class_names
    raw = read_parquet(args.synthetic, max_packets=args.n_packets, invalid_rows=args.invalid_rows)
    synthetic, dropped = raw.relabel(names)
    if dropped:
        warnings.warn(f"{args.synthetic}: left out flows of classes the real data lacks: {dropped}", stacklevel=1)
    if len(synthetic) == 0:
        raise ValueError(f"--synthetic {args.synthetic}: no flow of a class of --real {args.real}")
    result = evaluate(dm.split_table("train"), dm.split_table("test"), synthetic, args.out, dm.codec,
                      classifier, args.tstr_epochs, args.max_flows, args.seed, plots=not args.no_plots)
    print(summary_line(result), flush=True)
    print(f"fidelity: {Path(args.out) / 'fidelity.json'}", flush=True)
