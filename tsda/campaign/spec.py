"""A campaign's spec and its runs: `CampaignSpec` (a base config, conditions, seeds),
`RunJob` (one (condition, seed) `tsda fit` run) and `plan` (the spec's jobs, seed-major)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPEC_KEYS = (
    "name",
    "description",
    "base",
    "conditions",
    "seeds",
    "reference",
    "control",
    "overrides",
    "resources",
    "wandb_project",
)
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def override_args(value: Sequence[str] | dict[str, Any] | None, where: str) -> list[str]:
    """CLI tokens of an override set: a list of tokens as they are, or `{key: value}` as
    `--key value` (lists and dicts as JSON, booleans as true/false, None as null)."""
    if value is None:
        return []
    if isinstance(value, dict):
        tokens = []
        for key, v in value.items():
            tokens.append(key if str(key).startswith("-") else f"--{key}")
            if isinstance(v, bool):
                tokens.append("true" if v else "false")
            elif v is None:
                tokens.append("null")
            elif isinstance(v, (list, dict)):
                tokens.append(json.dumps(v))
            else:
                tokens.append(str(v))
        return tokens
    if isinstance(value, (list, tuple)) and all(isinstance(t, (str, int, float)) for t in value):
        return [str(t) for t in value]
    raise ValueError(f"{where} must be a list of CLI tokens or a mapping of overrides, got {value!r}")


def parse_seeds(value: Any, where: str = "seeds") -> list[int]:
    """Seeds from a list of ints, an int `n` (= 0..n-1), or a string `"0,3,7"` / `"0-29"`."""
    if isinstance(value, bool):  # spec errors are ValueErrors (the CLI and tests rely on it)
        raise ValueError(f"{where} must be a list of ints, a count or 'a-b', got {value!r}")  # noqa: TRY004
    if isinstance(value, int):
        seeds = list(range(value))
    elif isinstance(value, str):
        seeds = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            if m:
                seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise ValueError(f"{where}: cannot read {part!r} (use '0,3,7' or '0-29')")
    elif isinstance(value, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        seeds = list(value)
    else:
        raise ValueError(f"{where} must be a list of ints, a count or 'a-b', got {value!r}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"{where} must be non-empty, distinct and >= 0, got {seeds}")
    return seeds


@dataclass
class CampaignSpec:
    """A study: a base config, named conditions (override sets) and seeds.

    Args:
        name: campaign name (W&B group); default: the spec's folder name.
        base: `tsda fit` config file (relative to the spec file).
        conditions: `{name: overrides}`, each a list of CLI tokens or a `{key: value}`
            mapping (`{"data.sampler": "none"}` -> `--data.sampler none`); paths inside
            overrides are relative to the directory the campaign is launched from.
        seeds: list of ints, a count n (0..n-1) or `"a-b"`.
        reference: the condition deltas are measured against (default: the first).
        control: optional condition every other one is compared with per seed (paired
            differences, t-tests, Holm) in the report, e.g. the same-steps control.
        overrides: overrides for every run, before the condition's.
        resources: per-run Ray request `{num_cpus, num_gpus}`.
        wandb_project: W&B project of the runs and the report.
        description: free text.
    """

    base: Path
    conditions: dict[str, list[str]]
    seeds: list[int]
    name: str = "campaign"
    reference: str | None = None
    control: str | None = None
    overrides: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=lambda: {"num_cpus": 1.0, "num_gpus": 0.0})
    wandb_project: str = "tsda"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.conditions:
            raise ValueError("campaign conditions must name at least one condition")
        for name in self.conditions:
            if not _NAME.match(name):
                raise ValueError(f"campaign conditions: name {name!r} may only use letters, digits and _.+-")
        if self.reference is None:
            self.reference = next(iter(self.conditions))
        if self.reference not in self.conditions:
            raise ValueError(f"campaign reference {self.reference!r} is not one of the conditions")
        if self.control is not None and self.control not in self.conditions:
            raise ValueError(f"campaign control {self.control!r} is not one of the conditions")
        if not _NAME.match(self.name):
            raise ValueError(f"campaign name {self.name!r} may only use letters, digits and _.+-")
        unknown = set(self.resources) - {"num_cpus", "num_gpus"}
        if unknown:
            raise ValueError(f"campaign resources: unknown key(s) {sorted(unknown)} (num_cpus, num_gpus)")
        if any(float(v) < 0 for v in self.resources.values()):
            raise ValueError(f"campaign resources must be >= 0, got {self.resources}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], root: Path = Path(".")) -> CampaignSpec:
        """Validate a parsed spec; `root` is the folder relative paths (`base`) start from."""
        if not isinstance(raw, dict):
            raise ValueError(f"a campaign spec must be a mapping, got {type(raw).__name__}")  # noqa: TRY004 - spec errors are ValueErrors
        unknown = [k for k in raw if k not in SPEC_KEYS]
        if unknown:
            raise ValueError(f"campaign spec: unknown key(s) {unknown}; known: {list(SPEC_KEYS)}")
        for key in ("base", "conditions", "seeds"):
            if key not in raw:
                raise ValueError(f"campaign spec: missing key {key!r}")
        base = (root / str(raw["base"])).resolve()
        if not base.is_file():
            raise ValueError(f"campaign base: no config file at {base}")
        conditions = raw["conditions"]
        if not isinstance(conditions, dict):
            raise ValueError("campaign conditions must be a mapping {name: overrides}")  # noqa: TRY004 - as above
        return cls(
            base=base,
            conditions={str(k): override_args(v, f"campaign conditions.{k}") for k, v in conditions.items()},
            seeds=parse_seeds(raw["seeds"], "campaign seeds"),
            name=str(raw.get("name") or root.resolve().name),
            reference=raw.get("reference"),
            control=raw.get("control"),
            overrides=override_args(raw.get("overrides"), "campaign overrides"),
            resources={"num_cpus": 1.0, "num_gpus": 0.0, **(raw.get("resources") or {})},
            wandb_project=str(raw.get("wandb_project", "tsda")),
            description=str(raw.get("description", "")),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignSpec:
        """Read and validate a spec file; `base` is relative to the file's folder."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"campaign spec: no file at {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()), path.parent)

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON-ready values (`base` as a string), as written to `campaign.json`."""
        return {**asdict(self), "base": str(self.base)}


# -- jobs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunJob:
    """One (condition, seed) run: the `tsda fit` arguments and where it runs."""

    condition: str
    seed: int
    run_dir: str
    args: tuple[str, ...]
    cwd: str

    @property
    def key(self) -> tuple[str, int]:
        """`(condition, seed)`: the run's identity in the results table."""
        return self.condition, self.seed


def plan(
    spec: CampaignSpec,
    out: Path,
    extra: Sequence[str] = (),
    conditions: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    cwd: Path | None = None,
) -> list[RunJob]:
    """The campaign's runs, seed-major (every condition of seed 0 first: complete blocks early)."""
    chosen = list(conditions) if conditions else list(spec.conditions)
    for name in chosen:
        if name not in spec.conditions:
            raise ValueError(f"--conditions: unknown condition {name!r}; known: {list(spec.conditions)}")
    out, cwd = out.resolve(), (cwd or Path.cwd()).resolve()
    jobs = []
    for seed in seeds if seeds is not None else spec.seeds:
        for name in chosen:
            run_dir = out / "runs" / name / f"seed{seed}"
            args = (
                "-c",
                str(spec.base),
                *spec.overrides,
                *spec.conditions[name],
                *extra,
                "--run_dir",
                str(run_dir),
                "--seed_everything",
                str(seed),
                "--wandb.project",
                spec.wandb_project,
                "--wandb.group",
                spec.name,
                "--wandb.name",
                f"{name}-seed{seed}",
                "--wandb.tags",
                f"[{name},seed{seed}]",
            )
            jobs.append(RunJob(name, int(seed), str(run_dir), args, str(cwd)))
    return jobs


def validate_conditions(jobs: Sequence[RunJob], check: Callable[[list[str]], None]) -> None:
    """Parse every job's `tsda fit` arguments with `check` (config files, keys, types; the
    command passes `check_fit_args`) without running anything, so a misspelled override
    fails before the first run rather than when its run starts; relative paths are read
    from each job's `cwd`.

    Raises:
        TsdaError: naming the condition and what `check` refused (its `ValueError`).
    """
    from tsda.errors import TsdaError

    for job in jobs:
        here = Path.cwd()
        try:
            os.chdir(job.cwd)
            check(list(job.args))
        except ValueError as exc:
            raise TsdaError(f"campaign condition {job.condition!r}: {exc}") from None
        finally:
            os.chdir(here)
