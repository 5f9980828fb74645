"""The search space of `tsda augment search`: which ops a searched TrivialAugment may draw,
each one's weight and magnitude range, the rounds `n` and the levels (a YAML file,
`configs/search/policy_space.yaml`), and how an Optuna trial picks one policy from it.

    ops: all            # op names, families or all (`tsda.augment.policy.resolve_ops`)
    n: [1, 2]           # rounds per flow a trial may pick
    weight: [0, 1]      # bounds of each op's weight
    magnitude: [0, 1]   # bounds of each op's magnitude range [lo, hi]
    levels: 5           # magnitude levels spread over each op's range

A trial draws per op a weight and two magnitudes in the bounds (sorted: the op's range),
and `n`; the policy is `TrivialAugment(ops, weights, ranges, n, levels)`, one YAML that
`tsda fit --model.init_args.augmentation` takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsda.augment.catalog import HANDCRAFTED, class_path
from tsda.augment.policy import TrivialAugment, resolve_ops
from tsda.errors import TsdaError

if TYPE_CHECKING:
    import optuna

SPACE_KEYS = ("ops", "n", "weight", "magnitude", "levels")
#: decimals kept of every drawn weight and magnitude (what the policy YAML holds is what ran)
DECIMALS = 4


def _bounds(where: str, value: Any, positive_top: bool = False) -> tuple[float, float]:
    """`[lo, hi]` with `0 <= lo <= hi <= 1` (and `hi > 0` with `positive_top`), else TsdaError."""
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if ok:
        lo, hi = float(value[0]), float(value[1])
        ok = 0.0 <= lo <= hi <= 1.0 and (hi > 0 or not positive_top)
    if not ok:
        extra = " and hi > 0 (weights may not all be 0)" if positive_top else ""
        raise TsdaError(f"{where} must be [lo, hi] with 0 <= lo <= hi <= 1{extra}, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class SearchSpace:
    """A validated space (see the module docstring); `ops` as snake_case op names."""

    ops: list[str] = field(default_factory=lambda: list(HANDCRAFTED))
    n: list[int] = field(default_factory=lambda: [1, 2])
    weight: tuple[float, float] = (0.0, 1.0)
    magnitude: tuple[float, float] = (0.0, 1.0)
    levels: int = 5

    @classmethod
    def from_dict(cls, raw: Any, where: str = "--space") -> SearchSpace:
        """Validate a parsed space; every error names `where` and the key."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise TsdaError(f"{where} must be a mapping of {', '.join(SPACE_KEYS)}, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in SPACE_KEYS]
        if unknown:
            raise TsdaError(f"{where}: unknown key(s) {unknown}; known: {list(SPACE_KEYS)}")
        names = {c: name for name, c in HANDCRAFTED.items()}
        try:
            ops = [names[c] for c in resolve_ops(f"{where}: ops", raw.get("ops", "all"))]
        except ValueError as exc:
            raise TsdaError(str(exc)) from None
        n = raw.get("n", [1, 2])
        n = [n] if isinstance(n, int) and not isinstance(n, bool) else n
        if not (
            isinstance(n, list) and n and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in n)
        ):
            raise TsdaError(f"{where}: n must be a non-empty list of rounds >= 1, got {raw.get('n')!r}")
        levels = raw.get("levels", 5)
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise TsdaError(f"{where}: levels must be an integer >= 2, got {levels!r}")
        return cls(
            ops=ops,
            n=sorted(set(n)),
            weight=_bounds(f"{where}: weight", raw.get("weight", [0, 1]), True),
            magnitude=_bounds(f"{where}: magnitude", raw.get("magnitude", [0, 1])),
            levels=levels,
        )

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> SearchSpace:
        """The space of the YAML file `path` (None: the defaults)."""
        if path is None:
            return cls()
        import yaml

        where = f"--space {path}"
        if not Path(path).is_file():
            raise TsdaError(f"{where}: no such file")
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise TsdaError(f"{where}: not YAML ({exc})") from None
        return cls.from_dict(raw, where)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The `TrivialAugment` arguments trial `trial` picks: per op `<op>.weight` and
        `<op>.m_a`, `<op>.m_b` (sorted into its range), then `n`; rounded to `DECIMALS`."""
        weights, ranges = [], []
        for op in self.ops:
            weights.append(round(trial.suggest_float(f"{op}.weight", *self.weight), DECIMALS))
            pair = [round(trial.suggest_float(f"{op}.m_{k}", *self.magnitude), DECIMALS) for k in "ab"]
            ranges.append(sorted(pair))
        n = trial.suggest_categorical("n", self.n) if len(self.n) > 1 else self.n[0]
        if sum(weights) <= 0:  # every weight drawn (or rounded) to 0: draw uniformly instead
            weights = [1.0] * len(weights)
        return {
            "ops": list(self.ops),
            "magnitude": "uniform",
            "levels": self.levels,
            "weights": weights,
            "ranges": ranges,
            "n": int(n),
        }

    def example(self) -> dict[str, Any]:
        """The arguments of the space's middle policy (every op, mid weights and ranges)."""
        w = (self.weight[0] + self.weight[1]) / 2
        return {
            "ops": list(self.ops),
            "magnitude": "uniform",
            "levels": self.levels,
            "weights": [w] * len(self.ops),
            "ranges": [list(self.magnitude)] * len(self.ops),
            "n": self.n[0],
        }


def policy_spec(init_args: dict[str, Any]) -> dict[str, Any]:
    """The `class_path`/`init_args` spec of a searched policy, checked by building it
    (`ValueError` naming the bad `TrivialAugment` parameter)."""
    TrivialAugment(**init_args)
    return {"class_path": class_path(TrivialAugment), "init_args": init_args}


def policy_yaml(spec: dict[str, Any], header: str = "") -> str:
    """`spec` as YAML (ranges in flow style), after `header` as `#` comments."""
    import yaml

    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comments + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100)


def summary(params: dict[str, Any], top: int = 3) -> str:
    """E.g. `n=2; wrap 0.93 [0.21, 0.7], flip 0.88 [0, 0.4], ...`: the heaviest `top` ops."""
    args = params
    pairs = sorted(zip(args["weights"], args["ops"], args["ranges"]), key=lambda t: -t[0])[:top]
    ops = ", ".join(f"{op} {w:.2f} [{lo:g}, {hi:g}]" for w, op, (lo, hi) in pairs)
    more = f", +{len(args['ops']) - top} more" if len(args["ops"]) > top else ""
    return f"n={args['n']}; {ops}{more}"
