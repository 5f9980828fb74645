"""The shipped experiment configs parse, and their data blocks come from `configs/data`.

jsonargparse takes a nested key's value as a path to a YAML file of that block (`data:
../data/fgnet_d1.yaml`, relative to the config file) but as the whole block: a config cannot
take a file and change one of its keys. So a data block is one file of `configs/data`, named
by what it holds, and an experiment either names it or (when a test reads the block as a dict)
spells out the same effective options. The hardware profiles of `configs/trainer` are overlays
(`--trainer configs/trainer/gpu.yaml`), merged key by key into the experiment's own block.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from tsda.cli import main
from tsda.commands.fit import check_fit_args
from tsda.data.datamodule import FlowDataModule

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "configs/experiment").glob("*.yaml"))
DATA = sorted((REPO / "configs/data").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def is_overlay(path: Path) -> bool:
    """An overlay (`fgnet_transformer_10pct.yaml`) changes a few keys of the experiment its
    name extends and names no model of its own."""
    return "class_path" not in (load(path).get("model") or {})


def base_of(overlay: Path) -> Path:
    return overlay.with_name(overlay.stem.rsplit("_", 1)[0] + ".yaml")


def effective(block: dict[str, Any]) -> dict[str, Any]:
    """A data block as the datamodule receives it: every argument it leaves out at its default."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(FlowDataModule.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return {**defaults, **block}


def data_block(experiment: Path) -> tuple[dict[str, Any], Path | None]:
    """An experiment's data block and the `configs/data` file it names (None: written out)."""
    value = load(experiment)["data"]
    if isinstance(value, str):
        path = (experiment.parent / value).resolve()
        return load(path), path
    return value, None


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_config_parses(experiment: Path) -> None:
    """What `tsda fit -c` (and a campaign's check before its first run) parses, data not read."""
    files = [base_of(experiment), experiment] if is_overlay(experiment) else [experiment]
    check_fit_args([arg for f in files for arg in ("-c", str(f))])


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if not is_overlay(e)], ids=lambda p: p.stem)
def test_data_blocks_come_from_configs_data(experiment: Path) -> None:
    block, named = data_block(experiment)
    if named is not None:
        assert named.parent == REPO / "configs/data" and named.is_file()
    shared = [effective(load(f)) for f in DATA]
    assert effective(block) in shared, f"{experiment.name}: data block matches no file of configs/data"


def test_the_d1_block_is_written_once_per_protocol() -> None:
    """Most experiments name a data file instead of repeating the block."""
    named = [e for e in EXPERIMENTS if not is_overlay(e) and data_block(e)[1] is not None]
    assert len(named) >= 9
    assert len({tuple(sorted(effective(load(f)).items())) for f in DATA}) == len(DATA)  # no two files alike


@pytest.mark.parametrize("path", DATA, ids=lambda p: p.stem)
def test_data_files_are_datamodule_arguments(path: Path) -> None:
    """Every key of a data file is a `FlowDataModule` argument (nothing is read on construction)."""
    FlowDataModule(**load(path))


@pytest.mark.parametrize(("profile", "accelerator"), [("cpu", "cpu"), ("gpu", "gpu")])
def test_trainer_profiles_overlay_an_experiment(
    profile: str, accelerator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--trainer configs/trainer/X.yaml` sets the hardware and keeps the experiment's own
    trainer options (max_epochs, callbacks)."""
    experiment = REPO / "configs/experiment/fgnet_cgan.yaml"
    with pytest.raises(SystemExit) as done:
        main(
            ["fit", "-c", str(experiment), "--trainer", str(REPO / f"configs/trainer/{profile}.yaml"), "--print_config"]
        )
    assert done.value.code in (0, None)
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert trainer["accelerator"] == accelerator and trainer["devices"] == 1
    assert trainer["max_epochs"] == load(experiment)["trainer"]["max_epochs"]
    assert [c["class_path"] for c in trainer["callbacks"]] == ["tsda.callbacks.FidelityCallback"]
    if profile == "gpu":
        assert trainer["precision"] == "bf16-mixed"
