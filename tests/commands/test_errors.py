"""One error convention for every command: `tsda: error: <what, where>` on stderr, exit
status 2, no traceback and nothing written; `--verbose` shows the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "configs/experiment/synthetic_baseline.yaml")
TINY = ["--data.synthetic_scale", "0.02", "--data.synthetic_apps", "4", "--data.min_class_size", "10"]


@pytest.fixture(scope="module")
def classifier_ckpt(tiny_classifier_ckpt: Path) -> Path:
    return tiny_classifier_ckpt


def _fails(argv: list[str], capsys: pytest.CaptureFixture, *needles: str) -> str:
    from tsda.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "tsda: error: " in err or "error:" in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize(
    "flag, value, needle", [("--data.n_packets", "0", "n_packets"), ("--data.batch_size", "-1", "batch_size")]
)
def test_fit_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, needle: str) -> None:
    run = tmp_path / "run"
    err = _fails(["fit", "-c", BASE, *TINY, flag, value, "--run_dir", str(run)], capsys, needle)
    assert err.startswith("tsda: error: ") or "\ntsda: error: " in err
    assert not run.exists()


def test_sample_of_a_classifier_checkpoint(
    classifier_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "s.parquet"
    _fails(
        ["sample", "--ckpt", str(classifier_ckpt), "--per_class", "2", "--out", str(out)],
        capsys,
        "tsda: error: ",
        str(classifier_ckpt),
        "not a generator",
    )
    assert not out.exists()


@pytest.mark.parametrize("command", ["test", "sample"])
def test_truncated_checkpoint(
    classifier_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(classifier_ckpt.read_bytes()[:2000])
    extra = ["--per_class", "2", "--out", str(tmp_path / "s.parquet")] if command == "sample" else []
    _fails(
        [command, "--ckpt", str(truncated), *extra],
        capsys,
        "tsda: error: ",
        str(truncated),
        "not a readable checkpoint",
    )


def test_unsafe_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A checkpoint holding an arbitrary pickled object is refused (weights_only)."""
    import torch

    class Payload:
        def __reduce__(self):  # what a malicious file would run on load
            return (print, ("payload ran",))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Payload()}, bad)
    err = _fails(["test", "--ckpt", str(bad)], capsys, "not a readable checkpoint")
    assert "payload ran" not in err + capsys.readouterr().out


def test_augment_enlarge_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "e.parquet"
    common = ["--data.synthetic_scale", "0.02", "--out", str(out)]
    _fails(["augment", "enlarge", "--augment", "nope", "--copies", "1", *common], capsys, "nope")
    _fails(["augment", "enlarge", "--augment", "flip", "--copies", "0", *common], capsys, "--copies")
    _fails(
        [
            "augment",
            "enlarge",
            "--augment",
            "flip",
            "--copies",
            "1",
            "--data.path",
            "missing.parquet",
            "--out",
            str(out),
        ],
        capsys,
        "missing.parquet",
    )
    assert not out.exists()


def test_every_command_group_has_help(capsys: pytest.CaptureFixture) -> None:
    from tsda.cli import main

    for group, needle in (("data", "describe"), ("augment", "enlarge"), ("campaign", "report")):
        try:
            main([group, "--help"])
        except SystemExit as exc:
            assert exc.code in (0, None), group
        assert needle in capsys.readouterr().out, group


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    from tsda.cli import main

    with pytest.raises(ValueError, match="n_packets"):
        main(["--verbose", "fit", "-c", BASE, *TINY, "--data.n_packets", "0", "--run_dir", str(tmp_path / "r")])


def test_campaign_checks_every_condition_before_the_first_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    spec = tmp_path / "campaign.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "base": BASE,
                "seeds": [0],
                "overrides": TINY,
                "conditions": {"good": {"trainer.max_epochs": 1}, "typo": {"data.samplr": "none"}},
            }
        )
    )
    out = tmp_path / "out"
    _fails(["campaign", "run", str(spec), "--out", str(out)], capsys, "typo", "data.samplr")
    assert not (out / "runs").exists() and not (out / "results.parquet").exists()
