"""Resume: `tsda fit --ckpt_path RUN/checkpoints/last.ckpt` continues a run exactly.

For the classifier (with an augmentation, so the augmentation generator's state matters),
the cGAN and the diffusion model: 1 epoch, then resume to 2, against 2 epochs straight:
the same metrics and the same weights on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.tiny import class_table

from tsda.data.sources import write_parquet

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = [
    "--data.min_packets",
    "3",
    "--data.min_class_size",
    "5",
    "--data.n_packets",
    "12",
    "--data.batch_size",
    "32",
    "--trainer.enable_progress_bar",
    "false",
]
MODULES = {
    "classifier": [
        "-c",
        "configs/experiment/synthetic_baseline.yaml",
        "--model.init_args.backbone_kwargs",
        "{width: 8}",
        "--model.init_args.latent_points",
        "0",
        "--latent_plot",
        "false",
        "--model.init_args.augmentation",
        "configs/augment/translation.yaml",
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
        "--trainer.callbacks",
        "[]",
    ],
    "diffusion": [
        "-c",
        "configs/experiment/fgnet_diffusion.yaml",
        "--model.init_args.n_packets",
        "12",
        "--model.init_args.block_out_channels",
        "[8, 16]",
    ],
}


def _fit(args: list[str], run_dir: Path, epochs: int, *extra: str) -> dict:
    from tsda.commands.fit import run_fit

    run_fit([*args, "--trainer.max_epochs", str(epochs), "--run_dir", str(run_dir), *extra])
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("module", list(MODULES))
def test_resume_from_last_matches_an_uninterrupted_run(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    data = write_parquet(class_table(40), tmp_path / "flows.parquet")
    args = [*MODULES[module], "--data.path", str(data), *TINY_DATA]
    _fit(args, tmp_path / "resumed", 1)
    last = tmp_path / "resumed/checkpoints/last.ckpt"
    assert last.is_file()
    if module == "classifier":
        assert (tmp_path / "resumed/checkpoints/best.ckpt").is_file()
    resumed = _fit(args, tmp_path / "resumed", 2, "--ckpt_path", str(last))
    straight = _fit(args, tmp_path / "straight", 2)
    assert resumed["epochs"] == straight["epochs"] == 2
    keys = [k for k in straight if k.startswith("test_") and isinstance(straight[k], float)]
    assert {k: resumed[k] for k in keys} == {k: straight[k] for k in keys}
    a = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"]
    for name, tensor in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
