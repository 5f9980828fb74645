"""`tsda sample`: draw flows from any trained generator checkpoint into a Parquet file.

    tsda sample --ckpt runs/fgnet_cgan/checkpoints/last.ckpt --per_class 500 --seed 0 \\
        --out runs/fgnet_cgan/synthetic.parquet
    tsda sample --ckpt CKPT --n 10000 --seed 1 --out FILE.parquet      # spread evenly over classes
    tsda sample --ckpt CKPT --n 2000 --labels com.whatsapp,com.spotify.music --out FILE.parquet
    tsda sample --ckpt DIFFUSION.ckpt --per_class 100 --steps 50 --sampler ddim --cfg_scale 2 ...
    tsda sample --ckpt UNCONDITIONAL.ckpt --label_with CLASSIFIER.ckpt --per_class 100 \
        --min_confidence 0.9 [--max_draws 50000] [--latent_guidance_scale 2 --guide labeller] --out FILE.parquet

Variations (`--vary FILE`): instead of drawing flows from scratch, a flow near each flow of
FILE (tcbench schema), of its class, from a generator that can vary (`can_vary`):

    tsda sample --ckpt CKPT --vary flows.parquet --strength 0.25 0.5 1.0 [--variations 4] \
        [--truncate] [--invalid_rows drop] --seed 0 --out variations.parquet

`--strength` says how near (0 = the flow itself, 1 = a fresh sample of its class); with
several, every flow is varied at each. The file gets `source_row` (FILE's row each
variation comes from) and `strength` columns, variations ordered by source row, then
strength, then variation; `tsda evaluate` with `--data.path FILE` reports how far each is
from its source and from the other training flows. Flows longer than the generator's L
packets are refused unless `--truncate` (their first L packets are varied).

`--out FILE.pcap` writes the flows as packets instead (`tsda.data.capture.export`: one TCP
conversation per flow, valid headers, zero payload bytes, each class served by its own
address, and `FILE.rules.csv` to label them again with `tsda data import FILE.pcap --label
FILE.rules.csv`).

Flows are decoded to real units with the checkpoint's `FlowCodec` settings and written in
the tcbench schema (`tsda.data.sources.write_parquet`, atomic) plus a `generator` column
(`<class name>:<checkpoint path>`). Generator options (`--steps`, `--sampler`,
`--cfg_scale`, `--latent_guidance_scale`, `--option key=value`) go to the module's
`sample` only when given; one that its family does not take is refused, naming the flag
and the options it takes, before anything is drawn (`tsda.commands.generator_options`).
Options that need another (`--strength` needs `--vary`, `--min_confidence` needs
`--label_with`) or that another rules out (`--per_class` with `--vary`) are refused too.

Labelling (`--label_with CLASSIFIER_CKPT`, `tsda.labelling`): flows are drawn, labelled
with the classifier's prediction and kept at `--min_confidence` or above until the
per-class quotas (`--per_class`, `--n`, `--labels`) are filled or `--max_draws` flows were
drawn (default 20 per flow asked for); the file gets `label_confidence` and `labeller`
columns, the per-class acceptance rates are printed and written to `OUT` with suffix
`.labelling.json` (classes not filled are named there). The classifier must know the
generator's classes (same order) and codec. An unconditional generator (trained with
`conditional: false`) draws classes only this way: without `--label_with` it accepts only
`--n` and writes flows of one class, `unlabelled`. With a diffusion model,
`--latent_guidance_scale > 0` guides each draw toward a class still short (`--guide`:
`model` = its stored guide, `labeller` = the classifier; `auto` = the stored one if any).
"""

from __future__ import annotations

import json
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace

from tsda.augment.variation import check_strengths, vary_in_batches
from tsda.commands.generator_options import check_generator_options, generator_call
from tsda.commands.options import DEVICE_HELP, Applies, command_parser, refuse_inapplicable, resolve_device
from tsda.data.capture.export import export_table, spaced_starts
from tsda.data.curation import FILE_ROW
from tsda.data.sources import read_parquet, write_parquet
from tsda.errors import TsdaError
from tsda.generate import plan_labels, sample_flows, to_table, unlabelled_table
from tsda.generators.base import GenerativeModule, load_generative
from tsda.runs import write_json_atomic
from tsda.seeds import seeded_generator

PCAP_SUFFIXES = (".pcap", ".cap")


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise TsdaError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> ArgumentParser:
    p = command_parser("tsda sample", __doc__, formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=str, required=True, help="generator checkpoint (any GenerativeModule)")
    p.add_argument("--n", type=int | None, default=None, help="flows in all, spread evenly over the chosen classes")
    p.add_argument("--per_class", type=int | None, default=None, help="flows per class (instead of --n)")
    p.add_argument("--labels", type=str | None, default=None, help="comma-separated class names (or indices)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, required=True, help="output Parquet file, or a .pcap file of packets")
    p.add_argument("--batch_size", type=int, default=1024)
    p.add_argument("--device", type=str, default="auto", help=DEVICE_HELP)
    p.add_argument("--steps", type=int | None, default=None, help="generator option: sampling steps (diffusion)")
    p.add_argument(
        "--sampler",
        type=Literal["ddpm", "ddim", "dpmpp"] | None,
        default=None,
        help="generator option: diffusion sampler, ddpm, ddim or dpmpp (DPM-Solver++)",
    )
    p.add_argument("--cfg_scale", type=float | None, default=None, help="generator option: classifier-free guidance")
    p.add_argument("--latent_guidance_scale", type=float | None, default=None, help="generator option (diffusion)")
    p.add_argument(
        "--option",
        type=str,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other generator option (JSON value), e.g. --option latent_scale=0.8; repeat for several",
    )
    p.add_argument(
        "--label_with",
        type=str | None,
        default=None,
        metavar="CLASSIFIER_CKPT",
        help="label the drawn flows with this classifier's predictions (rejection sampling of quotas)",
    )
    p.add_argument("--min_confidence", type=float | None, default=None, help="--label_with: least confidence kept")
    p.add_argument("--max_draws", type=int | None, default=None, help="--label_with: flows drawn at most")
    p.add_argument(
        "--guide",
        type=Literal["auto", "model", "labeller"] | None,
        default=None,
        help="--label_with and --latent_guidance_scale: the guide (default auto: the model's, else the labeller)",
    )
    p.add_argument("--vary", type=str | None, default=None, metavar="FILE", help="vary the flows of this Parquet file")
    p.add_argument(
        "--strength",
        type=float,
        nargs="+",
        default=None,
        help="--vary: how far from each flow, in [0, 1] (0 = itself, 1 = a fresh sample); several: each",
    )
    p.add_argument("--variations", type=int | None, default=None, help="--vary: variations per flow and strength")
    p.add_argument(
        "--truncate",
        action="store_true",
        help="--vary: vary the first L packets of flows longer than the generator's L (else refused)",
    )
    p.add_argument(
        "--invalid_rows",
        type=Literal["error", "drop"] | None,
        default=None,
        help="--vary: malformed rows of FILE stop the command (error, default) or are left out (drop)",
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


#: options of `--vary` only, and those of drawing flows from scratch only
VARY_ONLY = ("strength", "variations", "truncate", "invalid_rows")
DRAW_ONLY = ("n", "per_class", "labels", "label_with", "min_confidence", "max_draws", "guide")

RULES = (
    Applies(VARY_ONLY, lambda cfg: cfg.vary is not None, "needs --vary FILE"),
    Applies(
        DRAW_ONLY,
        lambda cfg: cfg.vary is None,
        "does not apply to --vary (one variation of each of its flows per strength, --variations K for more)",
    ),
    Applies(("min_confidence", "max_draws", "guide"), lambda cfg: cfg.label_with is not None, "needs --label_with"),
)


def _labelled(
    model: GenerativeModule, args: Namespace, labels: np.ndarray, options: dict[str, Any]
) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """`--label_with`: the labelled table, its extra columns and the report."""
    from tsda.labelling import format_report, label_samples, load_labeller

    labeller = load_labeller(args.label_with, model)
    quotas = np.bincount(labels, minlength=len(model.class_names))
    with generator_call(model):
        batch, confidence, report = label_samples(
            model,
            labeller,
            quotas,
            seed=args.seed,
            batch_size=args.batch_size,
            min_confidence=0.0 if args.min_confidence is None else args.min_confidence,
            max_draws=args.max_draws,
            options=options,
            guide=args.guide or "auto",
            progress=not args.no_progress,
        )
    print(format_report(report), flush=True)
    if report["kept"] == 0:
        raise TsdaError(
            f"--label_with {args.label_with}: no drawn flow reached --min_confidence "
            f"{report['min_confidence']:g} within --max_draws {report['max_draws']}; nothing written"
        )
    extra = {
        "label_confidence": confidence.astype(np.float64),
        "labeller": np.full(len(batch), str(args.label_with), dtype=object),
    }
    return to_table(model, batch), extra, report


def _options(args: Namespace) -> dict[str, Any]:
    """The generator options given on the command line (only those given)."""
    options: dict[str, Any] = {
        key: value
        for key, value in (
            ("steps", args.steps),
            ("sampler", args.sampler),
            ("cfg_scale", args.cfg_scale),
            ("latent_guidance_scale", args.latent_guidance_scale),
        )
        if value is not None
    }
    options.update(dict(_parse_option(o) for o in args.option))
    return options


def _check_arguments(parser: ArgumentParser, args: Namespace) -> list[float]:
    """Refuse options that do not apply (`RULES`) or bad values, before the checkpoint is
    loaded; the strengths of `--vary` (empty without it)."""
    refuse_inapplicable(parser, args, RULES)
    if args.batch_size < 1:
        raise TsdaError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.vary is None:
        return []
    if args.strength is None:
        raise TsdaError("--vary needs --strength S (in [0, 1]: 0 = the flow itself, 1 = a fresh sample)")
    try:
        strengths = check_strengths("--strength", args.strength)
    except ValueError as exc:
        raise TsdaError(str(exc)) from exc
    if args.variations is not None and args.variations < 1:
        raise TsdaError(f"--variations must be >= 1, got {args.variations}")
    if Path(args.out).suffix.lower() in PCAP_SUFFIXES:
        raise TsdaError(f"--vary writes Parquet (with the source_row and strength columns), not {args.out}")
    return strengths


def _vary(model: GenerativeModule, args: Namespace, strengths: list[float]) -> None:
    """`--vary FILE`: variations of every flow of FILE, written with `source_row` and `strength`.

    Raises:
        TsdaError: the generator cannot vary or is unconditional; FILE holds classes the
            generator does not know, no flow, a flow without packets, or (without
            `--truncate`) flows longer than the generator's packets. Nothing is written.
    """
    where = f"--vary {args.vary}"
    if not model.conditional:
        raise TsdaError(
            f"--ckpt {args.ckpt}: an unconditional generator (trained with conditional: false) cannot "
            "vary a flow within its class"
        )
    if not getattr(model, "can_vary", False):
        raise TsdaError(f"--ckpt {args.ckpt}: its generator ({type(model).__name__}) cannot vary flows")
    n_packets = model.codec.n_packets
    raw = read_parquet(
        args.vary, max_packets=n_packets + 1, invalid_rows=args.invalid_rows or "error", row_index=FILE_ROW
    )
    table, unknown = raw.relabel(model.class_names)
    if unknown:
        known = ", ".join(model.class_names[:4]) + (", ..." if len(model.class_names) > 4 else "")
        raise TsdaError(
            f"{where}: flows of classes the generator does not know: {unknown} (it knows "
            f"{len(model.class_names)}: {known})"
        )
    rows = table.meta[FILE_ROW]  # (N,) FILE's row of each flow
    if len(table) == 0:
        raise TsdaError(f"{where}: holds no flow")
    if (table.lengths < 1).any():
        raise TsdaError(f"{where}: row {int(rows[np.argmax(table.lengths < 1)])} holds no packet")
    longer = table.lengths > n_packets
    if longer.any() and not args.truncate:
        raise TsdaError(
            f"{where}: {int(longer.sum())} flows are longer than the generator's {n_packets} packets "
            f"(first: row {int(rows[np.argmax(longer)])}); --truncate varies their first {n_packets}"
        )
    flows = model.codec.encode(table.truncate(n_packets)).to(model.device)
    k = args.variations or 1
    source = np.repeat(np.arange(len(flows)), len(strengths) * k)  # (N*S*K,) source-major
    strength = np.tile(np.repeat(np.asarray(strengths, dtype=np.float64), k), len(flows))  # (N*S*K,) then strength
    g = seeded_generator(args.seed, model.device)
    with generator_call(model):
        varied = vary_in_batches(
            model,
            flows.index(torch.from_numpy(source).to(model.device)),
            torch.from_numpy(strength).float().to(model.device),
            g,
            _options(args),
            args.batch_size,
            progress=not args.no_progress,
        )
    extra = {
        "generator": np.full(len(varied), f"{type(model).__name__}:{args.ckpt}", dtype=object),
        "source_row": rows[source].astype(np.int64),
        "strength": strength,
    }
    out = write_parquet(to_table(model, varied.to("cpu")), args.out, extra=extra)
    print(f"wrote {len(varied)} variations of {len(flows)} flows of {args.vary} to {out}", flush=True)


def _check_model(model: GenerativeModule, args: Namespace) -> None:
    """Refuse what the loaded generator cannot do with these options (its own generator
    options; classes from an unconditional one), before anything is drawn."""
    check_generator_options(model, _options(args), vary=args.vary is not None)
    if model.conditional or args.label_with is not None or args.vary is not None:
        return
    if args.per_class or args.labels:
        raise TsdaError(
            f"--ckpt {args.ckpt}: an unconditional generator (trained with conditional: false) cannot "
            "draw flows of a class (--per_class, --labels): label its flows with --label_with "
            "CLASSIFIER_CKPT, or draw unlabelled flows with --n"
        )
    if args.latent_guidance_scale:
        raise TsdaError(
            "--latent_guidance_scale: on an unconditional generator it guides toward classes: "
            "add --label_with CLASSIFIER_CKPT (which checks the flows' classes)"
        )


def main(argv: list[str]) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    strengths = _check_arguments(parser, args)
    options = _options(args)  # a malformed --option is refused here
    model = load_generative(args.ckpt, map_location=resolve_device(args.device))
    _check_model(model, args)
    if args.vary is not None:
        _vary(model, args, strengths)
        return
    labels = plan_labels(
        model.class_names,
        n=args.n,
        per_class=args.per_class,
        labels=[s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None,
    )
    extra: dict[str, np.ndarray] = {}
    report = None
    if args.label_with is not None:
        table, extra, report = _labelled(model, args, labels, options)
    else:
        with generator_call(model):
            batch = sample_flows(
                model, labels, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress, **options
            )
        table = to_table(model, batch) if model.conditional else unlabelled_table(model, batch)
    tag = f"{type(model).__name__}:{args.ckpt}"
    if Path(args.out).suffix.lower() in PCAP_SUFFIXES:
        n = len(table)
        out, rules = Path(args.out), export_table(table, args.out, np.ones(n, dtype=bool), spaced_starts(n))[1]
        print(f"packets: synthetic TCP conversations (valid headers, zero payload bytes); labels: --label {rules}")
    else:
        out = write_parquet(table, args.out, extra={"generator": np.full(len(table), tag, dtype=object), **extra})
    if report is not None:
        write_json_atomic(Path(out).with_suffix(".labelling.json"), report)
    counts = table.class_counts()
    print(f"wrote {len(table)} flows of {int((counts > 0).sum())} classes to {Path(out)}", flush=True)
