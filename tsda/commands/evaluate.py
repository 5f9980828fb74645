"""`tsda evaluate`: how close a generator's flows are to real ones, and how useful.

    tsda evaluate --data.path ../shared/data/fgnet/d1.parquet --data.invalid_rows drop \\
        --data.train_fraction 0.1 --synthetic runs/cgan/synthetic.parquet \\
        [--classifier runs/baseline/checkpoints/best.ckpt] --out runs/cgan/fidelity
    tsda evaluate --data.path ... --synthetic a.parquet b.parquet --names cgan diffusion --out runs/compare

The real flows are curated and split exactly as `tsda fit` does from the same `--data.*`
options: the TEST split is the reference of every distribution metric and the test set of
TSTR; the VALIDATION split early-stops the TSTR/TRTR classifiers; the TRAINING split
(with `--data.train_fraction`: the slice a generator of the 10 % protocol saw) serves TRTR,
real + synthetic and the memorisation check. Distribution metrics use at most `--max_flows`
flows per set (class shares kept). Keys of `fidelity.json`:

    marginals, size_curves: `tsda.metrics.fidelity`.
    discriminative: `tsda.metrics.discriminative` (gradient boosting on flattened flows).
    memorisation_input: `tsda.metrics.distances.memorisation` on flattened flows.
    variation (a file of `tsda sample --vary`: `source_row`, `strength`; `--data.path` must be the
        file that was varied): per strength, each variation's distance to its own source
        and to the nearest other training flow (`tsda.metrics.variation`).
    latent (with `--classifier`): Frechet distance, PRDC and memorisation of that
        classifier's latents `encode(x) (N, D)`, synthetic vs real test flows (encoded on
        `--device`: auto = CUDA when present).
    tstr (unless `--tstr_seeds 0`): converged multi-seed TSTR, TRTR and real + synthetic
        (`tsda/commands/tstr.py`).
Plots: `marginals.png`, `size_curves.png`, `latent_tsne.png` (with `--classifier`).

With several `--synthetic` files, each gets `OUT/<name>/` (names from `--names`, default
the file stems), TRTR is trained once and shared, and `OUT/comparison.json` and
`OUT/comparison.md` put the generators side by side.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace

from tsda.classifier.module import ClassifierModule
from tsda.commands.options import (
                                   DEVICE_HELP,
                                   Applies,
                                   add_data_arguments,
                                   build_datamodule,
                                   command_parser,
                                   data_rules,
                                   refuse_inapplicable,
                                   resolve_device,
                                   )
from tsda.commands.tstr import TstrSettings, gru_discriminative_score, trtr, tstr
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.curation import stratified_cap
from tsda.data.sources import read_parquet
from tsda.data.table import FlowTable
from tsda.logging import WandbSettings, log_summary_run
from tsda.metrics.discriminative import discriminative_score, feature_giveaways, flat_features
from tsda.metrics.distances import frechet_distance, memorisation, prdc
from tsda.metrics.fidelity import FEATURES, marginal_distances, size_curve_distance
from tsda.metrics.fidelity_plots import (
                                         plot_comparison,
                                         plot_example_flows,
                                         plot_latent_tsne,
                                         plot_marginals,
                                         plot_size_curves,
                                         )
from tsda.metrics.variation import VARIATION_COLUMNS, is_variation_file, variation_fidelity
from tsda.runs import atomic_path, write_json_atomic


@torch.no_grad()
def encode_batch(classifier: ClassifierModule, batch: FlowBatch, batch_size: int = 2048) -> np.ndarray:
    """`(N, D)` latents `classifier.encode(x)` of a batch (the classifier in eval mode)."""
    classifier.eval()
    parts = [classifier.encode(batch.x[i : i + batch_size].to(classifier.device)).cpu()
             for i in range(0, len(batch), batch_size)]
    return torch.cat(parts).double().numpy()


def latent_fidelity(z_real: np.ndarray, z_syn: np.ndarray, z_train: np.ndarray, k: int = 5) -> dict[str, Any]:
    """Frechet distance, PRDC and memorisation of synthetic latents `(M, D)` against real
    test latents `(N, D)` (and real training latents for memorisation)."""
    return {"frechet": frechet_distance(z_real, z_syn), **prdc(z_real, z_syn, k),
            "memorisation": memorisation(z_train, z_real, z_syn)}


def distribution_metrics(real_train: FlowTable, real_test: FlowTable, synthetic: FlowTable, codec: FlowCodec,
                         out_dir: Path, classifier: ClassifierModule | None, max_flows: int, seed: int,
                         plots: bool) -> dict[str, Any]:
    """Every metric but TSTR of `synthetic` against the real splits (plots into `out_dir`)."""
    names = real_test.class_names
    encode = lambda t: codec.encode(stratified_cap(t, max_flows, seed).truncate(codec.n_packets))  # noqa: E731
    real_b, syn_b, train_b = encode(real_test), encode(synthetic), encode(real_train)
    result: dict[str, Any] = {
        "n_flows": {"real_test": len(real_b), "synthetic": len(syn_b), "real_train": len(train_b),
                    "synthetic_total": len(synthetic)},
        "synthetic_class_counts": dict(zip(names, synthetic.class_counts().tolist())),
        "marginals": marginal_distances(real_b, syn_b, names),
        "size_curves": size_curve_distance(real_b, syn_b, names),
        "discriminative": discriminative_score(real_b, syn_b, seed),
        "discriminative_by_feature": feature_giveaways(real_b, syn_b, seed),
        "memorisation_input": memorisation(flat_features(train_b), flat_features(real_b), flat_features(syn_b)),
    }
    if classifier is not None:
        z_real, z_syn = encode_batch(classifier, real_b), encode_batch(classifier, syn_b)
        result["latent"] = latent_fidelity(z_real, z_syn, encode_batch(classifier, train_b))
    if plots:
        plot_marginals(real_b, syn_b, names, out_dir / "marginals.png")
        plot_size_curves(real_b, syn_b, names, out_dir / "size_curves.png")
        plot_example_flows(real_b, syn_b, names, out_dir / "example_flows.png", seed=seed)
        if classifier is not None:
            plot_latent_tsne(z_real, z_syn, out_dir / "latent_tsne.png", real_b.labels.numpy(),
                             syn_b.labels.numpy(), names, seed=seed)
    return result


def summary_line(result: dict[str, Any]) -> str:
    """One human line of a `fidelity.json`."""
    m = result["marginals"]["overall"]
    parts = [f"{f} W1 {m[f]['w1']:.4f} JS {m[f]['js']:.3f}" for f in FEATURES if m[f]["w1"] is not None]
    parts.append(f"discriminative {result['discriminative']['score']:.3f}")
    if "discriminative_gru" in result:
        parts.append(f"GRU discriminative {result['discriminative_gru']['score']:.3f}")
    if "tstr" in result:
        t = result["tstr"]
        parts.append(f"TSTR wF1 {t['tstr']['mean']['weighted_f1']:.4f} vs TRTR "
                     f"{t['trtr']['mean']['weighted_f1']:.4f}"
                     + (f" (ratio {t['ratio']:.3f})" if t["ratio"] is not None else "")
                     + (f", real + synthetic {t['real_plus_synthetic']['mean']['weighted_f1']:.4f}"
                        if "real_plus_synthetic" in t else ""))
    if "latent" in result:
        parts.append(f"latent FD {result['latent']['frechet']:.3f}, coverage {result['latent']['coverage']:.3f}")
    if "variation" in result:
        v = result["variation"]["all"]
        parts.append(f"variations: mean distance to their source {v['mean_source_distance']:.3f}, "
                     f"to other training flows {v['mean_nn_other_train']:.3f}")
    return "; ".join(parts)


def read_synthetic(path: str, names: tuple[str, ...], n_packets: int,
                   invalid_rows: Literal["error", "drop"]) -> FlowTable:
    """The generated flows of `path` relabelled onto the real classes `names` (flows of
    other classes left out with a warning)."""
    raw = read_parquet(path, max_packets=n_packets, invalid_rows=invalid_rows, meta_columns=VARIATION_COLUMNS)
    synthetic, dropped = raw.relabel(list(names))
    if dropped:
        warnings.warn(f"--synthetic {path}: left out flows of classes the real data lacks: {dropped}", stacklevel=1)
    if len(synthetic) == 0:
        raise ValueError(f"--synthetic {path}: no flow of a class of the real data")
    return synthetic.truncate(n_packets)


def variation_metrics(dm: Any, real_train: FlowTable, synthetic: FlowTable, max_flows: int, seed: int,
                      where: str) -> dict[str, Any] | None:
    """`tsda.metrics.variation.variation_fidelity` of a variation file: sources looked up
    in `--data.path` (read again, uncurated: a varied flow curation drops is still a
    source), at most `max_flows` training flows and variations (the subsamples of the
    other metrics); None, with a warning, without a data file."""
    if dm.hparams.path is None:
        warnings.warn(f"{where}: holds variations (source_row) but the real data is the simulator; their "
                      "distances to their sources need --data.path (the file that was varied)", stacklevel=1)
        return None
    real = dm.raw_table().relabel(list(synthetic.class_names))[0]
    return variation_fidelity(real, stratified_cap(real_train, max_flows, seed),
                              stratified_cap(synthetic, max_flows, seed), dm.codec, where)


def comparison_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per generator: the headline scalars of its `fidelity.json`."""
    rows = []
    for name, r in results.items():
        m = r["marginals"]["mean_per_class"]
        row: dict[str, Any] = {"generator": name, "discriminative": r["discriminative"]["score"],
                               "discriminative_gru": r.get("discriminative_gru", {}).get("score"),
                               "top_giveaway": r["discriminative_by_feature"]["top"][0]["feature"],
                               **{f"{f}_w1": m[f]["w1"] for f in FEATURES}}
        if "tstr" in r:
            t = r["tstr"]
            row.update(tstr=t["tstr"]["mean"]["weighted_f1"], tstr_std=t["tstr"]["std"]["weighted_f1"],
                       trtr=t["trtr"]["mean"]["weighted_f1"], ratio=t["ratio"])
            if "real_plus_synthetic" in t:
                row["real_plus_synthetic"] = t["real_plus_synthetic"]["mean"]["weighted_f1"]
        if "latent" in r:
            row.update(latent_frechet=r["latent"]["frechet"], latent_precision=r["latent"]["precision"],
                       latent_recall=r["latent"]["recall"])
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `comparison_rows` (floats to 4 digits)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flatten(result: dict[str, Any] | list[Any], prefix: str = "") -> dict[str, float]:
    """Every numeric scalar of a nested result as `{"a/b/c": value}` (lists of per-seed
    runs and per-class entries included, by index / name)."""
    out: dict[str, float] = {}
    items = result.items() if isinstance(result, dict) else enumerate(result)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def result_tables(result: dict[str, Any]) -> dict[str, Any]:
    """The per-class and per-seed parts of a `fidelity.json` as DataFrames for W&B."""
    import pandas as pd

    per_class = {name: {f"{f}_{m}": d[f][m] for f in FEATURES for m in ("w1", "js")}
                 for name, d in result["marginals"]["per_class"].items()}
    tables = {"per_class_marginals": pd.DataFrame.from_dict(per_class, orient="index").rename_axis("class"),
              "per_feature": pd.DataFrame(result["marginals"]["overall"]).T.rename_axis("feature")}
    giveaways = result["discriminative_by_feature"]
    tables["giveaways_per_position"] = pd.DataFrame(
        {c: giveaways[c] for c in ("size", "direction", "iat")}).rename_axis("position")
    if "tstr" in result:
        t = result["tstr"]
        rows = [{"set": k, **run} for k in ("tstr", "trtr", "real_plus_synthetic") if k in t for run in t[k]["seeds"]]
        tables["tstr_seeds"] = pd.DataFrame(rows).set_index("set")
    return tables


def generator_tag(path: str) -> str | None:
    """The `generator` column's first value of a `tsda sample` file (`<module>:<checkpoint>`)."""
    import pyarrow.parquet as pq

    if "generator" not in pq.read_schema(path).names:
        return None
    column = pq.read_table(path, columns=["generator"]).column("generator")
    return str(column[0].as_py()) if len(column) else None


def log_to_wandb(settings: WandbSettings, name: str, where: Path, result: dict[str, Any]) -> None:
    """One W&B run per evaluated generator (job type `evaluate`, group `settings.group`
    or `evaluate`): every scalar in the summary, the tables, the plots."""
    images = {png.stem: png for png in sorted(where.glob("*.png"))}
    log_summary_run(settings.mode, settings.project, settings.name or f"evaluate-{name}", where,
                    group=settings.group or "evaluate", job_type="evaluate", tags=settings.tags,
                    config={"generator": result.get("generator"), "synthetic": result["synthetic"],
                            "real": result["real"]},
                    summary=flatten(result), tables=result_tables(result), images=images)


def build_parser() -> ArgumentParser:
    parser = command_parser("tsda evaluate", __doc__)
    parser.add_argument("--synthetic", type=str, required=True, nargs="+",
                        help="generated flows (Parquet, e.g. from tsda sample); several to compare")
    parser.add_argument("--names", type=str, default=None, nargs="+",
                        help="a name per --synthetic file (default: the file stems)")
    parser.add_argument("--classifier", type=str | None, default=None,
                        help="ClassifierModule checkpoint for the latent-space metrics")
    parser.add_argument("--out", type=str, required=True, help="output folder (fidelity.json and plots)")
    parser.add_argument("--max_flows", type=int, default=5000, help="flows per set for the distribution metrics")
    parser.add_argument("--seed", type=int, default=0, help="seeds the subsamples and the discriminative score")
    parser.add_argument("--plots", type=bool, default=True, help="write the PNG plots")
    parser.add_argument("--tstr_seeds", type=int, default=3, help="classifiers per TSTR/TRTR set (0 = skip TSTR)")
    parser.add_argument("--tstr_max_epochs", type=int, default=100, help="TSTR/TRTR: at most this many epochs")
    parser.add_argument("--tstr_patience", type=int, default=5, help="TSTR/TRTR: early-stopping patience")
    parser.add_argument("--tstr_batch_size", type=int, default=256, help="TSTR/TRTR: training batch size")
    parser.add_argument("--real_plus_synthetic", type=bool, default=True,
                        help="also train on real + synthetic flows (per generator, as many seeds as TSTR)")
    parser.add_argument("--tstr_model", type=dict, default={},
                        help="TSTR/TRTR: further ClassifierModule arguments, e.g. '{backbone_kwargs: {width: 8}}'")
    parser.add_argument("--accelerator", type=str, default="auto", help="TSTR/TRTR/GRU training device (Lightning)")
    parser.add_argument("--device", type=str, default="auto",
                        help=f"device of the --classifier's latents: {DEVICE_HELP}")
    parser.add_argument("--gru", type=bool, default=True,
                        help="also train the post-hoc GRU discriminator (TimeGAN's discriminative score)")
    add_data_arguments(parser)
    parser.add_class_arguments(WandbSettings, "wandb")
    return parser


#: options per input: the data source's `--data.*`; TSTR's own settings (the GRU
#: discriminator trains with the epochs, patience, batch size and accelerator too)
RULES = [*data_rules(),
         Applies(("real_plus_synthetic", "tstr_model"), lambda cfg: cfg.tstr_seeds > 0,
                 "applies to TSTR: it does not apply with --tstr_seeds 0"),
         Applies(("tstr_max_epochs", "tstr_patience", "tstr_batch_size", "accelerator"),
                 lambda cfg: cfg.tstr_seeds > 0 or cfg.gru,
                 "trains the TSTR and GRU classifiers: it does not apply with --tstr_seeds 0 and --gru false")]


def _names(cfg: Namespace) -> list[str]:
    names = list(cfg.names) if cfg.names else [Path(p).stem for p in cfg.synthetic]
    if len(names) != len(cfg.synthetic):
        raise ValueError(f"--names gives {len(names)} names for {len(cfg.synthetic)} --synthetic files")
    if len(set(names)) != len(names):
        raise ValueError(f"--names must be distinct, got {names} (name the files with --names)")
    return names


def main(argv: list[str] | None = None) -> None:
    """`tsda evaluate --synthetic FILE [FILE ...] --out DIR [--data.* ...] [options]`."""
    started = time.perf_counter()
    parser = build_parser()
    cfg = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    refuse_inapplicable(parser, cfg, RULES)
    names = _names(cfg)
    if cfg.tstr_seeds < 0:
        raise ValueError(f"--tstr_seeds must be >= 0 (0 = no TSTR), got {cfg.tstr_seeds}")
    for path in cfg.synthetic:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--synthetic {path!r}: no such file")
    device = resolve_device(cfg.device)  # checked before any work, used by the latent classifier
    classifier = ClassifierModule.load_frozen(cfg.classifier).to(device) if cfg.classifier else None
    overrides = {"class_names": list(classifier.class_names)} if classifier is not None else {}
    dm = build_datamodule(cfg, **overrides)
    if classifier is not None and len(dm.table) == 0:
        raise ValueError(f"--classifier {cfg.classifier} was trained on other classes than the real data")
    if dm.dropped_classes:
        warnings.warn(f"real data: left out classes the classifier lacks: {dm.dropped_classes}", stacklevel=1)
    real_train, real_val, real_test = (dm.split_table(s) for s in ("train", "val", "test"))
    tables = {name: read_synthetic(path, real_test.class_names, dm.codec.n_packets, dm.hparams.invalid_rows)
              for name, path in zip(names, cfg.synthetic)}  # every file read before any work
    variations = {name: variation_metrics(dm, real_train, table, cfg.max_flows, cfg.seed, f"--synthetic {path}")
                  for (name, table), path in zip(tables.items(), cfg.synthetic) if is_variation_file(table)}

    settings = TstrSettings(max(cfg.tstr_seeds, 1), cfg.tstr_max_epochs, cfg.tstr_patience, cfg.tstr_batch_size,
                            cfg.accelerator, dict(cfg.tstr_model))
    reference = trtr(real_train, real_val, real_test, dm.codec, settings) if cfg.tstr_seeds > 0 else None
    out = Path(cfg.out)
    results: dict[str, dict[str, Any]] = {}
    for name, synthetic in tables.items():
        where = out if len(tables) == 1 else out / name
        result = distribution_metrics(real_train, real_test, synthetic, dm.codec, where, classifier,
                                      cfg.max_flows, cfg.seed, cfg.plots)
        if variations.get(name) is not None:
            result["variation"] = variations[name]
        if cfg.gru:
            result["discriminative_gru"] = gru_discriminative_score(real_test, synthetic, dm.codec, settings,
                                                                    cfg.seed, cfg.max_flows)
        if reference is not None:
            result["tstr"] = tstr(synthetic, real_train, real_val, real_test, dm.codec, settings, reference,
                                  cfg.real_plus_synthetic)
        path = cfg.synthetic[names.index(name)]
        result.update(synthetic=str(path), name=name, generator=generator_tag(path),
                      real={"source": dm.hparams.path or "synthetic", "train_fraction": dm.hparams.train_fraction,
                            "split_seed": dm.hparams.split_seed, "n_train": len(real_train),
                            "n_val": len(real_val), "n_test": len(real_test)},
                      seconds=time.perf_counter() - started)  # since the command started (TRTR included)
        write_json_atomic(where / "fidelity.json", result)
        log_to_wandb(WandbSettings(**dict(cfg.wandb)), name, where, result)
        results[name] = result
        print(f"{name}: {summary_line(result)}", flush=True)
        print(f"fidelity: {where / 'fidelity.json'}", flush=True)
    if len(tables) > 1:
        write_comparison(out, dict(zip(names, cfg.synthetic)), results, WandbSettings(**dict(cfg.wandb)), cfg.plots)


def write_comparison(out: Path, files: dict[str, str], results: dict[str, dict[str, Any]], wandb: WandbSettings,
                     plots: bool) -> None:
    """`out/comparison.{json,md,png}` and one W&B table of the generators `results` side by side."""
    import pandas as pd

    rows = comparison_rows(results)
    write_json_atomic(out / "comparison.json", {"rows": rows})
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(markdown(rows))
    if plots:
        plot_comparison(rows, out / "comparison.png")
    log_summary_run(wandb.mode, wandb.project, wandb.name or f"compare-{out.name}", out,
                    group=wandb.group or "evaluate", job_type="compare", tags=wandb.tags, config={"synthetic": files},
                    tables={"comparison": pd.DataFrame(rows).set_index("generator")},
                    images={"comparison": out / "comparison.png"} if plots else None)
    print(f"comparison: {out / 'comparison.md'}", flush=True)
