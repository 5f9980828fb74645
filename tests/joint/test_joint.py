"""Joint training (`tsda.joint.module.JointModule`): a tiny fit through `tsda fit`, both
contracts of its checkpoint (`tsda test`, `tsda sample`, the generator augmentation),
determinism and resume, the classifier side's reuse of `ClassifierModule`, the schedule,
the loss terms and the refusal of bad settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from support.tiny import N_PACKETS, class_table, datamodule, trainer

from tsda.augment.generator import GeneratorAugmentation
from tsda.augment.order import Translation
from tsda.augment.validity import assert_valid
from tsda.classifier.module import ClassifierModule
from tsda.cli import main
from tsda.data.codec import FlowCodec
from tsda.data.sources import read_parquet, write_parquet
from tsda.generators.base import load_generative, prepare_augmentation
from tsda.generators.gan import losses
from tsda.generators.regions import MovingClassRegions
from tsda.joint.module import JointModule
from tsda.joint.schedule import JointSchedule

REPO = Path(__file__).resolve().parents[2]
TINY_GEN = {"noise_dim": 8, "width": 8, "depth": 1, "disc_width": 8, "w_recon": 1.0, "ema_decay": 0.9}
#: tiny data and nets for `tsda fit -c configs/experiment/synthetic_joint.yaml`: 3 steps an epoch
TINY = [
    "--data.min_packets",
    "3",
    "--data.min_class_size",
    "5",
    "--data.n_packets",
    str(N_PACKETS),
    "--data.batch_size",
    "32",
    "--model.init_args.backbone_kwargs",
    "{width: 8}",
    "--latent_plot",
    "false",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
JOINT = [
    "-c",
    "configs/experiment/synthetic_joint.yaml",
    *TINY,
    "--model.init_args.n_packets",
    str(N_PACKETS),
    "--model.init_args.generator_kwargs",
    json.dumps(TINY_GEN),
]
EPOCHS = 3  # 1 classifier warm-up, 1 generator warm-up, 1 joint (the synthetic config's schedule)


def _fit(args: list[str], run_dir: Path, epochs: int = EPOCHS, *extra: str) -> dict:
    from tsda.commands.fit import run_fit

    run_fit([*args, "--trainer.max_epochs", str(epochs), "--run_dir", str(run_dir), *extra])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_parquet(class_table(40), tmp_path_factory.mktemp("data") / "flows.parquet")


@pytest.fixture(scope="module")
def fitted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny joint fit through `tsda fit` (run directory, metrics), from the repository root."""
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    try:
        run_dir = tmp_path_factory.mktemp("joint") / "run"
        return run_dir, _fit([*JOINT, "--data.path", str(data)], run_dir)
    finally:
        mp.undo()


def _module(**kwargs: object) -> JointModule:
    torch.manual_seed(0)
    args = {
        "num_classes": 3,
        "class_names": ["small_up", "big_down", "mixed"],
        "n_packets": N_PACKETS,
        "backbone_kwargs": {"width": 8},
        "generator_kwargs": TINY_GEN,
        "latent_points": 0,
        **kwargs,
    }
    return JointModule(**args)


# -- tsda fit, tsda test, tsda sample --------------------------------------------------------
def test_fit_writes_the_metrics_of_a_classifier_fit(
    fitted: tuple[Path, dict], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, metrics = fitted
    monkeypatch.chdir(REPO)
    classifier = _fit(
        [
            "-c",
            "configs/experiment/synthetic_baseline.yaml",
            *TINY,
            "--data.path",
            str(data),
            "--model.init_args.latent_points",
            "1000",
        ],
        tmp_path / "clf",
        1,
    )
    assert set(metrics) == set(classifier)
    assert metrics["epochs"] == EPOCHS and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    assert Path(metrics["best_checkpoint"]).name == "best.ckpt"
    assert (run_dir / "checkpoints/last.ckpt").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train_loss_d",
        "train_loss_g",
        "train_class",
        "train_latent",
        "train_diversity",
        "train_w_generated",
        "val_generated_accuracy",
        "val_weighted_f1",
    ):
        assert key in header, key


def test_tsda_test_loads_the_joint_classifier(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    """In a fresh process: nothing has imported `tsda.joint.module` there (Lightning resolves a
    checkpoint's class only among imported ones)."""
    _, fit_metrics = fitted
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsda.cli",
            "test",
            "--ckpt",
            fit_metrics["best_checkpoint"],
            "--out",
            str(tmp_path / "test"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "test/metrics.json").read_text())
    assert metrics["n_flows"] == fit_metrics["n_flows"]
    assert metrics["test_weighted_f1"] == pytest.approx(fit_metrics["test_weighted_f1"], abs=1e-6)


def test_tsda_sample_writes_valid_flows(fitted: tuple[Path, dict], tmp_path: Path) -> None:
    last = fitted[0] / "checkpoints/last.ckpt"
    out = tmp_path / "syn.parquet"
    main(["sample", "--ckpt", str(last), "--per_class", "20", "--seed", "0", "--out", str(out), "--no_progress"])
    table = read_parquet(out, max_packets=N_PACKETS)
    assert len(table) == 60 and set(table.class_names) == {"small_up", "big_down", "mixed"}
    assert_valid(FlowCodec(n_packets=N_PACKETS).encode(table), FlowCodec(n_packets=N_PACKETS))


def test_the_checkpoint_is_a_generator(fitted: tuple[Path, dict]) -> None:
    last = fitted[0] / "checkpoints/last.ckpt"
    model = load_generative(last)
    assert type(model) is JointModule and int(model.generator_steps) > 0
    labels = torch.tensor([0, 1, 2] * 30)
    a, b = (model.sample(labels, torch.Generator().manual_seed(1)) for _ in range(2))
    assert_valid(a, model.codec, num_classes=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, labels)
    assert_valid(model.sample(labels, torch.Generator().manual_seed(1), prior="standard", use_ema=False), model.codec)
    with pytest.raises(TypeError):
        model.sample(labels, torch.Generator(), steps=10)
    # ... that the generator augmentation of a classifier takes
    aug = GeneratorAugmentation(str(last))
    prepare_augmentation(
        aug, device=torch.device("cpu"), class_names=model.class_names, generator=torch.Generator(), codec=model.codec
    )
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(5, seed=3))
    assert_valid(aug(batch, torch.Generator().manual_seed(0)), like=batch)


def test_the_joint_classifier_guides_and_scores_like_a_classifier(fitted: tuple[Path, dict]) -> None:
    """`ClassifierModule.load_frozen` (a generator's guide, `tsda evaluate --classifier`)
    takes a joint checkpoint: the classifier part, frozen, with the same latents."""
    from tsda.classifier.module import ClassifierModule

    best = fitted[1]["best_checkpoint"]
    guide = ClassifierModule.load_frozen(best, num_classes=3)
    assert not guide.training and not any(p.requires_grad for p in guide.parameters())
    x = FlowCodec(n_packets=N_PACKETS).encode(class_table(4, seed=5)).x
    again = load_generative(best)
    assert torch.allclose(guide.encode(x), again.eval().encode(x))


def test_same_seed_same_metrics(
    fitted: tuple[Path, dict], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    again = _fit([*JOINT, "--data.path", str(data)], tmp_path / "again")
    first = fitted[1]
    for key in (
        "test_weighted_f1",
        "test_macro_f1",
        "test_accuracy",
        "test_loss",
        "test_per_class_f1",
        "best_score",
        "n_flows",
    ):
        assert again[key] == first[key], key


def test_resume_from_last_matches_an_uninterrupted_run(
    fitted: tuple[Path, dict], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped inside the generator warm-up, resumed into the joint phase: the same weights
    (classifier, generator, EMA, critic, noise prior, class regions) and metrics."""
    monkeypatch.chdir(REPO)
    args = [*JOINT, "--data.path", str(data)]
    _fit(args, tmp_path / "resumed", EPOCHS - 1)
    last = tmp_path / "resumed/checkpoints/last.ckpt"
    resumed = _fit(args, tmp_path / "resumed", EPOCHS, "--ckpt_path", str(last))
    straight_dir, straight = fitted
    keys = [k for k in straight if k.startswith("test_") and isinstance(straight[k], float)]
    assert {k: resumed[k] for k in keys} == {k: straight[k] for k in keys}
    a = torch.load(last, weights_only=False)
    b = torch.load(straight_dir / "checkpoints/last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert set(a["state_dict"]) == set(b["state_dict"])
    for name, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], tensor, rtol=0, atol=0, msg=name)


# -- the classifier side ---------------------------------------------------------------------
def test_without_generated_flows_the_classifier_trains_exactly_as_classifier_module(tmp_path: Path) -> None:
    """`w_generated = 0`: while the generator trains beside it (regions, critic, EMA), the
    joint classifier's weights are those of a `ClassifierModule` without augmentation."""
    dm = datamodule()
    joint = _module(w_generated=0.0, classifier_warmup_epochs=1, generator_warmup_epochs=0)
    trainer(tmp_path / "j", 2).fit(joint, datamodule=dm)
    torch.manual_seed(0)
    plain = ClassifierModule(num_classes=3, class_names=dm.class_names, backbone_kwargs={"width": 8}, latent_points=0)
    trainer(tmp_path / "c", 2).fit(plain, datamodule=datamodule())
    assert int(joint.generator_steps) > 0
    for name, tensor in plain.net.state_dict().items():
        torch.testing.assert_close(joint.net.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("policy", ["double", "replace"])
def test_generated_flows_join_the_classifier_batch_by_policy(policy: str) -> None:
    model = _module(policy=policy, augment_p=0.5)
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(20, seed=1))
    g = torch.Generator().manual_seed(0)
    same, none = model.classifier_batch(batch, g, 0.0)
    assert same is batch and not none.any()
    rows, generated = model.classifier_batch(batch, g, 0.5)
    assert_valid(rows, model.codec, num_classes=3)
    if policy == "double":
        assert len(rows) == 2 * len(batch) and generated.tolist() == [False] * len(batch) + [True] * len(batch)
        assert torch.equal(rows.labels, batch.labels.repeat(2))
    else:
        assert len(rows) == len(batch) and 0 < int(generated.sum()) < len(batch)
        assert torch.equal(rows.labels, batch.labels)
        assert torch.equal(rows.x[~generated], batch.x[~generated])


def test_supervised_contrastive_views_train(tmp_path: Path) -> None:
    model = _module(
        w_supcon=0.5,
        view_augmentation=Translation(max_shift=2),
        classifier_warmup_epochs=0,
        generator_warmup_epochs=0,
        generated_rampup_epochs=0,
    )
    fit = trainer(tmp_path, 1)
    fit.fit(model, datamodule=datamodule())
    metrics = {k: float(v) for k, v in fit.callback_metrics.items()}
    assert metrics["train_supcon"] > 0 and metrics["train_w_generated"] == 1.0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_class_regions_follow_the_classifier() -> None:
    """The first update is the class regions of the training split's eval-mode latents;
    later ones decay the sums and add the batch's."""
    dm = datamodule()
    torch.manual_seed(0)
    net = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8}).net
    regions = MovingClassRegions(3, net.latent_dim, decay=0.5)
    dm.setup()
    train = dm.tensors["train"]
    regions.update(net, train.index(torch.arange(4)), dm.class_names, dm.train_eval_dataloader)
    with torch.no_grad():
        z = net.eval().encode(train.x)  # (N, D)
    for k in range(3):
        torch.testing.assert_close(regions.mu[k], z[train.labels == k].mean(0), atol=1e-5, rtol=1e-4)
    n = regions.n.clone()
    batch = train.index(torch.arange(10))
    regions.update(net, batch, dm.class_names, dm.train_eval_dataloader)
    torch.testing.assert_close(regions.n, 0.5 * n + torch.bincount(batch.labels, minlength=3).float())
    with pytest.raises(ValueError, match=r"model\.region_decay"):
        MovingClassRegions(3, 4, decay=1.0)


def test_an_untrained_generator_warns_when_sampled() -> None:
    with pytest.warns(UserWarning, match="generator has not trained yet"):
        out = _module().sample(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    assert_valid(out, FlowCodec(n_packets=N_PACKETS))


# -- schedule, losses, settings --------------------------------------------------------------
def test_schedule_phases_and_ramp() -> None:
    s = JointSchedule(classifier_warmup_epochs=2, generator_warmup_epochs=1, rampup_epochs=2, w_generated=0.8)
    assert [s.phase(e) for e in range(5)] == ["classifier", "classifier", "generator", "joint", "joint"]
    assert s.generated_weight(2, 0.9) == 0.0 and s.generated_weight(3, 0.0) == 0.0
    assert s.generated_weight(4, 0.0) == pytest.approx(0.4) and s.generated_weight(6, 0.5) == pytest.approx(0.8)
    sigmoid = JointSchedule(0, 0, 1, "sigmoid", 1.0)
    assert sigmoid.generated_weight(0, 0.5) == pytest.approx(float(torch.exp(torch.tensor(-1.25))))
    assert JointSchedule(0, 0, 0).generated_weight(0) == 1.0


def test_diversity_hinge_penalises_collapse_only() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    noise, sigma = torch.randn(6, 8), torch.ones(6, 4)
    collapsed = torch.zeros(6, 4, requires_grad=True)
    loss = losses.latent_diversity(collapsed, noise, labels, sigma)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(collapsed.grad).all()
    spread = 10 * torch.randn(6, 4)
    assert losses.latent_diversity(spread, noise, labels, sigma).item() == 0.0
    assert losses.latent_diversity(spread, noise, torch.arange(6), sigma).item() == 0.0  # no pairs


def test_supervised_contrastive_rewards_class_clusters() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    clustered = torch.cat([torch.tensor([[1.0, 0.0]]).repeat(3, 1), torch.tensor([[0.0, 1.0]]).repeat(3, 1)])
    mixed = clustered[torch.tensor([0, 3, 1, 4, 2, 5])]
    assert losses.supervised_contrastive(clustered, labels) < losses.supervised_contrastive(mixed, labels)
    assert losses.supervised_contrastive(clustered, torch.arange(6)).item() == 0.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"w_class": -1.0}, "w_class"),
        ({"w_latent": -0.1}, "w_latent"),
        ({"w_diversity": -1.0}, "w_diversity"),
        ({"w_generated": -1.0}, "w_generated"),
        ({"w_supcon": -1.0}, "w_supcon"),
        ({"classifier_warmup_epochs": -1}, "classifier_warmup_epochs"),
        ({"generator_warmup_epochs": -2}, "generator_warmup_epochs"),
        ({"generated_rampup_epochs": -1}, "generated_rampup_epochs"),
        ({"generated_rampup": "cosine"}, "generated_rampup"),
        ({"generator": "vae"}, "generator"),
        ({"generator_kwargs": {"noise": 8}}, r"generator_kwargs: unknown key\(s\) \['noise'\]"),
        ({"generator_kwargs": {"w_recon": -1.0}}, r"generator_kwargs\.w_recon"),
        ({"generator_kwargs": {"width": 0}}, r"generator_kwargs\.width"),
        ({"generator_kwargs": {"ema_decay": 1.0}}, r"generator_kwargs\.ema_decay"),
        ({"supcon_temperature": 0.0}, "supcon_temperature"),
        ({"region_decay": 1.0}, "region_decay"),
        ({"n_critic": 0}, "n_critic"),
        ({"lr_g": 0.0}, "lr_g"),
        ({"betas": (0.5, 1.0)}, "betas"),
        ({"policy": "triple"}, "policy"),
        ({"class_names": ["a"]}, "class_names"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"model\.{name}"):
        _module(**kwargs)


def test_the_cli_refuses_an_unknown_schedule_value() -> None:
    from tsda.commands.fit import check_fit_args

    with pytest.raises(ValueError, match="generated_rampup"):
        check_fit_args([*JOINT, "--model.init_args.generated_rampup", "cosine"])


def test_configs_and_the_campaign_condition_parse_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both joint configs parse; the campaign's `joint` condition parses on its base and sets
    the model of configs/experiment/fgnet_joint.yaml."""
    from tsda.campaign.spec import CampaignSpec, plan
    from tsda.commands.fit import check_fit_args

    monkeypatch.chdir(REPO)
    for config in ("synthetic_joint", "fgnet_joint"):
        check_fit_args(["-c", f"configs/experiment/{config}.yaml"])
    spec = CampaignSpec.from_yaml(REPO / "experiments/generative/campaign.yaml")
    (job,) = plan(spec, Path("/tmp/unused"), conditions=["joint"], seeds=[0])
    check_fit_args(list(job.args))
    condition = yaml.safe_load((REPO / "experiments/generative/campaign.yaml").read_text())["conditions"]["joint"]
    assert condition["model"] == "tsda.joint.module.JointModule"
    config = yaml.safe_load((REPO / "configs/experiment/fgnet_joint.yaml").read_text())["model"]["init_args"]
    base = yaml.safe_load((REPO / "experiments/generative/base.yaml").read_text())["model"]["init_args"]
    settings = {k.removeprefix("model.init_args."): v for k, v in condition.items() if k != "model"}
    assert {**base, **settings} == {k: v for k, v in {**base, **config}.items() if k != "n_packets"}
