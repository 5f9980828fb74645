"""Host syncs per classifier training step on CUDA, and the markdown table of `benchmarks/gpu_check.sh`.

    python benchmarks/gpu_report.py syncs [--steps 20] [--warmup 5] [--batch-size 256] [--json OUT.json]
    python benchmarks/gpu_report.py table DIR          # DIR: where gpu_check.sh wrote its parts

`syncs` counts the host-device synchronisations (`torch.cuda.set_sync_debug_mode("warn")`:
one warning per synchronising call, each recorded) over `--steps` classifier training steps
after `--warmup` steps, for:

- `module step, fp32` / `module step, bf16 autocast`: `ClassifierModule.training_step`,
  backward, Adam step and `zero_grad` on a batch already on the GPU (the step itself; the
  test `tests/gpu/test_gpu.py` asserts zero);
- `Lightning step, bf16-mixed`: whole iterations of Lightning's training loop (the batch
  drawn by `FlowDataModule`'s index sampler and indexed on the device, hooks, the
  optimiser step) of a Trainer fit on the embedded synthetic data, counted from the start
  of one step to the start of the step `--steps` later.

Each line prints syncs per step and the source lines that synchronised (file:line, most
frequent first). `table` reads the JSON files and logs gpu_check.sh left in DIR and prints
one markdown table (the one to paste into `benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYNC_MESSAGE = "synchronizing CUDA operation"


# -- syncs ------------------------------------------------------------------------------------
def counted(run: Callable[[Callable[[bool], None]], None]) -> Counter:
    """The synchronising calls `run` makes while it has switched counting on: `run` gets a
    switch `on(flag)` (the device synchronised before it is flipped); `file:line -> count`."""
    import torch

    def switch(flag: bool) -> None:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn" if flag else 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run(switch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_MESSAGE in str(w.message))


def module_step_syncs(steps: int, warmup: int, batch_size: int, bf16: bool) -> Counter:
    """Syncs of `steps` bare classifier steps (training_step, backward, Adam) after `warmup`."""
    import torch

    from tsda.classifier.module import ClassifierModule
    from tsda.data.codec import FlowCodec
    from tsda.data.synthetic import make_synthetic

    table = make_synthetic(scale=0.05, n_apps=20, seed=0)
    batch = FlowCodec().encode(table).index(torch.arange(batch_size) % len(table)).to("cuda")
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=20, latent_points=0).cuda()
    optimizer = model.configure_optimizers()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run(on: Callable[[bool], None]) -> None:
        for _ in range(warmup):
            step()
        on(True)
        for _ in range(steps):
            step()
        on(False)

    return counted(run)


def lightning_step_syncs(steps: int, warmup: int, batch_size: int) -> Counter:
    """Syncs of `steps` whole iterations of Lightning's training loop (bf16-mixed)."""
    import lightning as L
    import torch

    from tsda.classifier.module import ClassifierModule
    from tsda.data.datamodule import FlowDataModule

    class Switch(L.Callback):
        def __init__(self, on: Callable[[bool], None]) -> None:
            self.on = on

        def on_train_batch_start(
            self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            if trainer.global_step == warmup:
                self.on(True)
            elif trainer.global_step == warmup + steps:
                self.on(False)

    dm = FlowDataModule(synthetic_scale=0.5, batch_size=batch_size)
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=dm.num_classes, class_names=dm.class_names, latent_points=0)

    def run(on: Callable[[bool], None]) -> None:
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            precision="bf16-mixed",
            max_steps=warmup + steps + 1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Switch(on)],
        )
        trainer.fit(model, datamodule=dm)
        if trainer.global_step < warmup + steps + 1:
            raise RuntimeError(f"the epoch ended after {trainer.global_step} steps: use a smaller --batch-size")

    return counted(run)


def syncs(args: argparse.Namespace) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("syncs: no CUDA device (torch.cuda.is_available() is False)")
    rows = {
        "module step, fp32": module_step_syncs(args.steps, args.warmup, args.batch_size, bf16=False),
        "module step, bf16 autocast": module_step_syncs(args.steps, args.warmup, args.batch_size, bf16=True),
        "Lightning step, bf16-mixed": lightning_step_syncs(args.steps, args.warmup, args.batch_size),
    }
    result = {
        name: {"per_step": sum(c.values()) / args.steps, "sources": dict(c.most_common(5))} for name, c in rows.items()
    }
    print(
        f"host syncs per step on {torch.cuda.get_device_name()} ({args.steps} steps after {args.warmup}, "
        f"batch {args.batch_size}):"
    )
    for name, r in result.items():
        where = ", ".join(f"{k} x{v}" for k, v in r["sources"].items()) or "-"
        print(f"  {name:28s} {r['per_step']:6.2f}   {where}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"steps": args.steps, "warmup": args.warmup, "rows": result}, indent=1))


# -- table ------------------------------------------------------------------------------------
def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _status(folder: Path, part: str) -> str:
    """What gpu_check.sh wrote of a part: `ok`, `failed (exit N)`, `timed out after N s`, `skipped: ...`."""
    path = folder / f"{part}.status"
    return path.read_text().strip() if path.is_file() else "not run"


def _tests_row(folder: Path) -> list[str]:
    status = _status(folder, "tests")
    xml = folder / "tests.xml"
    if not xml.is_file():
        return ["gpu tests (`pytest -m gpu`)", "-", status]
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    failed = [
        c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None
    ]
    detail = f"{float(suite.get('time', 0)):.0f} s" + (f"; failed: {', '.join(failed[:6])}" if failed else "")
    return [
        "gpu tests (`pytest -m gpu`)",
        f"{passed} passed, {n['failures'] + n['errors']} failed, {n['skipped']} skipped",
        f"{detail}; {status}",
    ]


def _throughput_rows(folder: Path) -> list[list[str]]:
    runs = {name: _load(folder / f"throughput_{name}.json") for name in ("cpu", "cuda_fp32", "cuda_bf16")}
    cpu = runs["cpu"]["train_flows_per_s"] if runs["cpu"] else None
    fp32 = runs["cuda_fp32"]["train_flows_per_s"] if runs["cuda_fp32"] else None
    rows = []
    for name, label in (("cpu", "CPU, fp32"), ("cuda_fp32", "CUDA, fp32"), ("cuda_bf16", "CUDA, bf16-mixed")):
        r = runs[name]
        if r is None:
            rows.append([f"classifier training, {label}", "-", _status(folder, f"throughput_{name}")])
            continue
        rate = r["train_flows_per_s"]
        ratios = [
            f"{rate / cpu:.1f}x CPU" if cpu and name != "cpu" else "",
            f"{rate / fp32:.2f}x CUDA fp32" if fp32 and name == "cuda_bf16" else "",
        ]
        where = r["gpu"] or f"{r['threads']} CPU threads"
        detail = (
            f"{', '.join(x for x in ratios if x) + '; ' if any(ratios) else ''}{where}, {r['n_train']} flows "
            f"({r['data']}), batch {r['batch_size']}, {r['fit_wall_s_per_epoch']:.2f} s/epoch"
        )
        rows.append([f"classifier training, {label}", f"{rate:,.0f} flows/s", detail])
    return rows


def _sync_rows(folder: Path) -> list[list[str]]:
    data = _load(folder / "syncs.json")
    if data is None:
        return [["host syncs per training step", "-", _status(folder, "syncs")]]
    return [
        [
            f"host syncs per step: {name}",
            f"{r['per_step']:.2f}",
            ", ".join(f"{k} x{v}" for k, v in r["sources"].items()) or "none",
        ]
        for name, r in data["rows"].items()
    ]


def _campaign_row(folder: Path) -> list[str]:
    r = _load(folder / "campaign.json")
    if r is None:
        return ["ensemble vs process executor (CUDA)", "-", _status(folder, "campaign")]
    rph = r["runs_per_hour"]
    return [
        f"ensemble vs process executor ({r.get('device', '?')})",
        f"{r['ratio']['ensemble']:.2f}x runs/hour",
        (
            f"ensemble {rph['ensemble']:,.0f}, process {rph['process']:,.0f} runs/h ({r['runs']} runs, "
            f"{r['epochs']} epochs, {r['workers']} process workers); largest per-run test wF1 difference "
            f"{r['max_abs_diff_weighted_f1']['ensemble']:.4f}"
        ),
    ]


def _sampling_rows(folder: Path) -> list[list[str]]:
    r = _load(folder / "sampling.json")
    if r is None:
        return [["sampling throughput (CUDA)", "-", _status(folder, "sampling")]]
    largest = max(row["batch"] for row in r["rows"])
    return [
        [
            f"sampling: {row['generator']} {row['setting']}",
            f"{row['flows_per_s']:,.0f} flows/s",
            f"{r.get('device', '?')}, batch {row['batch']}, K={r['num_classes']}, L={r['n_packets']}"
            + (f"; {row['note']}" if row["note"] else ""),
        ]
        for row in r["rows"]
        if row["batch"] == largest
    ]


def table(args: argparse.Namespace) -> None:
    folder = Path(args.dir)
    rows = [
        _tests_row(folder),
        *_throughput_rows(folder),
        *_sync_rows(folder),
        _campaign_row(folder),
        *_sampling_rows(folder),
    ]
    header = _load(folder / "machine.json") or {}
    if header:
        print(
            f"GPU checks: {header.get('gpu', '?')}, torch {header.get('torch', '?')} (CUDA {header.get('cuda', '?')}), "
            f"{header.get('cpus', '?')} CPU cores, {header.get('date', '')}; total {header.get('seconds', '?')} s\n"
        )
    print("| check | result | detail |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("syncs", help="host syncs per classifier training step on CUDA")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--json", default=None)
    t = sub.add_parser("table", help="the markdown table of a gpu_check.sh folder")
    t.add_argument("dir")
    args = parser.parse_args(argv)
    {"syncs": syncs, "table": table}[args.command](args)


if __name__ == "__main__":
    main(sys.argv[1:])
