"""Classifier nets (`encode -> z (B, 128)`, `head -> logits (B, K)`) and ClassifierModule."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from support.flows import random_table

from tsda.classifier.module import ClassifierModule
from tsda.classifier.nets import CNNResBlockClassifier, GRUClassifier, build_classifier
from tsda.data.batch import FlowBatch
from tsda.data.datamodule import FlowDataModule


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flows(b: int = 5, length: int = 20, seed: int = 0) -> torch.Tensor:
    """`(B, 3, L)` plausible encoded flows (sizes [0, 1], directions +-1, iat >= 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, length, generator=g)
    x[:, 1] = torch.where(x[:, 1] > 0.5, 1.0, -1.0)
    return x


def test_cnn_has_about_116k_parameters_for_20_classes() -> None:
    net = build_classifier("cnn_resblock", 20)
    assert isinstance(net, CNNResBlockClassifier)
    assert 110_000 <= n_params(net) <= 120_000


@pytest.mark.parametrize("backbone", ["cnn_resblock", "gru"])
@pytest.mark.parametrize("length", [20, 13, 32])
def test_encode_and_head_shapes(backbone: str, length: int) -> None:
    net = build_classifier(backbone, 7).eval()
    x = flows(length=length)
    z = net.encode(x)
    assert z.shape == (5, 128)
    logits = net.head(z)
    assert logits.shape == (5, 7)
    assert torch.allclose(net(x), logits)


def test_gradients_reach_the_input() -> None:
    """Generators are guided through `encode`: it must be differentiable in x."""
    net = build_classifier("cnn_resblock", 3).eval()
    x = flows().requires_grad_(True)
    net.encode(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_backbone_and_bad_classes_raise() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'transformerx'"):
        build_classifier("transformerx", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier("cnn_resblock", 1)
    with pytest.raises(ValueError, match="num_classes"):
        GRUClassifier(0)


def test_module_training_step_and_class_names() -> None:
    module = ClassifierModule(num_classes=3, class_names=["a", "b", "c"], backbone="gru")
    batch = FlowBatch(flows(b=6), torch.full((6,), 20), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert module.class_names == ["a", "b", "c"]
    assert module.encode(batch.x).shape == (6, 128)
    assert module(batch.x).shape == (6, 3)


def test_module_validates_arguments() -> None:
    with pytest.raises(ValueError, match="class_names"):
        ClassifierModule(num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="policy"):
        ClassifierModule(policy="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="augment_p"):
        ClassifierModule(augment_p=1.5)


def test_gru_latent_ignores_padding_length() -> None:
    """The same flow padded to 20 or 28 packets has the same GRU latent (packed sequences)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = GRUClassifier(5).eval()
    x = torch.zeros(2, 3, 20)
    x[:, 0, :7] = torch.rand(2, 7)
    x[:, 1, :7] = 1.0
    x[:, 2, 1:7] = torch.rand(2, 6)
    with torch.no_grad():
        z20 = net.encode(x)
        z28 = net.encode(F.pad(x, (0, 8)))
    torch.testing.assert_close(z20, z28)


def test_load_frozen_gives_an_eval_guide_without_gradients(tmp_path) -> None:
    import lightning

    model = ClassifierModule(num_classes=3, class_names=["a", "b", "c"])
    path = tmp_path / "clf.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    guide = ClassifierModule.load_frozen(str(path), num_classes=3)
    assert not guide.training
    assert not any(p.requires_grad for p in guide.parameters())
    assert guide.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="model.classifier_ckpt has 3 classes, the data 5"):
        ClassifierModule.load_frozen(str(path), num_classes=5)
    with pytest.raises(FileNotFoundError, match="model.classifier_ckpt not found"):
        ClassifierModule.load_frozen(str(tmp_path / "missing.ckpt"))


class StepLosses(L.Callback):
    """Each step's loss and batch size, and `train_loss` as callbacks see it at epoch end."""

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, int]] = []
        self.epochs: list[list[tuple[torch.Tensor, int]]] = []
        self.seen: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((outputs["loss"].detach(), len(batch)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # before the module's hook
        self.epochs.append(self.steps)
        self.steps = []
        self.seen.append(trainer.callback_metrics["train_loss"].clone())


def flow_weighted_mean(steps: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Lightning's `on_epoch` mean of a value logged every step with `batch_size=n`."""
    total, count = torch.tensor(0.0), torch.tensor(0)
    for loss, n in steps:
        total, count = total + loss * n, count + n
    return total / count


@pytest.mark.parametrize("max_steps", [-1, 10])
def test_train_loss_is_logged_once_per_epoch_as_the_flow_weighted_mean(tmp_path, monkeypatch, max_steps: int) -> None:
    """The lean step accumulates the loss on the device and logs it once per epoch: the same
    value, to the bit, as logging every step (batches of 16, 16, 16 and 12 flows); an epoch
    cut short by max_steps (10 = 2 epochs and 2 steps) still logs its part."""
    splits = [
        random_table(counts, max_packets=20, seed=s) for s, counts in enumerate([(30, 20, 10), (6, 6, 6), (6, 6, 6)])
    ]
    dm = FlowDataModule.from_tables(*splits, n_packets=20, batch_size=16, eval_batch_size=64)
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=3, backbone_kwargs={"width": 8}, latent_points=0)
    logged: list[str] = []
    log = model.log
    monkeypatch.setattr(model, "log", lambda name, *a, **k: (logged.append(name), log(name, *a, **k))[1])
    steps = StepLosses()
    trainer = L.Trainer(
        max_epochs=3,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        deterministic="warn",
        logger=CSVLogger(tmp_path, name="", version=""),
        callbacks=[steps],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)

    assert [len(e) for e in steps.epochs] == ([4, 4, 4] if max_steps < 0 else [4, 4, 2])
    expected = [flow_weighted_mean(e) for e in steps.epochs]
    assert logged.count("train_loss") == 3  # once per epoch, not once per step
    full = 3 if max_steps < 0 else 2  # epochs whose last batch logged before callbacks ran
    assert all(torch.equal(a, b) for a, b in zip(steps.seen[:full], expected[:full]))
    csv = pd.read_csv(tmp_path / "metrics.csv")
    rows = csv.dropna(subset=["train_loss"])
    assert rows["epoch"].tolist() == [0, 1, 2]
    assert rows["train_loss"].tolist() == [float(e) for e in expected]


def test_native_bincount_keeps_metric_values_and_the_deterministic_setting() -> None:
    """torchmetrics' deterministic-mode counting is replaced by torch.bincount inside the
    block: the same F1, and deterministic algorithms (with warn_only) back on after it."""
    from torchmetrics.classification import MulticlassF1Score

    from tsda.classifier.module import native_bincount

    g = torch.Generator().manual_seed(0)
    preds, target = torch.randint(0, 7, (500,), generator=g), torch.randint(0, 7, (500,), generator=g)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        slow, fast = MulticlassF1Score(7, average="weighted"), MulticlassF1Score(7, average="weighted")
        slow.update(preds, target)
        with native_bincount():
            assert not torch.are_deterministic_algorithms_enabled()
            fast.update(preds, target)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.equal(slow.compute(), fast.compute())
    finally:
        torch.use_deterministic_algorithms(False)
    with native_bincount():  # off stays off
        assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_compiled_training_forward_matches_eager_and_keeps_checkpoint_keys() -> None:
    torch.manual_seed(0)
    module = ClassifierModule(num_classes=3, class_names=["a", "b", "c"])
    x = flows(b=8)
    eager = module(x)
    keys = set(module.state_dict())
    module.compile_networks()
    compiled = module(x)  # grad enabled: the compiled graph
    assert set(module.state_dict()) == keys  # checkpoints load into uncompiled modules
    conv = module.net.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    compiled.sum().backward()
    assert all(p.grad is not None for p in module.net.parameters())
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"] is True
    from torch._dynamo.utils import counters

    compiled_frames = counters["frames"]["ok"]
    with torch.no_grad():  # evaluation stays eager: no graph for its other batch sizes
        module(flows(b=5))
    assert counters["frames"]["ok"] == compiled_frames
    module(flows(b=5))  # a new training shape is compiled
    assert counters["frames"]["ok"] > compiled_frames


def _conv1d_twin(net: CNNResBlockClassifier) -> torch.nn.Module:
    """The same backbone written with Conv1d/BatchNorm1d (what it was), holding `net`'s weights."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv1d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv1d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm1d(c_out),
            )
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm1d(c_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.shortcut(x))

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = net.latent_dim // 2
            self.features = nn.Sequential(
                nn.Conv1d(3, w, 3, padding=1, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True),
                Block(w, w), Block(w, 2 * w),
            )  # fmt: skip
            self.classifier = nn.Linear(2 * w, net.classifier.out_features)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x).mean(dim=2))

    twin = Twin()
    twin.load_state_dict({k: v.squeeze(2) if v.dim() == 4 else v for k, v in net.state_dict().items()})
    return twin


def test_cnn_convolutions_as_conv2d_train_bit_identically_to_conv1d() -> None:
    """The backbone's (1, k) Conv2d form gives the Conv1d form's fp32 results to the bit, through
    training steps (so runs recorded with the Conv1d form reproduce), and loads its checkpoints."""
    torch.manual_seed(0)
    net = CNNResBlockClassifier(7, width=16)
    twin = _conv1d_twin(net)
    x, y = flows(b=64), torch.randint(0, 7, (64,))
    opts = [torch.optim.Adam(m.parameters(), 1e-2) for m in (net, twin)]
    for _ in range(3):
        losses = []
        for model, opt in zip((net, twin), opts, strict=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss)
        assert torch.equal(losses[0], losses[1])
    old = twin.state_dict()  # a checkpoint of the Conv1d form: 3-D conv weights
    assert old["features.0.weight"].dim() == 3
    fresh = CNNResBlockClassifier(7, width=16)
    fresh.load_state_dict(old)
    net.eval(), fresh.eval()
    assert torch.equal(fresh(x), net(x))


def test_channels_last_cnn_computes_the_same_function() -> None:
    torch.manual_seed(0)
    net = CNNResBlockClassifier(7, width=16).eval()
    x = flows(b=32)
    before, keys = net(x), {k: v.shape for k, v in net.state_dict().items()}
    net.use_channels_last()
    assert {k: v.shape for k, v in net.state_dict().items()} == keys
    assert all(
        m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d)
    )
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)


def test_compile_is_refused_for_a_module_without_networks_to_compile() -> None:
    from tsda.commands.fit import compile_networks
    from tsda.errors import TsdaError

    with pytest.raises(TsdaError, match="--compile"):
        compile_networks(L.LightningModule())


def test_a_run_of_the_conv1d_form_resumes(tmp_path) -> None:
    """`--ckpt_path` of a run written when the CNN's convolutions were Conv1d: its weights and
    its Adam moments (3-D for the convolutions) load, and training goes on."""
    from support.tiny import datamodule
    from support.tiny import trainer as tiny_trainer

    torch.manual_seed(0)
    data = datamodule()
    module = ClassifierModule(num_classes=data.num_classes, class_names=data.class_names, backbone_kwargs={"width": 8})
    trainer = tiny_trainer(tmp_path, 1)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    old = torch.load(tmp_path / "last.ckpt", weights_only=False)
    old["state_dict"] = {k: v.squeeze(2) if v.dim() == 4 else v for k, v in old["state_dict"].items()}
    for values in old["optimizer_states"][0]["state"].values():
        for key, value in values.items():
            if value.dim() == 4:
                values[key] = value.squeeze(2)
    torch.save(old, tmp_path / "conv1d.ckpt")
    resumed = ClassifierModule(num_classes=data.num_classes, class_names=data.class_names, backbone_kwargs={"width": 8})
    again = tiny_trainer(tmp_path, 2)
    again.fit(resumed, datamodule=data, ckpt_path=tmp_path / "conv1d.ckpt")
    assert again.current_epoch == 2
    moments = again.optimizers[0].state[resumed.net.features[0].weight]["exp_avg"]
    assert moments.shape == resumed.net.features[0].weight.shape
