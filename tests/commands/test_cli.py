"""The `tsda` command end to end on tiny data: fit, test --ckpt, data describe, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import QUIET, cli_error

from tsda.cli import main
from tsda.data.sources import write_parquet
from tsda.data.synthetic import make_synthetic

#: a tiny synthetic job: 4 apps, a few hundred flows, one epoch
TINY = [
    "--model",
    "tsda.classifier.module.ClassifierModule",
    "--data.synthetic_scale",
    "0.02",
    "--data.synthetic_apps",
    "4",
    "--data.min_class_size",
    "5",
    "--trainer.max_epochs",
    "1",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
REQUIRED = {"test_weighted_f1", "test_macro_f1", "test_accuracy", "test_per_class_f1", "epochs", "seconds"}


def fit(run_dir: Path, *extra: str) -> dict:
    main(["fit", *TINY, "--run_dir", str(run_dir), *extra])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny fit shared by the tests below: (run directory, its metrics)."""
    run_dir = tmp_path_factory.mktemp("fit") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    try:
        return run_dir, fit(run_dir)
    finally:
        mp.undo()


def test_fit_writes_metrics(fitted: tuple[Path, dict]) -> None:
    run_dir, metrics = fitted
    assert REQUIRED <= set(metrics)
    assert 0.0 <= metrics["test_weighted_f1"] <= 1.0
    assert set(metrics["test_per_class_f1"]) == {"app00", "app01", "app02", "app03"}
    assert metrics["epochs"] == 1
    assert Path(metrics["best_checkpoint"]).is_file()
    assert not list(run_dir.glob(".metrics.json.*")), "no temporary file left"


@pytest.mark.slow
def test_fit_is_deterministic(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    _, first = fitted
    second = fit(tmp_path / "again")
    for key in (
        "test_weighted_f1",
        "test_macro_f1",
        "test_accuracy",
        "test_loss",
        "test_per_class_f1",
        "best_score",
        "n_flows",
    ):
        assert second[key] == first[key], key


@pytest.mark.slow
def test_other_seed_keeps_the_split_and_changes_training(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    """`--seed_everything 1` seeds training (module seed 1) while the split stays at
    `data.split_seed` 0: the run logs both without an hparams clash, same flows per split."""
    _, first = fitted
    other = fit(tmp_path / "seed1", "--seed_everything", "1")
    assert other["seed"] == 1
    assert other["n_flows"] == first["n_flows"]
    assert other["best_score"] != first["best_score"]


def test_test_on_the_same_data(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    _run_dir, fit_metrics = fitted
    out = tmp_path / "test"
    main(["test", "--ckpt", fit_metrics["best_checkpoint"], "--out", str(out), *QUIET])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_weighted_f1", "test_macro_f1", "test_accuracy", "test_per_class_f1"} <= set(metrics)
    # the checkpoint's datamodule settings are the defaults: the fit's own test split
    assert metrics["n_flows"] == fit_metrics["n_flows"]
    assert metrics["test_weighted_f1"] == pytest.approx(fit_metrics["test_weighted_f1"], abs=1e-6)
    assert metrics["unknown_classes"] == {}


def test_test_takes_data_settings_from_the_checkpoint(fitted: tuple[Path, dict]) -> None:
    from tsda.commands.test import checkpoint_data_defaults, parse, read_run_checkpoint

    ckpt_path = fitted[1]["best_checkpoint"]
    defaults = checkpoint_data_defaults(read_run_checkpoint(ckpt_path))
    assert defaults["data.synthetic_apps"] == 4 and defaults["data.n_packets"] == 20
    assert "data.min_class_size" not in defaults and "data.class_names" not in defaults
    cfg, _, _ = parse(["--ckpt", ckpt_path, "--data.n_packets", "16"])
    assert cfg.data.synthetic_scale == 0.02 and cfg.data.n_packets == 16
    assert cfg.data.min_class_size == 0


def test_test_reports_unseen_classes(fitted: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    _, fit_metrics = fitted
    other = make_synthetic(n_apps=5, scale=0.02, seed=7)  # app04 was never seen
    path = write_parquet(other, tmp_path / "other.parquet")
    out = tmp_path / "cross"
    main(
        [
            "test",
            "--ckpt",
            fit_metrics["best_checkpoint"],
            "--data.path",
            str(path),
            "--data.split",
            "none",
            "--data.min_class_size",
            "0",
            "--out",
            str(out),
            *QUIET,
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    n_app04_long = int((other.packets[other.labels == 4] > 10).sum())
    assert metrics["unknown_classes"] == {"app04": n_app04_long}
    long = other.packets > 10
    assert metrics["n_flows"]["test"] == int(long.sum()) - n_app04_long
    assert sum(metrics["test_support"].values()) == metrics["n_flows"]["test"]
    assert "app04 (" in capsys.readouterr().out


def test_test_without_any_known_class_fails(
    fitted: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:

    from support.flows import random_table

    path = write_parquet(random_table(counts=(12, 12), min_len=11, names=("x", "y")), tmp_path / "xy.parquet")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "test",
                "--ckpt",
                fitted[1]["best_checkpoint"],
                "--data.path",
                str(path),
                "--data.split",
                "none",
                "--out",
                str(out),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("tsda: error: ") and "Traceback" not in err
    assert re.search(r"no test flow of a class the model knows.*x \(12\), y \(12\)", err)
    assert not out.exists()


def write_bad(tmp_path: Path) -> Path:
    """A Parquet file whose row 1 has a negative size."""
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table(
            {
                "app": ["a", "b"],
                "pkts_size": [[10, 20], [30, -1]],
                "pkts_dir": [[0, 1], [1, 0]],
                "timetofirst": [[0.0, 0.1], [0.0, 0.2]],
            }
        ),
        path,
    )
    return path


def test_fit_on_bad_file_fails_and_writes_no_metrics(tmp_path: Path, capsys) -> None:
    bad = write_bad(tmp_path)
    run_dir = tmp_path / "run"
    with cli_error(capsys, r"bad\.parquet: row 1: column 'pkts_size'"):
        main(["fit", *TINY, "--data.path", str(bad), "--run_dir", str(run_dir)])
    assert not (run_dir / "metrics.json").exists()


def test_test_on_bad_file_fails_and_writes_nothing(fitted: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    _, fit_metrics = fitted
    bad = write_bad(tmp_path)
    out = tmp_path / "out"
    with cli_error(capsys, r"bad\.parquet: row 1: column 'pkts_size'"):
        main(
            [
                "test",
                "--ckpt",
                fit_metrics["best_checkpoint"],
                "--data.path",
                str(bad),
                "--data.split",
                "none",
                "--data.min_class_size",
                "0",
                "--out",
                str(out),
            ]
        )
    assert not out.exists()


def test_test_needs_an_existing_checkpoint(tmp_path: Path, capsys) -> None:
    with cli_error(capsys, "missing.ckpt"):
        main(["test", "--ckpt", str(tmp_path / "missing.ckpt")])


def test_data_describe_prints_per_class_counts(tmp_path: Path, capsys) -> None:
    out = tmp_path / "describe.json"
    main(
        [
            "data",
            "describe",
            "--data.synthetic_scale",
            "0.02",
            "--data.synthetic_apps",
            "4",
            "--data.min_class_size",
            "5",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    table = make_synthetic(n_apps=4, scale=0.02, seed=0)
    report = json.loads(out.read_text())
    for name, count in zip(table.class_names, table.class_counts()):
        assert report["per_class"][name]["raw"] == count
        assert f"{name} " in text and f" {count} " in text
    assert report["raw"]["flows"] == table.n_flows
    assert 0.0 < report["curated"]["upstream_share"] < 1.0
    assert report["curated"]["stored_packets"]["q100"] == 20


def test_data_describe_parquet_with_renamed_label(tmp_path: Path, capsys) -> None:
    from support.flows import random_table

    from tsda.data.sources import ParquetColumns

    table = random_table(counts=(7, 3), names=("web", "chat"))
    path = write_parquet(table, tmp_path / "t.parquet", ParquetColumns(label="label"))
    main(["data", "describe", "--data.path", str(path), "--data.label_column", "label", "--data.min_class_size", "0"])
    text = capsys.readouterr().out
    assert "web" in text and "chat" in text
    with cli_error(capsys, "missing column 'app'"):
        main(["data", "describe", "--data.path", str(path)])
