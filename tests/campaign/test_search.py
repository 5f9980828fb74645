"""`tsda augment search`: trials as tsda runs, resume, the test split never read, the
policy it writes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.cli import cli_error

from tsda.augment.catalog import build_augmentation
from tsda.augment.policy import TrivialAugment
from tsda.campaign import executors
from tsda.campaign import search as search_module
from tsda.campaign.space import SearchSpace
from tsda.cli import main
from tsda.data.datamodule import FlowDataModule

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs/experiment/synthetic_baseline.yaml"
#: tiny synthetic data, quiet trainer: fit overrides every trial gets
DATA = [
    "--data.synthetic_scale",
    "0.02",
    "--data.synthetic_apps",
    "4",
    "--data.min_class_size",
    "5",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]


def search(out: Path, trials: int, *extra: str) -> dict:
    main(
        [
            "augment",
            "search",
            "-c",
            str(BASE),
            "--out",
            str(out),
            "--trials",
            str(trials),
            "--epochs",
            "1",
            "--workers",
            "1",
            "--seed",
            "0",
            *DATA,
            *extra,
        ]
    )
    return json.loads((out / "search.json").read_text())


def trial_metrics(out: Path) -> dict[int, dict]:
    return {int(p.parts[-3]): json.loads(p.read_text()) for p in out.glob("trials/*/run/metrics.json")}


@pytest.mark.slow
def test_search_writes_a_policy_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two trials as `tsda fit` processes; a rerun with `--trials 3` runs exactly one more;
    one with the same total runs none."""
    out = tmp_path / "search"
    first = search(out, 2)
    assert [t["state"] for t in first["trials"]] == ["complete", "complete"]
    printed = capsys.readouterr().out
    assert "[trial 0] 1/2 value" in printed and "[trial 1] 2/2 value" in printed and "cost: 2 trial(s)" in printed
    assert first["cost"]["trials"] == 2 and first["cost"]["cpu_seconds"] > 0 and first["cost"]["trial_seconds"] > 0
    metrics = trial_metrics(out)
    assert set(metrics) == {0, 1}
    for number, m in metrics.items():  # trained, scored on validation, never tested
        assert not [k for k in m if k.startswith("test_")], m
        assert m["best_score"] == first["trials"][number]["value"] and m["epochs"] == 1
    best = max(first["trials"], key=lambda t: t["value"])
    assert first["best"]["number"] == best["number"]
    policy = build_augmentation(out / "policy.yaml")  # what `tsda fit --model.init_args.augmentation` takes
    assert isinstance(policy, TrivialAugment) and policy.weights == best["policy"]["weights"]
    assert policy.ranges == best["policy"]["ranges"] and policy.n == best["policy"]["n"]
    assert (out / "policy.yaml").read_text().startswith("# Found by `tsda augment search`")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/*/run/*")}

    second = search(out, 3)
    assert [t["number"] for t in second["trials"]] == [0, 1, 2]
    assert second["trials"][:2] == first["trials"]  # the first two kept, not rerun
    assert set(trial_metrics(out)) == {0, 1, 2}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert second["cost"]["trials"] == 3 and second["cost"]["this_invocation"]["trials"] == 1
    assert second["cost"]["invocations"] == 2 and second["cost"]["cpu_seconds"] > first["cost"]["cpu_seconds"]
    assert "2 trial(s) done, 1 to run" in capsys.readouterr().out
    third = search(out, 3)
    assert third["trials"] == second["trials"] and third["cost"]["this_invocation"]["trials"] == 0

    import optuna

    study = optuna.load_study(study_name="policy", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3


def _in_process(arguments: list[str], cwd: str, log_path: Path, env: dict[str, str] | None) -> int:
    """`executors._tsda` in this process: what the poisoned data module below can see."""
    try:
        main(list(arguments))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


class SplitReadError(RuntimeError):
    """Raised by the poisoned data module when anything reads the test split."""


def test_the_search_never_reads_the_test_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = FlowDataModule.split_table

    def split_table(self, name):
        if name == "test":
            raise SplitReadError("the test split was read")
        return original(self, name)

    def test_dataloader(self):
        raise SplitReadError("the test split was loaded")

    monkeypatch.setattr(executors, "_tsda", _in_process)  # the trial runs here, where the poison is
    monkeypatch.setattr(FlowDataModule, "split_table", split_table)
    monkeypatch.setattr(FlowDataModule, "test_dataloader", test_dataloader)
    out = tmp_path / "search"
    result = search(out, 1)
    assert result["trials"][0]["state"] == "complete" and 0 <= result["best"]["value"] <= 1
    assert not [k for k in trial_metrics(out)[0] if k.startswith("test_")]
    # the poison bites: a plain `tsda fit` with the searched policy trains, then its test reads the split
    run = tmp_path / "fit"
    with pytest.raises(SplitReadError):
        main(
            [
                "fit",
                "-c",
                str(BASE),
                *DATA,
                "--trainer.max_epochs",
                "1",
                "--latent_plot",
                "false",
                "--model.init_args.augmentation",
                str(out / "policy.yaml"),
                "--run_dir",
                str(run),
            ]
        )
    assert (run / "checkpoints" / "best.ckpt").is_file()


def _score(arguments: list[str], cwd: str, log_path: Path, env: dict[str, str] | None) -> int:
    """A fake trial: no training; its score is its policy's first weight."""
    run_dir = Path(arguments[arguments.index("--run_dir") + 1])
    policy = yaml.safe_load(Path(arguments[arguments.index("--model.init_args.augmentation") + 1]).read_text())
    (run_dir / "metrics.json").write_text(json.dumps({"best_score": policy["init_args"]["weights"][0]}))
    return 0


def test_a_trial_left_running_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search killed mid-trial leaves it RUNNING in study.db: the rerun marks it failed
    (interrupted, not counted) and runs its parameters again first."""
    import optuna

    monkeypatch.setattr(executors, "_tsda", _score)
    logged: list[dict] = []
    monkeypatch.setattr(search_module, "log_summary_run", lambda *args, **kwargs: logged.append(kwargs))
    out = tmp_path / "search"
    search(out, 1)
    study = optuna.load_study(study_name="policy", storage=f"sqlite:///{out / 'study.db'}")
    stale = study.ask()  # default sampler: any parameters will do
    SearchSpace().suggest(stale)  # the trial's parameters, then the process "dies"
    result = search(out, 2)
    states = [t["state"] for t in result["trials"]]
    assert states == ["complete", "fail (interrupted)", "complete"]
    again = optuna.load_study(study_name="policy", storage=f"sqlite:///{out / 'study.db'}").trials
    assert again[2].params == again[1].params and again[2].user_attrs["retry_of"] == 1
    table = logged[-1]["tables"]["table/trials"]  # the trial table W&B gets
    assert list(table.index) == [0, 1, 2] and list(table["state"]) == states
    assert table.loc[2, "value"] == again[2].value and "wrap.weight" in table


def test_the_default_space_file_holds_the_defaults() -> None:
    assert SearchSpace.from_yaml(ROOT / "configs/search/policy_space.yaml") == SearchSpace()


SPACES = {
    "unknown_op": ({"ops": ["wrap", "nope"]}, r"--space .*ops.*nope"),
    "empty_ops": ({"ops": []}, r"--space .*ops must name at least one"),
    "weight_range": ({"weight": [0, 1.5]}, r"--space .*weight must be \[lo, hi\]"),
    "weight_inverted": ({"weight": [0.8, 0.2]}, r"--space .*weight"),
    "weights_zero": ({"weight": [0, 0]}, r"--space .*weight"),
    "magnitude_range": ({"magnitude": [-0.1, 0.5]}, r"--space .*magnitude"),
    "magnitude_inverted": ({"magnitude": [0.9, 0.1]}, r"--space .*magnitude"),
    "unknown_key": ({"ops": "all", "budget": 3}, r"--space .*unknown key.*budget"),
    "n_zero": ({"n": [0, 1]}, r"--space .*: n must be"),
}
OPTIONS = {
    "no_trials": (["--trials", "0"], r"--trials must be an integer >= 1"),
    "negative_trials": (["--trials", "-2"], r"--trials"),
    "no_workers": (["--workers", "0"], r"--workers"),
    "no_epochs": (["--epochs", "0"], r"--epochs"),
    "not_a_number": (["--trials", "many"], r"trials"),
    "missing_base": (["--no_base"], r"-c/--config is required"),
    "base_not_a_file": (["-c", "nope.yaml"], r"-c/--config nope.yaml: no such file"),
    "bad_override": (["--data.no_such_option", "1"], r"no_such_option"),
}


@pytest.mark.parametrize("case", [*SPACES, *OPTIONS])
def test_bad_input_names_the_option_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["augment", "search", "-c", str(BASE), "--out", str(out), "--trials", "2", "--epochs", "1", *DATA]
    if case in SPACES:
        space, pattern = SPACES[case]
        (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
        argv += ["--space", str(tmp_path / "space.yaml")]
    else:
        extra, pattern = OPTIONS[case]
        if extra == ["--no_base"]:
            argv, extra = [a for a in argv if a not in ("-c", str(BASE))], []
        argv += extra
    with cli_error(capsys, pattern):
        main(argv)
    assert not out.exists()
