"""Joint training with the diffusion denoiser (`tsda.joint.diffusion.JointDiffusion`), the
probability band on generated flows (`tsda.joint.objectives`), joint variations
(`JointModule(generated="vary")`) and the refusal of options that do not apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.tiny import N_PACKETS, class_table

from tsda.augment.validity import assert_valid
from tsda.data.codec import FlowCodec
from tsda.data.sources import write_parquet
from tsda.generators.base import load_generative
from tsda.joint.diffusion import JointDiffusion
from tsda.joint.module import JointModule
from tsda.joint.objectives import check_band, probability_band

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["small_up", "big_down", "mixed"]
TINY_DIFFUSION = {"block_out_channels": [8, 16], "steps": 2, "pool_per_class": 4, "pool_refresh": 2, "ema_decay": 0.9}
TINY = [
    "--data.min_packets", "3", "--data.min_class_size", "5", "--data.n_packets", str(N_PACKETS),
    "--data.batch_size", "32", "--model.init_args.backbone_kwargs", "{width: 8}",
    "--model.init_args.n_packets", str(N_PACKETS), "--model.init_args.latent_points", "0",
    "--latent_plot", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip


def _module(**kwargs: object) -> JointModule:
    torch.manual_seed(0)
    args = {"num_classes": 3, "class_names": CLASSES, "n_packets": N_PACKETS, "backbone_kwargs": {"width": 8},
            "generator": "diffusion", "generator_kwargs": TINY_DIFFUSION, "latent_points": 0, **kwargs}  # fmt: skip
    return JointModule(**args)


def _batch(n: int = 4, seed: int = 0):
    return FlowCodec(n_packets=N_PACKETS).encode(class_table(n, seed=seed))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tsda fit -c configs/experiment/synthetic_joint_diffusion.yaml` on tiny data, 3 epochs
    (classifier warm-up, generator warm-up, joint): its run directory."""
    from tsda.commands.fit import run_fit

    root = tmp_path_factory.mktemp("joint_diffusion")
    data = write_parquet(class_table(40), root / "flows.parquet")
    mp = pytest.MonkeyPatch()
    mp.chdir(REPO)
    try:
        run_fit(["-c", "configs/experiment/synthetic_joint_diffusion.yaml", *TINY, "--data.path", str(data),
                 "--model.init_args.generator_kwargs", json.dumps(TINY_DIFFUSION), "--trainer.max_epochs", "3",
                 "--run_dir", str(root / "run")])  # fmt: skip
    finally:
        mp.undo()
    return root / "run"


def test_the_synthetic_config_trains_tests_samples_and_varies(fitted: Path) -> None:
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    header = (fitted / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train_loss_denoise", "train_band", "train_gen_p_class", "train_gen_region_distance",
                "val_generated_accuracy", "val_generated_p_class"):  # fmt: skip
        assert key in header, key
    model = load_generative(fitted / "checkpoints/last.ckpt")
    assert type(model) is JointModule and model.hparams.generator == "diffusion" and int(model.generator_steps) > 0
    labels = torch.tensor([0, 1, 2] * 3)
    a, b = (model.sample(labels, torch.Generator().manual_seed(1)) for _ in range(2))
    assert_valid(a, model.codec, num_classes=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.labels, labels)
    batch = _batch(3)
    varied = model.vary(batch, torch.tensor([0.0, 0.5, 1.0]).repeat(3), torch.Generator().manual_seed(0))
    assert_valid(varied, model.codec, num_classes=3)
    assert torch.equal(varied.x[0], batch.x[0]) and torch.equal(varied.labels, batch.labels)


def test_the_one_step_prediction_carries_the_latent_gradient_to_the_denoiser() -> None:
    part = JointDiffusion(3, N_PACKETS, CLASSES, block_out_channels=(8, 16))
    terms = part.generator_terms(_batch(), torch.Generator().manual_seed(0))
    assert terms.fake.shape == (12, 3, N_PACKETS) and terms.noise.shape == (12, 4 * N_PACKETS)
    terms.fake.square().sum().backward()
    grads = [p.grad for p in part.parameter_groups()["generator"] if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)


def test_the_pool_refreshes_on_schedule_and_travels_in_the_state_dict() -> None:
    part = JointDiffusion(3, N_PACKETS, CLASSES, block_out_channels=(8, 16), steps=2, pool_per_class=4, pool_refresh=2)
    batch, g = _batch(), torch.Generator().manual_seed(0)
    first = part.training_flows(batch, g)
    pool = part.pool.clone()
    part.training_flows(batch, g)
    assert torch.equal(part.pool, pool)  # call 2 of 2: same pool
    part.training_flows(batch, g)
    assert not torch.equal(part.pool, pool)  # call 3: refreshed
    assert first.shape == batch.x.shape
    copy = JointDiffusion(3, N_PACKETS, CLASSES, block_out_channels=(8, 16), steps=2, pool_per_class=4, pool_refresh=2)
    copy.load_state_dict(part.state_dict())
    assert torch.equal(copy.pool, part.pool) and copy._calls == 3
    same = (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5))
    assert torch.equal(copy.training_flows(batch, same[0]), part.training_flows(batch, same[1]))


@pytest.mark.parametrize("generator, kwargs", [("diffusion", TINY_DIFFUSION),
                                               ("cgan", {"noise_dim": 8, "width": 8, "depth": 1, "disc_width": 8,
                                                         "w_recon": 1.0})])  # fmt: skip
def test_joint_variations_give_the_classifier_its_own_flows_varied(generator: str, kwargs: dict) -> None:
    module = _module(generator=generator, generator_kwargs=kwargs, generated="vary", vary_strength=0.5)
    batch = _batch()
    rows, generated = module.classifier_batch(batch, torch.Generator().manual_seed(0), 1.0)
    assert len(rows) == 2 * len(batch) and int(generated.sum()) == len(batch)
    assert torch.equal(rows.labels[len(batch) :], batch.labels)
    assert_valid(rows, module.codec, num_classes=3)


def test_the_band_is_zero_inside_and_pushes_back_from_both_sides() -> None:
    labels = torch.tensor([0, 0, 0])
    # p_0 = 0.2 (too hard), about 0.6 (inside), about 0.98 (too easy)
    logits = torch.tensor([[0.0, 1.386, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0]]).log_softmax(1).requires_grad_()
    per_row = [float(probability_band(logits[i : i + 1], labels[:1], 0.4, 0.8)) for i in range(3)]
    assert per_row[0] > 0 and per_row[1] == 0.0 and per_row[2] > 0
    probability_band(logits, labels, 0.4, 0.8).backward()
    assert logits.grad[0, 0] < 0 and logits.grad[2, 0] > 0  # raise the hard one, lower the easy one
    assert check_band([0.3, 0.9]) == (0.3, 0.9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"w_band": -0.1}, r"model\.w_band"),
        ({"band": (0.8, 0.4)}, r"model\.band"),
        ({"band": (0.0, 0.5)}, r"model\.band"),
        ({"band": (0.5, 1.0)}, r"model\.band"),
        ({"band": (0.5,)}, r"model\.band"),
        ({"n_critic": 2}, r"model\.n_critic is an option of the cgan's critic"),
        ({"lr_d": 1e-3}, r"model\.lr_d is an option of the cgan's critic"),
        ({"generated": "pool"}, r"model\.generated"),
        ({"vary_strength": 0.0}, r"model\.vary_strength"),
        ({"vary_strength": [0.2, 1.5]}, r"model\.vary_strength"),
        ({"vary_strength": [0.1, 0.2, 0.3]}, r"model\.vary_strength"),
        ({"generator_every": 0}, r"model\.generator_every"),
        ({"generator_kwargs": {"noise_dim": 8}}, r"model\.generator_kwargs: unknown key\(s\) \['noise_dim'\]"),
        ({"generator_kwargs": {"steps": 0}}, r"model\.generator_kwargs\.steps"),
        ({"generator_kwargs": {"sampler": "euler"}}, r"model\.generator_kwargs\.sampler"),
        ({"generator": "cgan", "generator_kwargs": {"steps": 4}}, r"unknown key\(s\) \['steps'\]"),
        ({"generator": "cgan", "generator_kwargs": {"w_recon": 0.0}, "generated": "vary"}, r"model\.generated vary"),
    ],
)
def test_bad_settings_are_refused_before_training(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _module(**kwargs)


def test_the_cli_refuses_a_critic_option_for_the_diffusion_config() -> None:
    from tsda.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fit", "-c", str(REPO / "configs/experiment/synthetic_joint_diffusion.yaml"),
              "--model.init_args.n_critic", "2", "--trainer.max_epochs", "1"])  # fmt: skip
    assert exc.value.code == 2


def test_the_generator_trains_on_every_nth_step_only() -> None:
    """`generator_every = 2`: of 4 joint steps, the generator trains on steps 0 and 2."""
    import lightning as L

    from tsda.data.datamodule import FlowDataModule

    tables = [class_table(n, seed) for seed, n in enumerate((16, 4, 4))]
    dm = FlowDataModule.from_tables(*tables, n_packets=N_PACKETS, batch_size=12, eval_batch_size=64)
    module = _module(generator_every=2, classifier_warmup_epochs=0, generator_warmup_epochs=0,
                     generated_rampup_epochs=0, generated="vary")  # fmt: skip
    trainer = L.Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert int(module.generator_steps) == 2


@pytest.mark.parametrize("generated", ["sample", "vary"])
def test_generated_flows_are_drawn_in_full_precision_under_autocast(generated: str) -> None:
    """The classifier's generated share under the Trainer's bf16 autocast (`bf16-mixed`) is
    the very flows drawn without it: generated flows are data, not bf16 computations."""
    batch = _batch()  # two identical modules: the pool's refresh count starts alike
    plain, _ = _module(generated=generated).eval().classifier_batch(batch, torch.Generator().manual_seed(0), 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = _module(generated=generated).eval().classifier_batch(batch, torch.Generator().manual_seed(0), 1.0)
    assert mixed.x.dtype == torch.float32
    torch.testing.assert_close(mixed.x, plain.x, rtol=0, atol=0)


def test_its_checkpoint_serves_tsda_test_sample_vary_and_the_generator_augmentation(
    fitted: Path, tmp_path: Path
) -> None:
    """The `Done when` of joint diffusion: `tsda test`, `tsda sample` (fresh and `--vary`) and
    the generator augmentation (fresh flows and a variation pool) take the checkpoint."""
    from tsda.augment.generator import GeneratorAugmentation
    from tsda.cli import main
    from tsda.data.sources import read_parquet
    from tsda.generators.base import prepare_augmentation

    best, last = fitted / "checkpoints/best.ckpt", fitted / "checkpoints/last.ckpt"
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["test", "--ckpt", str(best), "--out", str(tmp_path / "test"), *quiet])
    assert 0.0 <= json.loads((tmp_path / "test/metrics.json").read_text())["test_weighted_f1"] <= 1.0
    main(["sample", "--ckpt", str(last), "--per_class", "4", "--out", str(tmp_path / "s.parquet"), "--no_progress"])
    assert len(read_parquet(tmp_path / "s.parquet", max_packets=N_PACKETS)) == 12
    real = write_parquet(class_table(4, seed=5), tmp_path / "real.parquet")
    main(["sample", "--ckpt", str(last), "--vary", str(real), "--strength", "0.5", "--out", str(tmp_path / "v.parquet"),
          "--no_progress"])  # fmt: skip
    assert len(read_parquet(tmp_path / "v.parquet", max_packets=N_PACKETS)) == 12
    model = load_generative(last)
    for aug in (GeneratorAugmentation(str(last), pool_per_class=4, progress=False),
                GeneratorAugmentation(str(last), mode="vary", strength=0.5, variations_per_flow=0, progress=False)):  # fmt: skip
        prepare_augmentation(aug, device=torch.device("cpu"), class_names=model.class_names,
                             generator=torch.Generator(), codec=model.codec)  # fmt: skip
        batch = _batch(3)
        assert_valid(aug(batch, torch.Generator().manual_seed(0)), like=batch)


def test_a_scheduled_strength_follows_the_ramp_of_the_generated_weight() -> None:
    """`vary_strength: [start, end]` goes from start to end over `generated_rampup_epochs`
    from the joint phase's start, along the ramp the generated weight follows; a number stays."""
    from tsda.joint.schedule import JointSchedule

    s = JointSchedule(1, 1, 2)  # joint from epoch 2, ramp over epochs 2-3
    assert s.vary_strength([0.2, 0.6], 1, 0.5) == 0.2 and s.vary_strength([0.2, 0.6], 2, 0.0) == 0.2
    assert s.vary_strength([0.2, 0.6], 3, 0.0) == pytest.approx(0.4) and s.vary_strength([0.2, 0.6], 5) == 0.6
    assert s.vary_strength(0.3, 2, 0.5) == 0.3
    assert s.generated_weight(3, 0.0) == pytest.approx(0.5 * s.w_generated)


def test_the_cli_takes_a_scheduled_strength() -> None:
    from tsda.commands.fit import check_fit_args

    check_fit_args(["-c", str(REPO / "configs/experiment/synthetic_joint_diffusion.yaml"),
                    "--model.init_args.vary_strength", "[0.25, 0.75]"])  # fmt: skip
