"""The ensemble executor: member k of a batched ensemble trains as `tsda fit` with seed k
would (weights after a few steps, with and without augmentation), per-member early stopping
and best weights, run directories like `tsda fit`'s, a campaign through both executors, and
kill + restart exactly once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support.campaign import TINY_FIT, TRANSLATION, runner, wait_rows, write_spec

from tsda.campaign import CampaignSpec, run_campaign
from tsda.campaign.executors import ensemble_chunks
from tsda.classifier.ensemble import EnsembleModule, EnsembleSettings, StackedClassifier, fit_ensemble
from tsda.classifier.module import ClassifierModule
from tsda.commands.campaign import main as campaign_main
from tsda.commands.ensemble import Run, batch_key, unbatchable
from tsda.commands.ensemble import main as ensemble_main
from tsda.commands.fit import run_fit
from tsda.lit.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]
#: a policy: each flow its own op and magnitude, drawn from the member's own generator
TRIVIAL = [
    "--model.init_args.augmentation",
    str(REPO / "configs/augment/trivial_augment.yaml"),
    "--model.init_args.policy",
    "double",
]


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _weights_after(
    args: list[str], seeds: list[int], tmp_path: Path, precision: str = "32-true", max_steps: int = 5
) -> tuple[dict, dict]:
    """Member weights of one ensemble and of separate `tsda fit` runs, after `args`' steps."""
    runs = [Run([*args, "--seed_everything", str(s), "--run_dir", str(tmp_path / f"m{s}")]) for s in seeds]
    done = fit_ensemble(
        [r.model for r in runs],
        runs[0].datamodule,
        EnsembleSettings(max_epochs=1, max_steps=max_steps, precision=precision),
    )
    outcomes = {seeds[o.index]: o.best_state for o in done}
    assert all(o.steps == max_steps and o.best_score is None for o in done)  # stopped before validating
    separate = {}
    for s in seeds:
        run_fit([*args, "--seed_everything", str(s), "--run_dir", str(tmp_path / f"fit{s}")])
        state = read_checkpoint(tmp_path / f"fit{s}" / "checkpoints" / "last.ckpt")["state_dict"]
        separate[s] = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    return outcomes, separate


@pytest.mark.parametrize("augment", [[], TRANSLATION, TRIVIAL], ids=["no_aug", "translation", "trivial_augment"])
def test_member_k_ends_with_the_weights_of_a_separate_run_with_seed_k(tmp_path: Path, augment: list[str]) -> None:
    args = [*TINY_FIT, "--trainer.max_steps", "5", *augment]
    ensemble, separate = _weights_after(args, [0, 1, 2], tmp_path)
    for seed, state in ensemble.items():
        assert state.keys() == separate[seed].keys()
        for name, value in state.items():
            torch.testing.assert_close(value, separate[seed][name], rtol=1e-4, atol=1e-5, msg=f"seed {seed} {name}")
    # and the members are different runs (seeded inits and batch orders), not copies
    assert not torch.equal(ensemble[0]["classifier.weight"], ensemble[1]["classifier.weight"])


def test_stacked_forward_equals_each_net(tmp_path: Path) -> None:
    runs = [Run([*TINY_FIT, "--seed_everything", str(s)]) for s in (0, 1)]
    stack = StackedClassifier([r.model.net for r in runs])
    runs[0].datamodule.setup()
    x = runs[0].datamodule.tensors["val"].x[:32]  # (32, 3, L)
    out = stack(x, train=False)  # (2, 32, K)
    for k, r in enumerate(runs):
        torch.testing.assert_close(out[k], r.model.net.eval()(x), rtol=1e-5, atol=1e-6)


def test_stopped_members_leave_the_stack_with_their_optimiser_state() -> None:
    runs = [Run([*TINY_FIT, "--seed_everything", str(s)]) for s in (0, 1, 2)]
    stack = StackedClassifier([r.model.net for r in runs])
    optimizer = torch.optim.Adam(stack.params.values(), lr=1e-3)
    runs[0].datamodule.setup()
    x = runs[0].datamodule.tensors["train"].x[:16]
    stack(x, train=True).square().mean().backward()
    optimizer.step()
    before = {k: v.detach().clone() for k, v in stack.params.items()}
    moments = {k: optimizer.state[v]["exp_avg"].clone() for k, v in stack.params.items()}
    new = stack.keep(torch.tensor([0, 2]), optimizer)
    assert len(stack) == 2
    for name, value in stack.params.items():
        assert torch.equal(value, before[name][[0, 2]])
        assert torch.equal(new.state[value]["exp_avg"], moments[name][[0, 2]])
    assert stack.member_state(1)["classifier.weight"].equal(before["classifier.weight"][2])


def test_members_stop_on_their_own_and_write_fit_run_directories(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.json"
    runs = [
        [
            *TINY_FIT,
            "--trainer.max_epochs",
            "6",
            "--patience",
            "1",
            "--seed_everything",
            str(s),
            "--run_dir",
            str(tmp_path / f"seed{s}"),
        ]
        for s in range(3)
    ]
    jobs.write_text(json.dumps({"runs": runs}))
    ensemble_main([str(jobs), "--device", "cpu"])
    epochs = set()
    for s in range(3):
        run_dir = tmp_path / f"seed{s}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        history = pd.read_csv(run_dir / "metrics.csv")
        assert metrics["executor"] == "ensemble" and metrics["ensemble_members"] == 3 and metrics["seed"] == s
        assert len(history) == metrics["epochs"] <= 6
        scores = history["val_weighted_f1"].tolist()
        best = max(range(len(scores)), key=lambda e: (scores[e], -e))  # first epoch of the best score
        assert metrics["best_epoch"] == best and metrics["best_score"] == pytest.approx(scores[best])
        # patience 1: it stopped after the first validation without a strict improvement (or at max_epochs)
        assert metrics["epochs"] == 6 or scores[-1] <= max(scores[:-1])
        for key in (
            "test_weighted_f1",
            "test_macro_f1",
            "test_accuracy",
            "test_per_class_f1",
            "latent_silhouette",
            "n_flows",
            "seconds",
            "fit_seconds",
            "seconds_per_epoch",
            "best_checkpoint",
        ):
            assert key in metrics, key
        # the best checkpoint is a tsda classifier checkpoint holding the tested weights
        model = ClassifierModule.load_classifier(metrics["best_checkpoint"])
        assert model.hparams.seed == s and (run_dir / "config.yaml").is_file()
        epochs.add(metrics["epochs"])
    # determinism: the same job again gives the same test scores
    first = [json.loads((tmp_path / f"seed{s}" / "metrics.json").read_text())["test_weighted_f1"] for s in range(3)]
    ensemble_main([str(jobs), "--device", "cpu"])
    again = [json.loads((tmp_path / f"seed{s}" / "metrics.json").read_text())["test_weighted_f1"] for s in range(3)]
    assert first == again


def test_runs_that_cannot_stack_are_grouped_or_run_alone(tmp_path: Path) -> None:
    plain = Run([*TINY_FIT, "--seed_everything", "0"])
    other_seed = Run([*TINY_FIT, "--seed_everything", "5"])
    augmented = Run([*TINY_FIT, *TRANSLATION])
    bigger = Run([*TINY_FIT, "--data.batch_size", "32"])
    clipped = Run([*TINY_FIT, "--trainer.gradient_clip_val", "1.0", "--run_dir", str(tmp_path / "c")])
    assert batch_key(plain) == batch_key(other_seed)
    assert batch_key(plain) != batch_key(augmented)  # policy double: 2B flows per step
    assert batch_key(plain) != batch_key(bigger)
    assert "gradient_clip_val" in unbatchable(clipped)
    gru = Run(
        [
            *TINY_FIT,
            "--model.init_args.backbone",
            "gru",
            "--model.init_args.backbone_kwargs",
            "{}",
            "--run_dir",
            str(tmp_path / "g"),
        ]
    )
    assert "recurrent" in unbatchable(gru)  # vmap has no rule for nn.GRU: it runs as a plain fit
    compiled = Run([*TINY_FIT, "--compile", "true", "--run_dir", str(tmp_path / "c")])
    assert "--compile" in unbatchable(compiled)  # routed to a plain (compiled) tsda fit, not ignored
    assert unbatchable(Run([*TINY_FIT, "--run_dir", str(tmp_path / "p")])) is None


def test_chunks_keep_a_conditions_seeds_together(tmp_path: Path) -> None:
    spec = CampaignSpec.from_yaml(write_spec(tmp_path, {"a": {}, "b": {}}, seeds=[0, 1, 2]))
    from tsda.campaign import plan

    chunks = ensemble_chunks(plan(spec, tmp_path / "out"), 3)
    assert [[(j.condition, j.seed) for j in c] for c in chunks] == [
        [("a", 0), ("a", 1), ("a", 2)],
        [("b", 0), ("b", 1), ("b", 2)],
    ]
    assert len(ensemble_chunks(plan(spec, tmp_path / "out"), 0)) == 1
    with pytest.raises(ValueError, match="members_per_job"):
        ensemble_chunks([], -1)


@pytest.mark.slow
def test_a_campaign_gives_the_same_results_through_both_executors(tmp_path: Path) -> None:
    conditions = {
        "a": {},
        "sampled": {"data.sampler": "class_weighted"},
        "clipped": {"trainer.gradient_clip_val": 1.0},
    }  # clipped cannot stack: runs alone
    spec = CampaignSpec.from_yaml(
        write_spec(
            tmp_path,
            conditions,
            seeds=[0, 1],
            overrides={
                "data.synthetic_scale": 0.02,
                "data.synthetic_apps": 4,
                "data.min_class_size": 5,
                "trainer.max_epochs": 2,
                "trainer.enable_progress_bar": False,
                "latent_plot": False,
                "model.init_args.latent_points": 50,
                "model.init_args.backbone_kwargs": {"width": 8},
            },
        )
    )
    local = run_campaign(spec, tmp_path / "local", executor="local")
    ensemble = run_campaign(spec, tmp_path / "ensemble", executor="ensemble", members_per_job=0)
    assert (ensemble["status"] == "ok").all(), ensemble["error"].tolist()
    key = ["condition", "seed"]
    merged = local.merge(ensemble, on=key, suffixes=("_local", "_ensemble"))
    assert len(merged) == 6
    # same seeds, same steps: per-run scores agree up to float noise; the means certainly
    diff = (merged["test_weighted_f1_local"] - merged["test_weighted_f1_ensemble"]).abs()
    assert diff.max() < 0.05, merged[[*key, "test_weighted_f1_local", "test_weighted_f1_ensemble"]]
    executors = ensemble.set_index("condition")["metrics_json"].map(lambda m: json.loads(m).get("executor"))
    assert set(executors[["a", "sampled"]]) == {"ensemble"} and executors[["clipped"]].isna().all()


@pytest.mark.slow
def test_ensemble_kill_and_restart_runs_every_run_exactly_once(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"a": {}, "b": {"data.sampler": "class_weighted"}}, reference="a")
    out = tmp_path / "out"
    proc = runner(spec, out, "--executor", "ensemble", "--members_per_job", "2")
    try:
        first = wait_rows(out / "results.parquet", 2, proc)  # condition a's job done, b's in flight
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert set(first["condition"]) == {"a"} and (first["status"] == "ok").all()
    done = {Path(d) / "metrics.json": (Path(d) / "metrics.json").stat().st_mtime_ns for d in first["run_dir"]}
    campaign_main(["run", str(spec), "--out", str(out), "--executor", "ensemble", "--members_per_job", "2"])
    frame = pd.read_parquet(out / "results.parquet")
    assert sorted(zip(frame["condition"], frame["seed"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert (frame["status"] == "ok").all() and (frame["attempts"] == 1).all()
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in done.items())  # not run again


def test_bad_jobs_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "jobs.json"
    bad.write_text(yaml.safe_dump({"nothing": 1}))
    with pytest.raises(ValueError, match="jobs.json: not an ensemble jobs file"):
        ensemble_main([str(bad)])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        ensemble_main([str(tmp_path / "missing.json")])


def test_the_ensembles_flows_live_on_its_device(tmp_path: Path) -> None:
    """The ensemble's datamodule is not the Trainer's, so it would encode the flows on the
    CPU next to members on the module's device (a CUDA run would step CPU flows through CUDA
    weights). On its device, the meta device standing in for a GPU here, everything a step
    touches lives: members, and every tensor of every split."""
    run = Run([*TINY_FIT, "--run_dir", str(tmp_path / "r")])
    module = EnsembleModule([run.model], run.datamodule, patience=2)
    module._device = torch.device("meta")  # what Lightning's device placement sets
    module.on_fit_start()
    assert {p.device.type for p in run.model.parameters()} == {"meta"}
    for name, batch in run.datamodule.tensors.items():
        assert {t.device.type for t in (batch.x, batch.labels, batch.lengths)} == {"meta"}, name


def test_bf16_mixed_runs_stack_and_train_under_autocast(tmp_path: Path) -> None:
    """`--trainer.precision bf16-mixed` runs are batched (formerly they ran one by one),
    apart from float32 runs; member k ends near a separate bf16-mixed `tsda fit` run with
    seed k, and away from the float32 ensemble (its forward ran under autocast). Near: bf16
    rounds the batched convolutions otherwise than the plain ones, and Adam's first steps
    (about lr = 1e-3 each, whatever the gradient's size) turn that into differences of the
    order of a step, as large as those between bf16 and float32 runs."""
    bf16 = ["--trainer.precision", "bf16-mixed"]
    run = Run([*TINY_FIT, *bf16, "--run_dir", str(tmp_path / "b")])
    assert unbatchable(run) is None
    assert batch_key(run) != batch_key(Run([*TINY_FIT, "--run_dir", str(tmp_path / "f")]))
    assert "precision" in unbatchable(
        Run([*TINY_FIT, "--trainer.precision", "16-mixed", "--run_dir", str(tmp_path / "h")])
    )
    args = [*TINY_FIT, "--trainer.max_steps", "3", *bf16]
    ensemble, separate = _weights_after(args, [0, 1], tmp_path, precision="bf16-mixed", max_steps=3)
    fp32 = fit_ensemble(
        [Run([*TINY_FIT, "--seed_everything", "0"]).model], run.datamodule, EnsembleSettings(max_epochs=1, max_steps=3)
    )[0].best_state
    for seed, state in ensemble.items():
        for name, value in state.items():
            torch.testing.assert_close(value, separate[seed][name], rtol=0, atol=1e-2, msg=f"seed {seed} {name}")
    assert any(not torch.allclose(v, fp32[k], rtol=1e-4, atol=1e-5) for k, v in ensemble[0].items())
