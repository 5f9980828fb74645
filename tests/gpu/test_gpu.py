"""On a GPU: what must hold when tsda runs on CUDA (tests marked `gpu`, skipped without a CUDA
device; `pytest -m gpu` runs them, `bash benchmarks/gpu_check.sh` runs them with the GPU
measurements). Everywhere: the `--device` options of `tsda evaluate`, `tsda augment preview /
enlarge` and the benchmarks, and the dry run of `benchmarks/gpu_check.sh`.

The GPU tests: a `bf16-mixed` fit of every module on tiny data (classifier with and without
augmentations, plain and latent-guided cGAN, diffusion, packet transformer, joint), each
generator's `sample` on CUDA (valid float32 flows, also under autocast, the same flows from
the same seed), the generator augmentation's full-precision flows under CUDA autocast, `tsda
sample / evaluate / augment` on CUDA, a campaign through the ensemble and the process
executor on CUDA (the same runs agree), no host sync in the classifier's training step, and
`--trainer.deterministic true` giving the same weights twice on CUDA.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from support.campaign import TINY_FIT, TRANSLATION
from support.tiny import N_PACKETS, TINY_GAN, class_table, datamodule, fit_classifier

from tsda.augment.catalog import build_augmentation
from tsda.augment.validity import check_valid
from tsda.classifier.module import ClassifierModule
from tsda.cli import main
from tsda.commands.options import resolve_device
from tsda.data.batch import FlowBatch
from tsda.data.codec import FlowCodec
from tsda.data.sources import read_parquet, write_parquet
from tsda.errors import TsdaError
from tsda.generators.base import GenerativeModule, load_generative, prepare_augmentation
from tsda.lit.checkpoint import read_checkpoint
from tsda.seeds import seeded_generator

REPO = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
NAMES = ["small_up", "big_down", "mixed"]
#: the embedded dataset, small, for the commands that read flows
TINY_DATA = ["--data.synthetic_scale", "0.02", "--data.synthetic_apps", "4", "--data.min_class_size", "5"]
#: the in-memory 3-class tables of support.tiny written to Parquet, as tests/metrics/test_fidelity.py reads them
REAL_OPTIONS = ["--data.min_packets", "3", "--data.min_class_size", "5", "--data.n_packets", str(N_PACKETS)]


def gpu(test):
    """Mark `test` `gpu` (selected by `pytest -m gpu`) and skip it without a CUDA device."""
    needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
    return pytest.mark.gpu(needs_cuda(test))


@pytest.fixture(autouse=True)
def _restore_determinism():
    """A Trainer with `deterministic` switches torch's deterministic algorithms on for the
    whole process and leaves them on: each test here starts and ends with the setting it found."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def cuda_trainer(root: Path, epochs: int, precision: str = "bf16-mixed", **kwargs: object) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator="gpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


def float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's floating-point parameters and buffers, copied to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def assert_trained(before: dict[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Every parameter on CUDA and finite, and some moved from `before`."""
    assert {p.device.type for p in module.parameters()} == {"cuda"}
    after = float_state(module)
    assert all(torch.isfinite(v).all() for v in after.values()), [
        k for k, v in after.items() if not torch.isfinite(v).all()
    ]
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight moved"


def assert_valid_flows(batch: FlowBatch, codec: FlowCodec, labels: torch.Tensor) -> None:
    assert batch.x.dtype == torch.float32, batch.x.dtype
    problems = check_valid(batch.to("cpu"), codec, num_classes=len(NAMES))
    assert not problems, problems
    assert torch.equal(batch.labels.cpu(), labels.cpu())


# -- every module fits in bf16-mixed on CUDA --------------------------------------------------------
@gpu
@pytest.mark.parametrize("augmentation", [None, "translation", "trivial_augment.yaml"])
def test_classifier_fits_and_tests_in_bf16_mixed_on_cuda(tmp_path: Path, augmentation: str | None) -> None:
    dm = datamodule()
    aug = None
    if augmentation is not None:
        aug = build_augmentation(
            str(REPO / "configs/augment" / augmentation) if augmentation.endswith(".yaml") else augmentation
        )
    torch.manual_seed(0)
    model = ClassifierModule(
        num_classes=3, class_names=NAMES, backbone_kwargs={"width": 8}, augmentation=aug, latent_points=50
    )
    before = float_state(model.net)
    trainer = cuda_trainer(tmp_path, 2)
    trainer.fit(model, datamodule=dm)
    assert_trained(before, model.net)
    assert dm.tensors["train"].x.is_cuda  # the flows live on the training device
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics["val_weighted_f1"] <= 1.0
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0.0 <= tested["test_weighted_f1"] <= 1.0
    assert model.latent_scores and all(math.isfinite(v) for v in model.latent_scores.values())  # from bf16 latents


@gpu
def test_tsda_fit_in_bf16_mixed_on_cuda_writes_its_run(tmp_path: Path) -> None:
    from tsda.commands.fit import run_fit

    run_dir = tmp_path / "run"
    run_fit(
        [
            *TINY_FIT,
            *TRANSLATION,
            "--trainer.accelerator",
            "gpu",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.max_epochs",
            "2",
            "--run_dir",
            str(run_dir),
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    assert "latent_silhouette" in metrics and math.isfinite(metrics["latent_silhouette"])
    model = ClassifierModule.load_classifier(metrics["best_checkpoint"])  # a CUDA run's checkpoint loads on the CPU
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def build_generator(name: str, guide: Path) -> GenerativeModule:
    """A tiny generator of each kind on the 3-class data of support.tiny (L = 12)."""
    from tsda.generators.diffusion.module import DiffusionModule
    from tsda.generators.gan.module import GANModule
    from tsda.generators.transformer.module import TransformerModule

    torch.manual_seed(0)
    common = {"num_classes": 3, "class_names": NAMES, "n_packets": N_PACKETS}
    if name == "cgan":
        return GANModule(**common, **TINY_GAN)
    if name == "cgan_latent":
        return GANModule(
            **common, **TINY_GAN, classifier_ckpt=str(guide), w_class=1.0, w_latent=0.1, latent_conditioning=True
        )
    if name == "diffusion":
        return DiffusionModule(
            **common, block_out_channels=(16, 32), classifier_ckpt=str(guide), ema_decay=0.9, lr=3e-3, label_dropout=0.2
        )
    if name == "transformer":
        return TransformerModule(
            **common, d_model=16, n_layers=1, n_heads=2, vocab_size=32, size_bins=8, gap_bins=16, lr=1e-2
        )
    raise ValueError(name)


GENERATORS = ["cgan", "cgan_latent", "diffusion", "transformer"]


@pytest.fixture(scope="module")
def generators(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each generator fitted for 2 epochs in bf16-mixed on CUDA: `name -> (module, trainer,
    checkpoint, initial weights)`; `joint` (`tsda fit -c configs/experiment/synthetic_joint.yaml`
    on CUDA in bf16-mixed): `(None, metrics.json, last.ckpt, None)`."""
    from tsda.commands.fit import run_fit

    root = tmp_path_factory.mktemp("gpu_generators")
    guide = fit_classifier(root, datamodule(), epochs=2)  # a CPU-trained guide: loaded onto CUDA by each generator
    out: dict[str, tuple] = {}
    for name in GENERATORS:
        model = build_generator(name, guide)
        before = float_state(model)
        trainer = cuda_trainer(root / name, 2)
        trainer.fit(model, datamodule=datamodule())
        path = root / f"{name}.ckpt"
        trainer.save_checkpoint(path)
        out[name] = (model, trainer, path, before)
    data = write_parquet(class_table(40), root / "flows.parquet")
    tiny_gen = {"noise_dim": 8, "width": 8, "depth": 1, "disc_width": 8, "w_recon": 1.0, "ema_decay": 0.9}
    run_dir = root / "joint"
    run_fit(
        [
            "-c",
            str(REPO / "configs/experiment/synthetic_joint.yaml"),
            "--data.path",
            str(data),
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
            "--model.init_args.n_packets",
            str(N_PACKETS),
            "--model.init_args.generator_kwargs",
            json.dumps(tiny_gen),
            "--latent_plot",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.accelerator",
            "gpu",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.max_epochs",
            "3",
            "--run_dir",
            str(run_dir),
        ]
    )
    out["joint"] = (None, json.loads((run_dir / "metrics.json").read_text()), run_dir / "checkpoints/last.ckpt", None)
    return out


@gpu
@pytest.mark.parametrize("name", GENERATORS)
def test_generator_fits_in_bf16_mixed_on_cuda(generators: dict[str, tuple], name: str) -> None:
    model, trainer, path, before = generators[name]
    assert_trained(before, model)
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    assert path.is_file()


@gpu
def test_joint_module_fits_in_bf16_mixed_on_cuda(generators: dict[str, tuple]) -> None:
    _, metrics, last, _ = generators["joint"]
    assert metrics["epochs"] == 3 and 0.0 <= metrics["test_weighted_f1"] <= 1.0
    state = read_checkpoint(last)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# -- sampling on CUDA ---------------------------------------------------------------------------------
SAMPLING = [
    ("cgan", {}),
    ("cgan_latent", {}),
    ("transformer", {}),
    ("joint", {}),
    ("diffusion", {"sampler": "dpmpp", "steps": 4}),
    ("diffusion", {"sampler": "ddpm", "steps": 6}),
    ("diffusion", {"sampler": "ddim", "steps": 4, "cfg_scale": 2.0, "latent_guidance_scale": 1.0}),
]


@gpu
@pytest.mark.parametrize(
    ("name", "options"), SAMPLING, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in SAMPLING]
)
def test_sampling_on_cuda_gives_valid_float32_flows(generators: dict[str, tuple], name: str, options: dict) -> None:
    """Loaded onto CUDA as `tsda sample` loads it: valid float32 flows on the device, the same
    from the same seed, and still valid float32 flows when drawn under bf16 autocast (as a
    generator augmentation draws inside `training_step`)."""
    model = load_generative(generators[name][2], map_location="cuda")
    assert model.device.type == "cuda"
    labels = torch.tensor([0, 1, 2] * 8, device="cuda")

    def draw(seed: int) -> FlowBatch:
        return model.sample(labels, seeded_generator(seed, "cuda"), **options)

    a, b = draw(3), draw(3)
    assert a.x.is_cuda
    assert_valid_flows(a, model.codec, labels)
    assert torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = draw(3)
    assert_valid_flows(mixed, model.codec, labels)


@gpu
@pytest.mark.parametrize("name", ["cgan", "diffusion", "transformer"])
def test_generator_augmentation_under_cuda_autocast_draws_full_precision_flows(
    generators: dict[str, tuple], name: str
) -> None:
    from tsda.augment.generator import GeneratorAugmentation

    options = {"sampler": "dpmpp", "steps": 4} if name == "diffusion" else {}
    aug = GeneratorAugmentation(str(generators[name][2]), options=options, progress=False)
    codec = FlowCodec(n_packets=N_PACKETS)
    prepare_augmentation(
        aug, device=torch.device("cuda"), class_names=NAMES, generator=seeded_generator(0, "cuda"), codec=codec
    )
    batch = codec.encode(class_table(8, seed=5)).to("cuda")
    plain = aug(batch, seeded_generator(3, "cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = aug(batch, seeded_generator(3, "cuda"))
    assert mixed.x.is_cuda and mixed.x.dtype == torch.float32
    assert torch.equal(mixed.x, plain.x)
    assert not check_valid(mixed.to("cpu"), codec)


# -- the commands on CUDA --------------------------------------------------------------------------------
@gpu
def test_tsda_sample_on_cuda_and_auto_picks_it(generators: dict[str, tuple], tmp_path: Path) -> None:
    ckpt = str(generators["cgan"][2])
    tables = {}
    for device in ("cuda", "auto"):
        out = tmp_path / f"{device}.parquet"
        main(
            [
                "sample",
                "--ckpt",
                ckpt,
                "--per_class",
                "10",
                "--seed",
                "1",
                "--device",
                device,
                "--out",
                str(out),
                "--no_progress",
            ]
        )
        tables[device] = read_parquet(out, max_packets=N_PACKETS)
    assert len(tables["cuda"]) == 30
    assert (tables["cuda"].sizes == tables["auto"].sizes).all()  # auto = cuda here: the same draws
    assert not check_valid(FlowCodec(n_packets=N_PACKETS).encode(tables["cuda"]), FlowCodec(n_packets=N_PACKETS))


@gpu
def test_tsda_evaluate_encodes_latents_on_cuda_like_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsda.commands import evaluate

    devices: list[str] = []
    encode = evaluate.encode_batch
    monkeypatch.setattr(evaluate, "encode_batch", lambda c, b, *a: (devices.append(c.device.type), encode(c, b, *a))[1])
    clf = fit_classifier(tmp_path, datamodule(), epochs=1)
    real = write_parquet(class_table(80, seed=3), tmp_path / "real.parquet")
    synthetic = write_parquet(class_table(30, seed=4), tmp_path / "syn.parquet")
    results = {}
    for device in ("cuda", "cpu"):
        main(
            [
                "evaluate",
                "--data.path",
                str(real),
                "--synthetic",
                str(synthetic),
                "--classifier",
                str(clf),
                "--out",
                str(tmp_path / device),
                "--tstr_seeds",
                "0",
                "--gru",
                "false",
                "--plots",
                "false",
                "--device",
                device,
                *REAL_OPTIONS,
            ]
        )
        results[device] = json.loads((tmp_path / device / "fidelity.json").read_text())["latent"]
    assert devices == ["cuda"] * 3 + ["cpu"] * 3  # real test, synthetic, real train latents
    assert results["cuda"]["frechet"] == pytest.approx(results["cpu"]["frechet"], rel=0.02, abs=1e-3)
    for key in ("precision", "recall", "coverage"):
        assert results["cuda"][key] == pytest.approx(results["cpu"][key], abs=0.1), key


@gpu
def test_tsda_augment_preview_and_enlarge_on_cuda(tmp_path: Path) -> None:
    main(["augment", "preview", "translation", "--out", str(tmp_path / "p.png"), "--device", "cuda", *TINY_DATA])
    assert (tmp_path / "p.png").stat().st_size > 1000
    out = tmp_path / "big.parquet"
    main(
        [
            "augment",
            "enlarge",
            "--augment",
            "translation",
            "--copies",
            "2",
            "--out",
            str(out),
            "--device",
            "cuda",
            *TINY_DATA,
        ]
    )
    import pyarrow.parquet as pq

    frame = pq.read_table(out, columns=["augmentation", "split"]).to_pandas()
    originals = (frame["augmentation"] == "original").sum()
    train = ((frame["augmentation"] == "original") & (frame["split"] == "train")).sum()
    assert len(frame) == originals + 2 * train
    assert set(frame["augmentation"]) - {"original"} == {repr(build_augmentation("translation"))}
    table = read_parquet(out, max_packets=20)
    assert not check_valid(FlowCodec().encode(table), FlowCodec())


# -- the ensemble executor on CUDA ------------------------------------------------------------------------
@gpu
def test_a_campaign_gives_the_same_results_through_both_executors_on_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/classifier/test_ensemble.py's campaign (stacked, class-weighted and a run that cannot stack),
    on CUDA: every `tsda fit` process and the `tsda ensemble` process train on the GPU."""
    from support.campaign import write_spec

    from tsda.campaign import CampaignSpec, run_campaign

    monkeypatch.setenv("WANDB_MODE", "disabled")
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
                "trainer.accelerator": "gpu",
                "trainer.enable_progress_bar": False,
                "latent_plot": False,
                "model.init_args.latent_points": 50,
                "model.init_args.backbone_kwargs": {"width": 8},
            },
        )
    )
    local = run_campaign(spec, tmp_path / "local", executor="local", workers=3)
    ensemble = run_campaign(spec, tmp_path / "ensemble", executor="ensemble", members_per_job=0)
    assert (local["status"] == "ok").all(), local["error"].tolist()
    assert (ensemble["status"] == "ok").all(), ensemble["error"].tolist()
    key = ["condition", "seed"]
    merged = local.merge(ensemble, on=key, suffixes=("_local", "_ensemble"))
    assert len(merged) == 6
    diff = (merged["test_weighted_f1_local"] - merged["test_weighted_f1_ensemble"]).abs()
    assert diff.max() < 0.05, merged[[*key, "test_weighted_f1_local", "test_weighted_f1_ensemble"]]
    executors = ensemble.set_index("condition")["metrics_json"].map(lambda m: json.loads(m).get("executor"))
    assert set(executors[["a", "sampled"]]) == {"ensemble"} and executors[["clipped"]].isna().all()
    log = "\n".join(p.read_text() for p in (tmp_path / "ensemble").rglob("*.log"))
    assert "member(s) on cuda" in log, log[-2000:]


# -- no host sync in the training step -----------------------------------------------------------------
@gpu
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16_autocast"])
def test_the_classifier_training_step_makes_no_host_sync(bf16: bool) -> None:
    """`training_step` (loss accumulated on the device), backward and the Adam step, on a
    batch already on the GPU, after warm-up: any synchronising call raises in "error" mode."""
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=3, class_names=NAMES, latent_points=0).cuda()
    optimizer = model.configure_optimizers()
    batch = FlowCodec(n_packets=N_PACKETS).encode(class_table(40)).to("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with autocast:
            loss = model.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert model._train_loss_count == 8 * len(batch)
    assert torch.isfinite(model._train_loss_sum)


# -- determinism on CUDA ------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("augment", [[], TRANSLATION], ids=["no_aug", "translation"])
def test_a_deterministic_fit_on_cuda_gives_the_same_weights_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, augment: list[str]
) -> None:
    from tsda.commands.fit import run_fit

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what Lightning sets for deterministic=True
    states, scores = [], []
    for i in range(2):
        run_dir = tmp_path / f"run{i}"
        run_fit(
            [
                *TINY_FIT,
                *augment,
                "--trainer.accelerator",
                "gpu",
                "--trainer.deterministic",
                "true",
                "--trainer.max_epochs",
                "2",
                "--seed_everything",
                "3",
                "--run_dir",
                str(run_dir),
            ]
        )
        states.append(read_checkpoint(run_dir / "checkpoints/last.ckpt")["state_dict"])
        scores.append(json.loads((run_dir / "metrics.json").read_text())["test_weighted_f1"])
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
    assert scores[0] == scores[1]


# -- everywhere: the --device options --------------------------------------------------------------------
def test_resolve_device_reads_auto_cpu_and_cuda() -> None:
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    for bad in ("gpu0", "mps", "cpu:1", "", "cuda:x"):
        with pytest.raises(TsdaError, match=r"--dev '.*': not a device; use auto, cpu, cuda or cuda:N"):
            resolve_device(bad, flag="--dev")
    if CUDA:
        assert resolve_device("cuda") == torch.device("cuda")
        with pytest.raises(TsdaError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(TsdaError, match="--device cuda: no CUDA device here"):
            resolve_device("cuda")


def _tsda_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The `tsda: error:` line of a command that must exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tsda: error: ") and "Traceback" not in err, err
    return err


def _device_commands(tmp_path: Path) -> dict[str, list[str]]:
    syn = write_parquet(class_table(5), tmp_path / "syn.parquet")
    return {
        "evaluate": ["evaluate", "--synthetic", str(syn), "--out", str(tmp_path / "e")],
        "preview": ["augment", "preview", "translation", "--out", str(tmp_path / "p.png"), *TINY_DATA],
        "enlarge": [
            "augment",
            "enlarge",
            "--augment",
            "translation",
            "--copies",
            "1",
            "--out",
            str(tmp_path / "x.parquet"),
            *TINY_DATA,
        ],
    }


@pytest.mark.parametrize("command", ["evaluate", "preview", "enlarge"])
def test_an_unknown_device_is_a_tsda_error_naming_device(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    err = _tsda_error([*_device_commands(tmp_path)[command], "--device", "gpu0"], capsys)
    assert "--device 'gpu0': not a device" in err
    assert not (tmp_path / "e").exists() and not (tmp_path / "x.parquet").exists()  # checked before any work


@pytest.mark.skipif(CUDA, reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("command", ["evaluate", "preview", "enlarge"])
def test_cuda_without_a_gpu_is_a_clear_tsda_error(tmp_path: Path, capsys: pytest.CaptureFixture, command: str) -> None:
    err = _tsda_error([*_device_commands(tmp_path)[command], "--device", "cuda"], capsys)
    assert "--device cuda: no CUDA device here" in err and "--device cpu" in err


def test_augment_preview_and_enlarge_run_with_device_cpu(tmp_path: Path) -> None:
    main(["augment", "preview", "wrap", "--out", str(tmp_path / "p.png"), "--device", "cpu", *TINY_DATA])
    assert (tmp_path / "p.png").stat().st_size > 1000
    outs = {}
    for device in ("cpu", "auto") if not CUDA else ("cpu",):
        outs[device] = tmp_path / f"{device}.parquet"
        main(
            [
                "augment",
                "enlarge",
                "--augment",
                "translation",
                "--copies",
                "1",
                "--out",
                str(outs[device]),
                "--device",
                device,
                *TINY_DATA,
            ]
        )
    if "auto" in outs:  # auto is the CPU here: the same file
        assert read_parquet(outs["cpu"]).sizes.tolist() == read_parquet(outs["auto"]).sizes.tolist()


def test_enlarge_through_the_device_wrapper_keeps_the_augmentations_name(tmp_path: Path) -> None:
    """`tsda augment enlarge --device cuda` wraps the augmentation (`OnDevice`: its own
    generator on the device, the copies back on the CPU); on the CPU here, the wrapper gives
    valid copies under the augmentation's own name in the `augmentation` column."""
    from tsda.augment.enlarge import enlarge
    from tsda.commands.augment import OnDevice

    table = class_table(10)
    codec = FlowCodec(n_packets=N_PACKETS)
    inner = build_augmentation("translation")
    wrapped = OnDevice(inner, torch.device("cpu"), seeded_generator(0))
    enlarged, extra = enlarge(table, codec, wrapped, copies=2, seed=0)
    assert len(enlarged) == 3 * len(table)
    assert set(extra["augmentation"]) == {"original", repr(inner)}
    assert not check_valid(codec.encode(enlarged), codec)


def test_evaluate_encodes_latents_on_the_device_given(tmp_path: Path) -> None:
    clf = fit_classifier(tmp_path, datamodule(), epochs=1)
    real = write_parquet(class_table(40, seed=3), tmp_path / "real.parquet")
    synthetic = write_parquet(class_table(15, seed=4), tmp_path / "syn.parquet")
    main(
        [
            "evaluate",
            "--data.path",
            str(real),
            "--synthetic",
            str(synthetic),
            "--classifier",
            str(clf),
            "--out",
            str(tmp_path / "fid"),
            "--tstr_seeds",
            "0",
            "--gru",
            "false",
            "--plots",
            "false",
            "--device",
            "cpu",
            "--max_flows",
            "60",
            *REAL_OPTIONS,
        ]
    )
    latent = json.loads((tmp_path / "fid/fidelity.json").read_text())["latent"]
    assert math.isfinite(latent["frechet"]) and 0.0 <= latent["coverage"] <= 1.0


def test_benchmarks_take_a_device(capsys: pytest.CaptureFixture) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sampling_throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    sampling_throughput.main(["--device", "cpu", "--batch-sizes", "8", "--only", "cgan", "--num-classes", "3"])
    assert "cgan" in capsys.readouterr().out
    with pytest.raises(TsdaError, match="--device 'gpu0'"):
        sampling_throughput.main(["--device", "gpu0"])


def test_gpu_report_prints_one_table_of_the_parts(tmp_path: Path) -> None:
    """The table gpu_check.sh prints, from the files its parts write (here made up)."""
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite name="pytest" tests="4" failures="1" errors="0" skipped="1" time="12.6">'
        '<testcase name="test_a"/><testcase name="test_b"><failure message="x"/></testcase>'
        '<testcase name="test_c"/><testcase name="test_d"><skipped/></testcase></testsuite></testsuites>'
    )
    (tmp_path / "tests.status").write_text("failed (exit 1)")
    run = {
        "gpu": None,
        "threads": 16,
        "n_train": 1000,
        "data": "synthetic",
        "batch_size": 512,
        "fit_wall_s_per_epoch": 0.5,
    }
    (tmp_path / "throughput_cpu.json").write_text(json.dumps({**run, "train_flows_per_s": 1000.0}))
    (tmp_path / "throughput_cuda_bf16.json").write_text(
        json.dumps({**run, "gpu": "H100", "train_flows_per_s": 30000.0})
    )
    (tmp_path / "throughput_cuda_fp32.status").write_text("timed out after 60 s")
    (tmp_path / "syncs.json").write_text(
        json.dumps(
            {
                "rows": {
                    "module step, fp32": {"per_step": 0.0, "sources": {}},
                    "Lightning step, bf16-mixed": {"per_step": 1.0, "sources": {"datamodule.py:110": 20}},
                }
            }
        )
    )
    (tmp_path / "campaign.json").write_text(
        json.dumps(
            {
                "device": "cuda",
                "ratio": {"ensemble": 2.5},
                "runs": 8,
                "epochs": 3,
                "workers": 4,
                "runs_per_hour": {"ensemble": 500.0, "process": 200.0},
                "max_abs_diff_weighted_f1": {"ensemble": 0.01},
            }
        )
    )
    (tmp_path / "sampling.json").write_text(
        json.dumps(
            {
                "device": "cuda",
                "num_classes": 53,
                "n_packets": 20,
                "rows": [
                    {"generator": "cgan", "setting": "one pass", "batch": 8192, "flows_per_s": 1e6, "note": ""},
                    {"generator": "cgan", "setting": "one pass", "batch": 1024, "flows_per_s": 5e5, "note": ""},
                ],
            }
        )
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_report.py"), "table", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "| check | result | detail |"
    body = "\n".join(lines)
    assert (
        "| gpu tests (`pytest -m gpu`) | 2 passed, 1 failed, 1 skipped | 13 s; failed: test_b; failed (exit 1) |"
        in body
    )
    assert "| classifier training, CUDA, bf16-mixed | 30,000 flows/s | 30.0x CPU; H100" in body
    assert "| classifier training, CUDA, fp32 | - | timed out after 60 s |" in body
    assert "| host syncs per step: Lightning step, bf16-mixed | 1.00 | datamodule.py:110 x20 |" in body
    assert "| ensemble vs process executor (cuda) | 2.50x runs/hour |" in body
    assert "| sampling: cgan one pass | 1,000,000 flows/s | cuda, batch 8192" in body and "batch 1024" not in body


@pytest.mark.skipif(CUDA, reason="the dry run is what a machine without CUDA gets")
def test_gpu_check_without_cuda_is_a_dry_run(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"}  # no nvidia-smi on PATH
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_check.sh")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device: dry run, nothing measured" in done.stdout
    assert "pytest -m gpu" in done.stdout and "sampling_throughput.py" in done.stdout
