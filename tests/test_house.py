"""The house rules of docs/architecture.md, read from the code: which room imports what, module sizes,
and every command answering `--help`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tsda"
#: leaf modules any room may use (they import nothing from tsda but each other)
LEAVES = {"tsda.errors", "tsda.runs", "tsda.seeds", "tsda.figures"}
MAX_LINES = 420


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions (absolute names)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else name


def family(name: str) -> str | None:
    """The generator family a module belongs to (`gan` for `tsda.generators.gan.module`), else None."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[1] == "generators" and (PACKAGE / "generators" / parts[2]).is_dir():
        return parts[2]
    return None


#: the modules of plain tensors and nn.Modules in every family: no Lightning, no LightningModule
PURE = ("nets", "sampling", "losses", "tokens")
LIGHTNING = ("lightning", "pytorch_lightning", "torchmetrics")
MODEL_ROOMS = ("tsda.lit", "tsda.classifier", "tsda.generators", "tsda.joint")


def test_the_rules_see_every_room() -> None:
    rooms = {room(n) for n in MODULES}
    assert {"data", "augment", "lit", "classifier", "generators", "joint", "metrics", "campaign", "commands"} <= rooms
    assert {family(n) for n in MODULES} >= {"gan", "diffusion", "transformer"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_import_rules(name: str) -> None:
    used = imports(MODULES[name])
    own = {u for u in used if u == "tsda" or u.startswith("tsda.")}
    lightning = {u for u in used if u.split(".")[0] in LIGHTNING}
    here = room(name)
    if here != "commands":
        assert not {u for u in own if u.startswith("tsda.commands")}, f"{name}: only commands import commands"
        assert "tsda.cli" not in own or name == "tsda.__main__", f"{name}: nothing imports the dispatcher"
    if here in ("data", "augment", "metrics"):
        assert not {u for u in own if u.startswith(MODEL_ROOMS)}, f"{name} imports a model room"
        if name != "tsda.data.datamodule":
            assert not lightning, f"{name} imports {lightning}"
    allowed = {
        "data": ("tsda.data",),
        "augment": ("tsda.augment", "tsda.data"),
        "metrics": ("tsda.metrics", "tsda.data"),
        "lit": ("tsda.lit", "tsda.data"),
    }.get(here)
    if name.rpartition(".")[2] in PURE and here in ("classifier", "generators", "joint"):
        # a family's nets and pure functions: tensors in, tensors out, never a LightningModule
        allowed = ("tsda.data", "tsda.classifier.nets", name.rpartition(".")[0])
        assert not lightning, f"{name} ({name.rpartition('.')[2]}) imports {lightning}"
    if allowed is not None:
        stray = {u for u in own - LEAVES if not u.startswith(allowed)}
        assert not stray, f"{name} ({here}) may import only {allowed} and {sorted(LEAVES)}, imports {stray}"
    if here in ("classifier", "generators"):
        # the arrows: joint over the families, each family over the generators' shared base; the
        # classifier sees the base only (to load a generator augmentation's checkpoint)
        assert not {u for u in own if u.startswith("tsda.joint")}, f"{name} imports tsda.joint"
        others = {family(u) for u in own} - {None, family(name)}
        assert not others, f"{name} imports the generator families {others}"
    if name in LEAVES:
        assert own <= LEAVES, f"leaf module {name} imports {own - LEAVES}"
    if here == "campaign":
        assert "wandb" not in used, f"{name}: W&B goes through tsda.logging"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (split it by concept)"


def test_the_checker_catches_a_wrong_way_arrow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tsda.classifier.module import ClassifierModule\n")
    assert "tsda.classifier.module" in imports(bad)
    assert family("tsda.generators.diffusion.sampling") == "diffusion" and family("tsda.generators.guide") is None


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "--help"],
        ["test", "--help"],
        ["data", "describe", "--help"],
        ["data", "import", "--help"],
        ["data", "export", "--help"],
        ["augment", "--help"],
        ["augment", "preview", "--help"],
        ["augment", "enlarge", "--help"],
        ["augment", "search", "--help"],
        ["campaign", "--help"],
        ["campaign", "run", "--help"],
        ["campaign", "report", "--help"],
        ["ensemble", "--help"],
        ["sample", "--help"],
        ["evaluate", "--help"],
    ],
)
def test_every_command_answers_help(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    from tsda.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), argv
    out = capsys.readouterr().out
    assert "tsda" in out and argv[0] in out and len(out.splitlines()) > 3, argv


def test_the_tests_mirror_the_rooms() -> None:
    """Every folder of tests/ is a room (or family) of the package, apart from the shared
    builders, the fixture files and the GPU checks; no test module waits at the top level
    but the whole-project ones."""
    tests = Path(__file__).resolve().parent
    apart = {"support", "fixtures", "gpu", "__pycache__"}
    for folder in sorted(p for p in tests.rglob("*") if p.is_dir() and not apart & set(p.relative_to(tests).parts)):
        assert (PACKAGE / folder.relative_to(tests)).is_dir(), (
            f"tests/{folder.relative_to(tests)} mirrors no room of tsda"
        )
    top = {p.name for p in tests.glob("test_*.py")}
    assert top == {"test_house.py", "test_notebook.py", "test_extending.py"}, top
