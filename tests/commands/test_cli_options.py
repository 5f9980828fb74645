"""One CLI style: every command spells its options with underscores, refuses an option
that does not apply to its input (naming it, exit 2, before any work, nothing written) and
says what is wrong with a bad value as `--OPTION: rule, what was given`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tsda.cli import main

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "configs/experiment/synthetic_baseline.yaml")
CGAN = str(REPO / "tests/fixtures/cgan_tiny.ckpt")


def refused(argv: list[str], capsys: pytest.CaptureFixture, pattern: str) -> str:
    """`tsda ARGV` exits 2 with one `tsda: error:` line matching `pattern` (no traceback)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.startswith("tsda: error: ") and "Traceback" not in err, err
    assert re.search(pattern, err), err
    return err


# -- one spelling -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, hyphen, underscore",
    [
        (["sample", "--ckpt", CGAN, "--per-class", "3", "--out", "x.parquet"], "--per-class", "--per_class"),
        (
            ["sample", "--ckpt", CGAN, "--n", "3", "--out", "x.parquet", "--no-progress"],
            "--no-progress",
            "--no_progress",
        ),
        (["test", "--ckpt", "x.ckpt", "--data.min-class-size", "0"], "--data.min-class-size", "--data.min_class_size"),
        (["fit", "-c", BASE, "--trainer.max-epochs", "1"], "--trainer.max-epochs", "--trainer.max_epochs"),
        (["campaign", "run", "spec.yaml", "--out", "c", "--dry-run"], "--dry-run", "--dry_run"),
        (["data", "describe", "--max-packets", "8"], "--max-packets", "--max_packets"),
        (["evaluate", "--synthetic", "s.parquet", "--out", "e", "--tstr-seeds", "0"], "--tstr-seeds", "--tstr_seeds"),
        (["data", "import", "a.pcap", "--out", "x.parquet", "--idle-timeout", "5"], "--idle-timeout", "--idle_timeout"),
        (
            [
                "augment",
                "enlarge",
                "--augment",
                "flip",
                "--copies",
                "1",
                "--out",
                "e.parquet",
                "--data.split-column",
                "s",
            ],
            "--data.split-column",
            "--data.split_column",
        ),
    ],
)
def test_a_hyphen_spelling_names_the_underscore_one(
    argv: list[str],
    hyphen: str,
    underscore: str,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    refused(
        argv,
        capsys,
        f"^tsda: error: {re.escape(hyphen)}: options are spelled with underscores: {re.escape(underscore)}$",
    )
    assert not list(tmp_path.iterdir())


# -- options that do not apply ------------------------------------------------------------------
def test_sample_refuses_sampler_options_for_a_cgan(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    for flag, value in (("--steps", "10"), ("--sampler", "ddim"), ("--cfg_scale", "2")):
        refused(
            ["sample", "--ckpt", CGAN, "--n", "3", flag, value, "--out", str(out)],
            capsys,
            rf"{flag}: not an option of GANModule \(it takes: latent_scale, prior, use_ema\)",
        )
    refused(
        ["sample", "--ckpt", CGAN, "--n", "3", "--option", "top_k=3", "--out", str(out)],
        capsys,
        r"--option top_k=\.\.\.: not an option of GANModule",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (["--n", "3", "--strength", "0.5"], r"--strength: needs --vary"),
        (["--n", "3", "--truncate"], r"--truncate: needs --vary"),
        (["--n", "3", "--invalid_rows", "drop"], r"--invalid_rows: needs --vary"),
        (["--n", "3", "--min_confidence", "0.5"], r"--min_confidence: needs --label_with"),
        (["--vary", "f.parquet", "--strength", "0.5", "--per_class", "2"], r"--per_class: does not apply to --vary"),
    ],
)
def test_sample_refuses_options_of_another_mode(
    extra: list[str], pattern: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    out = tmp_path / "x.parquet"
    refused(["sample", "--ckpt", CGAN, *extra, "--out", str(out)], capsys, pattern)
    assert not out.exists()


COLUMN = r"--data\.{}: names a column of a flow file: it needs --data\.path"


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["data", "describe", "--data.label_column", "label"], COLUMN.format("label_column")),
        (["data", "export", "--out", "{tmp}/x.pcap", "--data.sizes_column", "s"], COLUMN.format("sizes_column")),
        (["data", "export", "--out", "{tmp}/x.pcap", "--start_column", "t"], r"--start_column: names a column"),
        (
            ["data", "import", "{tmp}/a.pcap", "--out", "{tmp}/x.parquet", "--unmatched", "unknown"],
            r"--unmatched: applies to --label RULES\.csv only",
        ),
        (
            ["augment", "preview", "flip", "--out", "{tmp}/p.png", "--data.times_column", "t"],
            COLUMN.format("times_column"),
        ),
        (
            [
                "augment",
                "enlarge",
                "--augment",
                "flip",
                "--copies",
                "1",
                "--out",
                "{tmp}/e.parquet",
                "--data.label_column",
                "y",
            ],
            COLUMN.format("label_column"),
        ),
        (
            ["evaluate", "--synthetic", "{tmp}/s.parquet", "--out", "{tmp}/e", "--data.group_column", "g"],
            COLUMN.format("group_column"),
        ),
        (
            [
                "evaluate",
                "--synthetic",
                "{tmp}/s.parquet",
                "--out",
                "{tmp}/e",
                "--tstr_seeds",
                "0",
                "--tstr_model",
                "{{backbone_kwargs: {{width: 8}}}}",
            ],
            r"--tstr_model: applies to TSTR",
        ),
        (["test", "--ckpt", "{tmp}/missing.ckpt", "--data.label_column", "y"], r"missing\.ckpt"),
    ],
)
def test_data_and_mode_options_that_do_not_apply(
    argv: list[str], pattern: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    refused([a.format(tmp=tmp_path) for a in argv], capsys, pattern)
    assert not list(tmp_path.iterdir())


def test_fit_refuses_a_column_rename_of_the_embedded_dataset(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    run = tmp_path / "run"
    refused(
        ["fit", "-c", BASE, "--data.label_column", "y", "--run_dir", str(run)], capsys, COLUMN.format("label_column")
    )
    refused(
        ["fit", "-c", BASE, "--data.train_fraction", "abc", "--run_dir", str(run)],
        capsys,
        r"--data\.train_fraction: expected a number, got 'abc'",
    )
    assert not run.exists()


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["campaign", "run", "spec.yaml", "--out", "c", "--address", "auto"], r"--address: applies to --executor ray"),
        (
            ["campaign", "run", "spec.yaml", "--out", "c", "--num_gpus", "1", "--executor", "ensemble"],
            r"--num_gpus: applies to --executor ray",
        ),
        (
            ["campaign", "run", "spec.yaml", "--out", "c", "--members_per_job", "4"],
            r"--members_per_job: applies to --executor ensemble",
        ),
        (
            ["campaign", "run", "spec.yaml", "--out", "c", "--executor", "ensemble", "--runs_per_worker", "1"],
            r"--runs_per_worker: applies to --executor local",
        ),
        (
            ["campaign", "run", "spec.yaml", "--out", "c", "--metric", "test_accuracy"],
            r"--metric: an option of tsda campaign report, not of tsda campaign run",
        ),
        (
            ["campaign", "report", "c", "--executor", "ray"],
            r"--executor: an option of tsda campaign run, not of tsda campaign report",
        ),
        (["campaign", "report", "c", "--into", "mine"], r"--into: .* needs --conditions, --seeds or --complete"),
        (["augment", "list", "--out", "x"], r"--out: an option of tsda augment preview"),
        (["augment", "preview", "flip", "--out", "p.png", "--copies", "2"], r"--copies: an option of tsda augment"),
        (
            ["augment", "search", "-c", BASE, "--out", "s", "--trainer.max_epochs", "3"],
            r"--trainer\.max_epochs: set by the search for every trial \(--epochs\)",
        ),
        (["ensemble", "jobs.json", "--run_dir", "r"], r"--run_dir: not an option of tsda ensemble"),
    ],
)
def test_group_and_executor_options_that_do_not_apply(
    argv: list[str], pattern: str, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused(argv, capsys, pattern)
    assert not list(tmp_path.iterdir())


# -- readable messages --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "describe", "--data.train_fraction", "abc"], "--data.train_fraction: expected a number, got 'abc'"),
        (["data", "describe", "--data.sampler_seed", "x"], "--data.sampler_seed: expected an integer or null, got 'x'"),
        (
            ["data", "describe", "--data.invalid_rows", "skip"],
            "--data.invalid_rows: expected one of error, drop, got 'skip'",
        ),
        (["ensemble", "jobs.json", "--device", "gpu"], "--device: expected one of auto, cpu, cuda, got 'gpu'"),
        (["sample", "--n", "3", "--out", "x.parquet"], "--ckpt: required (tsda sample --help)"),
        (
            ["augment", "search", "-c", BASE, "--out", "s", "--trials", "many"],
            "--trials: expected an integer, got 'many'",
        ),
        (
            ["data", "describe", "--max_packet", "8"],
            "--max_packet: not an option of tsda data describe (did you mean --max_packets?)",
        ),
    ],
)
def test_a_bad_value_names_the_option_and_the_rule(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused(argv, capsys, f"^tsda: error: {re.escape(message)}\n$")


def test_an_unknown_option_passed_through_by_generator_is_named() -> None:
    """A generator whose `sample` takes `**options` (the joint module) is checked when
    called: the `TypeError` becomes the refusal naming the flag."""
    from tsda.commands.generator_options import check_generator_options, generator_call
    from tsda.errors import TsdaError

    class Passing:
        def sample(self, labels, generator, **options):
            raise TypeError("generate() got an unexpected keyword argument 'steps'")

    model = Passing()
    check_generator_options(model, {"steps": 3})  # type: ignore[arg-type]  # cannot tell from the signature
    with pytest.raises(TsdaError, match=r"^--steps: not an option of Passing$"), generator_call(model):  # type: ignore[arg-type]
        model.sample(None, None, steps=3)
