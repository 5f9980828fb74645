"""Classifier nets (`encode -> z (B, 128)`, `head -> logits (B, K)`) and ClassifierModule."""

from __future__ import annotations

import pytest
import torch

from tsda.data.batch import FlowBatch
from tsda.lit.classifier import ClassifierModule
from tsda.nets.classifier import CNNResBlockClassifier, GRUClassifier, build_classifier


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
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)
    guide = ClassifierModule.load_frozen(str(path), num_classes=3)
    assert not guide.training
    assert not any(p.requires_grad for p in guide.parameters())
    assert guide.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="model.classifier_ckpt has 3 classes, the data 5"):
        ClassifierModule.load_frozen(str(path), num_classes=5)
    with pytest.raises(FileNotFoundError, match="model.classifier_ckpt not found"):
        ClassifierModule.load_frozen(str(tmp_path / "missing.ckpt"))
