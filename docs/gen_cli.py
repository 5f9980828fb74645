"""Write docs/cli.md from the `--help` output of every `tsda` command.

    .venv/bin/python docs/gen_cli.py      # from the repository root; about 2 minutes on a CPU

Not run by `make docs` (each `--help` imports torch and Lightning): rerun it when a command's
options change and commit the page with the change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TSDA = str(Path(sys.executable).parent / "tsda")

#: (heading, argv, what it does); each gets its `--help` below the text
COMMANDS: list[tuple[str, list[str], str]] = [
    ("tsda", [], "The dispatcher: `tsda [--verbose] COMMAND ...`. Bad input to any command prints "
     "`tsda: error: <what, where>` and exits 2 without a traceback; `--verbose` (or `TSDA_VERBOSE=1`) "
     "shows the traceback instead."),
    ("tsda fit", ["fit"], "Train a module (classifier, generator or joint) with Lightning's CLI "
     "(LightningCLI): every Trainer option passes through. Writes the run directory (`--run_dir`): "
     "`checkpoints/best.ckpt` and `last.ckpt`, `metrics.csv`, `config.yaml`, `metrics.json`. The "
     "model's own options are those of its class: see [the module options](#module-options-model) "
     "below."),
    ("tsda test", ["test"], "Evaluate a classifier checkpoint on flows, possibly of another file "
     "(`--data.path OTHER.parquet --data.split none`). Options not given default to what the "
     "checkpoint stored for its datamodule, except `--data.min_class_size` (0)."),
    ("tsda data", ["data"], "What a flow source holds; packet captures to flows and flows back to packets."),
    ("tsda data describe", ["data", "describe"], "Flows per class (raw, with more than "
     "`--data.min_packets` packets, kept by curation), lengths, size and inter-arrival time "
     "quantiles and the direction share; `--json OUT` writes the same numbers as JSON."),
    ("tsda data import", ["data", "import"], "pcap/pcapng files or folders (recursively) to a "
     "tcbench-schema Parquet file. See [Data: captures](data.md#captures-tsda-data-import-and-export)."),
    ("tsda data export", ["data", "export"], "A flow table to a pcap file of synthetic packets "
     "(valid headers, zero payload bytes) and `OUT.rules.csv`, the `--label` file that labels them "
     "again on import."),
    ("tsda augment", ["augment"], "List, preview, apply offline (`enlarge`) and search augmentations."),
    ("tsda augment list", ["augment", "list"], "Prints every augmentation's name, family, the "
     "probability that it alters each feature (size, direction, iat), its magnitude range and its "
     "defaults. It takes no options."),
    ("tsda augment preview", ["augment", "preview"], "A PNG of a few training flows before and after "
     "an augmentation (a name or a YAML file)."),
    ("tsda augment enlarge", ["augment", "enlarge"], "Every flow of the three splits with a stored "
     "split column, plus `--copies` augmented copies of each training flow, as Parquet "
     "(train on it with `tsda fit --data.split column`)."),
    ("tsda augment search", ["augment", "search"], "Search a TrivialAugment policy with Optuna by the "
     "validation weighted F1 of short `tsda fit` runs; any option not listed here is a `tsda fit` "
     "override for every trial. Rerunning the same command resumes the search."),
    ("tsda campaign", ["campaign"], "Campaigns: every (condition, seed) of a study as an ordinary "
     "`tsda fit` run. See [Campaigns](campaigns.md)."),
    ("tsda campaign run", ["campaign", "run"], "Run (or resume) a campaign; options after the "
     "listed ones are `tsda fit` overrides for every run (e.g. `--data.train_fraction 0.1`)."),
    ("tsda campaign report", ["campaign", "report"], "Write `DIR/report.md` with its charts, or with "
     "`--conditions`, `--seeds` or `--complete` the report of a selection in `DIR/<into>/`."),
    ("tsda ensemble", ["ensemble"], "Many `tsda fit` runs in one process, batched where they stack: "
     "what `tsda campaign run --executor ensemble` starts."),
    ("tsda sample", ["sample"], "Draw flows from any generator checkpoint into a Parquet file (or a "
     "pcap file); label an unconditional generator's flows with a classifier (`--label_with`); vary "
     "the flows of a file (`--vary`)."),
    ("tsda evaluate", ["evaluate"], "How close a generator's flows are to real ones and how useful: "
     "distribution distances, discriminative scores, latent-space metrics (with `--classifier`), "
     "memorisation and TSTR / TRTR / real + synthetic."),
]

#: the module classes `tsda fit --model` takes, each with its own `--model.init_args.*`
MODULES = [
    "tsda.classifier.module.ClassifierModule",
    "tsda.generators.gan.module.GANModule",
    "tsda.generators.diffusion.module.DiffusionModule",
    "tsda.generators.transformer.module.TransformerModule",
    "tsda.joint.module.JointModule",
]

#: the section on top of the page: what holds for every command
CONVENTIONS = """## One spelling

One spelling: options are written with underscores, the same across commands, as
LightningCLI writes its own (`--trainer.max_epochs`, `--data.path`):

- `--per_class`, `--batch_size`, `--label_with`, `--dry_run`, `--members_per_job`,
  `--tstr_seeds`; nested options with dots: `--data.train_fraction`, `--wandb.mode`,
  `--model.init_args.lr`. A hyphen spelling (`--per_class`) is refused, naming the right one:
  `tsda: error: --per_class: options are spelled with underscores: --per_class`. Options are
  never abbreviated.
- Every command parses with the same parser (jsonargparse; `tsda fit` and `tsda test`
  with Lightning's) and takes `-c CONFIG.yaml` holding any of its options (`tsda campaign
  run` and `tsda augment search` excepted: their `-c` is the `tsda fit` config).
- Switches take no value (`--truncate`, `--no_progress`, `--dry_run`, `--complete`);
  settings that are booleans take one (`--plots false`, `--test_after_fit false`).
- An option that does not apply to the input is refused before any work, nothing written:
  a column name (`--data.label_column`) with the embedded synthetic dataset, a sampler
  option (`--steps`) for a cGAN checkpoint, `--strength` without `--vary`,
  `--min_confidence` without `--label_with`, a ray option with another executor, an option
  of `tsda campaign report` given to `run`, ...
- Errors read `tsda: error: --OPTION: rule, what was given` (e.g.
  `tsda: error: --data.train_fraction: expected a number, got 'abc'`) and exit with
  status 2; `tsda --verbose` shows the traceback.
"""

#: longer help texts start folded
FOLD_OVER = 60


def help_text(argv: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "100", "WANDB_MODE": "disabled", "TSDA_VERBOSE": ""}
    out = subprocess.run([TSDA, *argv], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return out.stdout.rstrip()


def block(title: str, text: str) -> str:
    marker = "???" if len(text.splitlines()) > FOLD_OVER else "???+"
    body = "\n".join(f"    {line}" if line else "" for line in ["```text", *text.splitlines(), "```"])
    return f'{marker} example "{title}"\n\n{body}\n'


def main() -> None:
    parts = [
        "# Command line\n",
        CONVENTIONS,
        "Every `tsda` command and its options, as `tsda COMMAND --help` prints them (generated by "
        "`docs/gen_cli.py`; long ones are folded: click to open). Every command that reads flows "
        "takes the same `--data.*` options (`FlowDataModule`'s, [Data](data.md)); every command that "
        "computes outside a Trainer takes `--device auto|cpu|cuda|cuda:N`.\n",
    ]
    for heading, argv, text in COMMANDS:
        parts.append(f"## {heading}\n\n{text}\n")
        parts.append(block(" ".join(["tsda", *argv, "--help"]), help_text([*argv, "--help"])))
    parts.append("## Module options (`--model`)\n\n`tsda fit -c CONFIG` names the module in the "
                 "config's `model.class_path`; its arguments are `--model.init_args.NAME` on the "
                 "command line. `tsda fit --model.help CLASS` prints them:\n")
    for cls in MODULES:
        parts.append(block(f"tsda fit --model.help {cls}", help_text(["fit", "--model.help", cls])))
    (ROOT / "docs" / "cli.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
