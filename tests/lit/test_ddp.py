"""Real DDP on CPU: two `gloo` processes, `tsda fit --trainer.devices 2 --trainer.strategy ddp`.

The classifier case is the one that hung before (1,799 training flows, batch 899: rank 0
had two batches, rank 1 one); it must finish and match the single-process run within a
tolerance (different shards and per-rank augmentation streams change the details, not the
outcome). The diffusion case checks that every rank's class-latent sums are added up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
#: the issue's case: 1,799 training flows of the embedded simulator (20 apps)
SYNTHETIC = ["--data.synthetic_scale", "0.05", "--trainer.enable_progress_bar", "false", "--latent_plot", "false"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
ONE = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]


def _fit(args: list[str], run_dir: Path, timeout: float = 400) -> dict:
    # tests/ on the path: `support.ddp_probe.RanksAgree` is loaded by class path in the subprocesses
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tsda.cli", "fit", *args, "--run_dir", str(run_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_classifier_with_uneven_shards_finishes(tmp_path: Path) -> None:
    """Regression: hung in the first epoch (rank 0 two batches of 899, rank 1 one)."""
    metrics = _fit(
        [
            "-c",
            "configs/experiment/synthetic_baseline.yaml",
            *SYNTHETIC,
            "--data.batch_size",
            "899",
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--model.init_args.latent_points",
            "0",
            "--trainer.max_epochs",
            "2",
            *DDP,
        ],
        tmp_path / "ddp",
    )
    assert metrics["epochs"] == 2 and metrics["n_flows"]["train"] == 1799
    assert 0.0 <= metrics["test_weighted_f1"] <= 1.0


@pytest.mark.slow
def test_ddp_classifier_matches_one_process(tmp_path: Path) -> None:
    """2 ranks x batch 64 against 1 process x batch 128 (the same flows per optimiser step),
    with an augmentation (per-rank streams): test weighted F1 within 0.1 of each other;
    validation and test are sharded and their metrics synced (every flow scored once)."""
    args = [
        "-c",
        "configs/experiment/synthetic_baseline.yaml",
        *SYNTHETIC,
        "--model.init_args.latent_points",
        "0",
        "--model.init_args.backbone_kwargs",
        "{width: 16}",
        "--trainer.max_epochs",
        "12",
        "--patience",
        "100",
        "--model.init_args.lr",
        "0.003",
        "--model.init_args.augmentation",
        "configs/augment/translation.yaml",
    ]
    ddp = _fit([*args, "--data.batch_size", "64", *DDP], tmp_path / "ddp")
    one = _fit([*args, "--data.batch_size", "128", *ONE], tmp_path / "one")
    assert ddp["epochs"] == one["epochs"] == 12 and ddp["n_flows"] == one["n_flows"]
    assert one["test_weighted_f1"] > 0.5 and ddp["test_weighted_f1"] > 0.5
    assert abs(ddp["test_weighted_f1"] - one["test_weighted_f1"]) < 0.1, (
        ddp["test_weighted_f1"],
        one["test_weighted_f1"],
    )


@pytest.mark.slow
def test_ddp_diffusion_adds_up_every_ranks_latent_sums(tmp_path: Path) -> None:
    """Per class, the latent sums of 2 DDP ranks equal one process's: the ranks' shards of
    a shuffled epoch are the one process's epoch plus one padded flow (1,799 training flows
    over 2 ranks). DDP broadcasts rank 0's buffers before every forward, so sums kept in the
    buffers during the epoch would count rank 0's shard twice and lose rank 1's."""
    from support.tiny import fit_classifier  # noqa: F401 - fixtures importable in the subprocess too

    clf = _fit(
        [
            "-c",
            "configs/experiment/synthetic_baseline.yaml",
            *SYNTHETIC,
            *ONE,
            "--trainer.max_epochs",
            "1",
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--model.init_args.latent_points",
            "0",
        ],
        tmp_path / "clf",
    )
    args = [
        "-c",
        "configs/experiment/fgnet_diffusion_guided.yaml",
        "--data.path",
        "null",
        *SYNTHETIC,
        "--model.init_args.block_out_channels",
        "[8, 16]",
        "--model.init_args.classifier_ckpt",
        clf["best_checkpoint"],
        "--trainer.max_epochs",
        "2",
        "--data.batch_size",
        "256",
        "--data.sampler",
        "none",
    ]
    _fit([*args, *DDP], tmp_path / "ddp")
    _fit([*args, *ONE], tmp_path / "one")
    state = {
        name: torch.load(tmp_path / name / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
        for name in ("ddp", "one")
    }
    train, epochs = 1799, 2
    assert float(state["one"]["latent_count"].sum()) == epochs * train
    extra = state["ddp"]["latent_count"] - state["one"]["latent_count"]  # (K,) the padded flow of each epoch
    assert float(extra.sum()) == epochs and bool((extra >= 0).all())
    same = extra == 0  # classes without a padded flow: the very same flows on both sides
    assert int(same.sum()) >= len(extra) - epochs
    torch.testing.assert_close(state["ddp"]["latent_sum"][same], state["one"]["latent_sum"][same], rtol=1e-4, atol=1e-3)


#: every rank's weights and training statistics must agree at the end (`support.ddp_probe.RanksAgree`)
PROBE = ["--trainer.callbacks", '[{"class_path": "support.ddp_probe.RanksAgree"}]']
#: a couple of steps: what DDP must survive is each kind of step, not many of them
TINY_RUN = [
    "--data.path",
    "null",
    *SYNTHETIC,
    "--data.batch_size",
    "128",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    *PROBE,
]


@pytest.mark.slow
def test_ddp_cgan_manual_optimisation(tmp_path: Path) -> None:
    """The cVAE-GAN under `--trainer.strategy ddp`: a critic backward then a generator
    backward per step (manual optimisation: each backward leaves the other part's
    parameters without a gradient); the noise prior is refitted on every rank alike."""
    metrics = _fit(
        [
            "-c",
            "configs/experiment/fgnet_cgan.yaml",
            *TINY_RUN,
            "--trainer.max_epochs",
            "2",
            "--model.init_args.width",
            "8",
            "--model.init_args.disc_width",
            "8",
            "--model.init_args.depth",
            "1",
            "--model.init_args.noise_dim",
            "8",
            *DDP,
        ],
        tmp_path / "ddp",
    )
    assert metrics["epochs"] == 2
    state = torch.load(tmp_path / "ddp/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert bool((state["noise_prior.n"] > 0).all())


#: the joint module's two generators, tiny: (experiment config, generator_kwargs)
JOINT_GENERATORS = {
    "cgan": (
        "synthetic_joint.yaml",
        "{noise_dim: 8, width: 8, depth: 1, disc_width: 8, w_recon: 10.0, ema_decay: 0.9}",
    ),
    "diffusion": ("synthetic_joint_diffusion.yaml", "{block_out_channels: [8, 16], steps: 2, ema_decay: 0.9}"),
}


@pytest.mark.slow
@pytest.mark.parametrize("generator", sorted(JOINT_GENERATORS))
def test_ddp_joint_through_every_phase(generator: str, tmp_path: Path) -> None:
    """The joint module under `--trainer.strategy ddp` through its three phases (epoch 0:
    the classifier alone, the generator (and the cGAN's critic) unused; 1: the generator too;
    2: the classifier on generated flows: the cGAN's fresh ones, the denoiser's SDEdit
    variations of the batch); the moving class regions agree across ranks."""
    config, generator_kwargs = JOINT_GENERATORS[generator]
    metrics = _fit(
        [
            "-c",
            f"configs/experiment/{config}",
            *TINY_RUN,
            "--trainer.max_epochs",
            "3",
            "--model.init_args.backbone_kwargs",
            "{width: 8}",
            "--model.init_args.latent_points",
            "0",
            "--model.init_args.generator_kwargs",
            generator_kwargs,
            "--patience",
            "100",
            *DDP,
        ],
        tmp_path / "ddp",
    )
    assert metrics["epochs"] == 3 and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    state = torch.load(tmp_path / "ddp/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert int(state["generator_steps"]) == 2 * 2 and float(state["regions.n"].sum()) > 0


@pytest.mark.slow
def test_ddp_packet_transformer(tmp_path: Path) -> None:
    """The packet transformer under `--trainer.strategy ddp` (its vocabulary is fitted on the
    whole training split on every rank, so the buffers agree)."""
    metrics = _fit(
        [
            "-c",
            "configs/experiment/fgnet_transformer.yaml",
            *TINY_RUN,
            "--trainer.max_epochs",
            "1",
            "--model.init_args.d_model",
            "16",
            "--model.init_args.n_layers",
            "1",
            "--model.init_args.n_heads",
            "2",
            "--model.init_args.vocab_size",
            "16",
            "--model.init_args.warmup_steps",
            "0",
            *DDP,
        ],
        tmp_path / "ddp",
    )
    assert metrics["epochs"] == 1


def test_manual_optimisation_gets_or_demands_the_unused_parameter_search(tmp_path: Path) -> None:
    """`tsda fit` turns a plain DDP strategy into its unused-parameter variant for manually
    optimised modules (cGAN, joint) only; a DDP wrapper built without the search (e.g. a
    `DDPStrategy` class path) is refused at fit start, naming `--trainer.strategy`."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tsda.classifier.module import ClassifierModule
    from tsda.errors import TsdaError
    from tsda.generators.gan.module import GANModule
    from tsda.lit.distributed import check_unused_parameters, strategy_for

    gan, clf = GANModule(num_classes=2, width=8, disc_width=8, depth=1), ClassifierModule(num_classes=2)
    assert strategy_for(gan, "ddp") == "ddp_find_unused_parameters_true"
    assert strategy_for(gan, "ddp_spawn") == "ddp_spawn_find_unused_parameters_true"
    assert strategy_for(gan, "auto") == "auto" and strategy_for(clf, "ddp") == "ddp"
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        for search, refused in ((False, True), (True, False)):
            wrapped = DistributedDataParallel(torch.nn.Linear(2, 2), find_unused_parameters=search)
            gan._trainer = SimpleNamespace(strategy=SimpleNamespace(model=wrapped))
            if refused:
                with pytest.raises(TsdaError, match="--trainer.strategy ddp"):
                    check_unused_parameters(gan)
            else:
                check_unused_parameters(gan)
            clf._trainer = gan._trainer
            check_unused_parameters(clf)  # automatic optimisation: nothing to demand
    finally:
        dist.destroy_process_group()
