"""Leak-free enlarged datasets: `tsda augment enlarge` writes every flow with a stored split,
`--data.split column` trains on it (classifier, unconditional cGAN and diffusion through
`tsda fit`), and bad files are refused, naming file and column, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.tiny import class_table

from tsda.data.curation import FILE_ROW, SOURCE_ROW, group_fraction, stratified_fraction
from tsda.data.datamodule import FlowDataModule
from tsda.data.sources import FlowDataError, read_parquet, write_parquet
from tsda.lit.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]
COPIES = 2
DATA = ["--data.min_packets", "3", "--data.min_class_size", "5", "--data.n_packets", "12"]
KW = {"min_packets": 3, "min_class_size": 5, "n_packets": 12}
FIT = [
    *DATA,
    "--data.split",
    "column",
    "--data.batch_size",
    "64",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.max_epochs",
    "1",
    "--trainer.enable_model_summary",
    "false",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The source (3 classes x 40 flows) and its enlargement with 2 translated copies."""
    from tsda.commands.augment import main

    root = tmp_path_factory.mktemp("enlarged")
    source = write_parquet(class_table(40), root / "source.parquet")
    out = root / "enlarged.parquet"
    main(
        [
            "enlarge",
            "--augment",
            "translation",
            "--copies",
            str(COPIES),
            "--out",
            str(out),
            "--data.path",
            str(source),
            *DATA,
        ]
    )
    return {"root": root, "source": source, "enlarged": out}


def enlarged_dm(path: Path, **kwargs: object) -> FlowDataModule:
    return FlowDataModule(path=str(path), split="column", **{**KW, **kwargs})


def rewrite(path: Path, out: Path, column: str, change) -> Path:
    """`path` with `column` replaced by `change(values)`."""
    table = pq.read_table(path)
    values = np.array(table.column(column).to_pylist(), dtype=object)
    new = change(values.copy())
    arr = pa.array(new.astype(np.int64)) if column == SOURCE_ROW else pa.array(new.astype(str))
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, arr), out)
    return out


# -- the file ---------------------------------------------------------------------------
def test_enlarge_writes_every_split_with_copies_of_training_flows_only(files: dict[str, Path]) -> None:
    source = FlowDataModule(path=str(files["source"]), **KW)
    n = {k: len(v) for k, v in source.splits.items()}
    back = read_parquet(files["enlarged"], max_packets=12, meta_columns=("split", SOURCE_ROW, "augmentation"))
    rows = n["train"] + n["val"] + n["test"]
    assert len(back) == rows + COPIES * n["train"]
    split, src, aug = (back.meta[c] for c in ("split", SOURCE_ROW, "augmentation"))
    # originals first, pointing at themselves, with the source's split; then copies of training rows
    np.testing.assert_array_equal(src[:rows], np.arange(rows))
    assert (aug[:rows] == "original").all() and (aug[rows:] == "Translation(max_shift=4)").all()
    assert (split[rows:] == "train").all() and (split[src[rows:]] == "train").all()
    assert {k: int((split[:rows] == k).sum()) for k in n} == n
    np.testing.assert_array_equal(back.labels[rows:], back.labels[src[rows:]])
    # validation and test rows are the source's flows, untouched
    for name in ("val", "test"):
        ours = back.take(np.flatnonzero(split[:rows] == name))
        theirs = source.split_table(name)
        np.testing.assert_array_equal(ours.sizes, theirs.sizes)
        np.testing.assert_array_equal(ours.labels, theirs.labels)


def test_stored_split_does_not_leak(files: dict[str, Path]) -> None:
    """No `source_row` of a validation/test row appears in training; val/test are originals;
    the training split is the originals with all their copies."""
    for fraction in (1.0, 0.5):
        dm = enlarged_dm(files["enlarged"], train_fraction=fraction)
        src, rows = dm.table.meta[SOURCE_ROW], dm.table.meta[FILE_ROW]
        train, held = dm.splits["train"], np.concatenate([dm.splits["val"], dm.splits["test"]])
        assert not set(src[train]) & set(src[held])
        assert (src[held] == rows[held]).all(), "a validation/test row is a copy"
        groups, counts = np.unique(src[train], return_counts=True)
        assert (counts == COPIES + 1).all(), "an original without all its copies (or the reverse)"
        source = FlowDataModule(path=str(files["source"]), **KW, train_fraction=fraction)
        assert len(groups) == len(source.splits["train"])
        assert len(dm.splits["val"]) == len(source.splits["val"])


def test_group_fraction_is_stratified_fraction_for_single_rows() -> None:
    labels = np.repeat(np.arange(3), 20)
    np.testing.assert_array_equal(group_fraction(labels, np.arange(60), 0.3, 1), stratified_fraction(labels, 0.3, 1))


def test_curation_goes_by_original(files: dict[str, Path]) -> None:
    """With a stricter min_packets, copies leave with their originals and the split stays."""
    dm = enlarged_dm(files["enlarged"], min_packets=14)
    src, rows, packets = dm.table.meta[SOURCE_ROW], dm.table.meta[FILE_ROW], dm.table.packets
    assert set(src) <= set(rows), "a copy outlived its original"
    assert (packets > 14).all() and 0 < len(dm.table)
    assert not set(src[dm.splits["train"]]) & set(src[dm.splits["test"]])


# -- bad files ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, message",
    [
        ("bad_value", r"column 'split' holds \['holdout'\]"),
        ("outside", r"'source_row' row \d+ .*points outside the file"),
        ("copy_in_test", r"val/test row is an augmented copy"),
        ("copy_of_copy", r"points at a copy"),
        ("straddles", r"copy in another 'split' than its original"),
    ],
)
def test_bad_stored_splits_are_refused(files: dict[str, Path], tmp_path: Path, case: str, message: str) -> None:
    path, bad = files["enlarged"], tmp_path / f"{case}.parquet"
    split = np.array(pq.read_table(path).column("split").to_pylist(), dtype=object)
    n_orig = int((np.array(pq.read_table(path).column("augmentation").to_pylist()) == "original").sum())
    first_test = int(np.flatnonzero(split == "test")[0])
    first_val = int(np.flatnonzero(split == "val")[0])

    def change(values: np.ndarray) -> np.ndarray:
        if case == "bad_value":
            values[3] = "holdout"
        elif case == "outside":
            values[n_orig + 1] = 10**6
        elif case == "copy_in_test":
            values[first_test] = 0
        elif case == "copy_of_copy":
            values[n_orig + 1] = n_orig
        else:
            values[n_orig + 1] = first_val
        return values

    rewrite(path, bad, "split" if case == "bad_value" else SOURCE_ROW, change)
    with pytest.raises(FlowDataError, match=message) as info:
        enlarged_dm(bad).table
    assert str(bad) in str(info.value)


def test_bad_input_through_the_cli_writes_nothing(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tsda.cli import main

    bad = rewrite(files["enlarged"], tmp_path / "bad.parquet", "split", lambda v: np.where(v == "val", "dev", v))
    out = tmp_path / "out.parquet"
    cases = [
        (
            [
                "augment",
                "enlarge",
                "--augment",
                "flip",
                "--copies",
                "1",
                "--out",
                str(out),
                "--data.path",
                str(bad),
                "--data.split",
                "column",
                *DATA,
            ],
            "'dev'",
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
                str(out),
                "--data.path",
                str(files["enlarged"]),
                "--data.split",
                "column",
                *DATA,
            ],
            "already enlarged",
        ),
        (
            [
                "augment",
                "preview",
                "flip",
                "--out",
                str(tmp_path / "p.png"),
                "--data.path",
                str(files["source"]),
                "--data.split",
                "column",
                "--data.split_column",
                "fold",
                *DATA,
            ],
            "'fold'",
        ),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("tsda: error:") and needle in err, err
    assert not out.exists() and not (tmp_path / "p.png").exists()


def test_enlarged_file_refuses_a_fresh_split(files: dict[str, Path]) -> None:
    with pytest.raises(FlowDataError, match="--data.split column"):
        FlowDataModule(path=str(files["enlarged"]), **KW).table
    with pytest.raises(FlowDataError, match="'fold'"):
        enlarged_dm(files["enlarged"], split_column="fold").table
    assert len(FlowDataModule(path=str(files["enlarged"]), split="none", **KW).splits["test"]) > 0


# -- tsda fit on the enlarged file -----------------------------------------------------------
MODELS = {
    "classifier": [
        "-c",
        "configs/experiment/synthetic_baseline.yaml",
        "--model.init_args.backbone_kwargs",
        "{width: 8}",
        "--model.init_args.latent_points",
        "0",
        "--latent_plot",
        "false",
    ],
    "cgan": [
        "-c",
        "configs/experiment/fgnet_cgan.yaml",
        "--model.init_args.n_packets",
        "12",
        "--model.init_args.width",
        "8",
        "--model.init_args.disc_width",
        "8",
        "--model.init_args.depth",
        "1",
        "--model.init_args.noise_dim",
        "8",
        "--trainer.callbacks",
        "[]",
        "--model.init_args.conditional",
        "false",
        "--data.sampler",
        "none",
    ],
    "diffusion": [
        "-c",
        "configs/experiment/fgnet_diffusion.yaml",
        "--model.init_args.n_packets",
        "12",
        "--model.init_args.block_out_channels",
        "[8, 16]",
        "--model.init_args.conditional",
        "false",
        "--data.sampler",
        "none",
    ],
}


@pytest.fixture(scope="module")
def runs(files: dict[str, Path]) -> dict[str, Path]:
    """`tsda fit --data.split column` of a classifier, an unconditional cGAN and diffusion model."""
    import os

    from tsda.commands.fit import run_fit

    here = os.getcwd()
    os.chdir(REPO)
    try:
        for name, args in MODELS.items():
            run_fit([*args, "--data.path", str(files["enlarged"]), *FIT, "--run_dir", str(files["root"] / name)])
    finally:
        os.chdir(here)
    return {name: files["root"] / name for name in MODELS}


def test_fit_on_the_enlarged_file(files: dict[str, Path], runs: dict[str, Path]) -> None:
    dm = enlarged_dm(files["enlarged"])
    expected = {k: len(v) for k, v in dm.splits.items()}
    for name, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["n_flows"] == expected, name
        ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
        assert ckpt["datamodule_hyper_parameters"]["split"] == "column"
        if name != "classifier":
            assert ckpt["hyper_parameters"]["conditional"] is False
            assert ckpt["hyper_parameters"]["class_names"] == dm.class_names
    assert "test_weighted_f1" in json.loads((runs["classifier"] / "metrics.json").read_text())


@pytest.mark.parametrize("generator", ["cgan", "diffusion"])
def test_sample_label_with_writes_a_labelled_parquet(runs: dict[str, Path], tmp_path: Path, generator: str) -> None:
    """The issue's end to end: enlarge -> fit -> tsda sample --label_with (tcbench schema +
    label_confidence), the acceptance report beside it."""
    from tsda.cli import main

    out = tmp_path / "labelled.parquet"
    steps = ["--steps", "2"] if generator == "diffusion" else []
    main(
        [
            "sample",
            "--ckpt",
            str(runs[generator] / "checkpoints" / "last.ckpt"),
            "--label_with",
            str(runs["classifier"] / "checkpoints" / "best.ckpt"),
            "--per_class",
            "4",
            "--max_draws",
            "200",
            "--seed",
            "1",
            "--no_progress",
            "--out",
            str(out),
            *steps,
        ]
    )
    table = read_parquet(out, max_packets=12, meta_columns=("label_confidence", "generator", "labeller"))
    report = json.loads(out.with_suffix(".labelling.json").read_text())
    assert report["route"] == "rejection" and report["kept"] == len(table)
    assert all(c["kept"] <= 4 and c["acceptance_rate"] is not None for c in report["classes"].values())
    kept = dict(zip(table.class_names, table.class_counts().tolist()))
    assert all(kept.get(k, 0) == c["kept"] for k, c in report["classes"].items())
    assert report["unfilled"] == [k for k, c in report["classes"].items() if c["kept"] < 4]
    assert ((table.meta["label_confidence"] > 0) & (table.meta["label_confidence"] <= 1)).all()


def test_an_enlarged_fraction_keeps_every_class_of_its_source(tmp_path: Path) -> None:
    """Enlarging 10 % of the training split leaves fewer originals per class than
    `min_class_size`; the stored split keeps every class anyway (it was curated when made)."""
    from tsda.commands.augment import main

    source = write_parquet(class_table(40), tmp_path / "source.parquet")  # 40 flows a class
    out = tmp_path / "slice.parquet"
    main(
        [
            "enlarge",
            "--augment",
            "translation",
            "--copies",
            "1",
            "--out",
            str(out),
            "--data.path",
            str(source),
            "--data.train_fraction",
            "0.25",
            *DATA[:2],
            "--data.min_class_size",
            "20",
            *DATA[4:],
        ]
    )
    dm = enlarged_dm(out, min_class_size=20)  # each class has about 8 + 4 + 4 originals in the file
    assert dm.class_names == FlowDataModule(path=str(source), **{**KW, "min_class_size": 20}).class_names
    assert len(dm.splits["val"]) == len(FlowDataModule(path=str(source), **{**KW, "min_class_size": 20}).splits["val"])
