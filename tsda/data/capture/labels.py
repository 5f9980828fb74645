"""Labels of imported flows: from the capture's folder or file name, from a rules file
(server address, port, SNI or 5-tuple patterns), or none.

`--label folder`: the app is the name of the capture's parent folder (per-app captures, as
MIRAGE's are organised). `--label file:REGEX`: the first group (else the whole match) of
REGEX searched in the capture's file name. `--label rules.csv`: the first matching row's
`app`; columns (any subset besides `app`, an empty cell matches anything): `client_ip`,
`server_ip` (an address or a network, e.g. `157.240.0.0/16`), `client_port`,
`server_port`, `protocol` (`tcp`/`udp`), `sni` (a regular expression matched in full
against the server name of the client's TLS ClientHello). `--label none`: every flow
`unknown`. nDPI labels are not offered: tsda's engine is its own numpy decoder (see
`tsda.data.capture.decode`), which has no DPI.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsda.data.capture.framing import CaptureError

RULE_COLUMNS = ("app", "client_ip", "server_ip", "client_port", "server_port", "protocol", "sni")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class FlowEnds:
    """The ends of F flows: addresses as IPv6 integers split in `(F, 2)` uint64 words (IPv4
    as IPv4-mapped), ports and protocol numbers `(F,)`, server names `(F,)` object."""

    client: np.ndarray
    server: np.ndarray
    client_port: np.ndarray
    server_port: np.ndarray
    protocol: np.ndarray
    sni: np.ndarray


def _words(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[np.ndarray, np.ndarray]:
    """`(network (2,), mask (2,))` uint64 words of `net` in IPv6 (IPv4-mapped) space."""
    if isinstance(net, ipaddress.IPv4Network):
        net = ipaddress.IPv6Network(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
    a, m = int(net.network_address), int(net.netmask)
    split = lambda v: np.array([v >> 64, v & (2**64 - 1)], dtype=np.uint64)  # noqa: E731
    return split(a), split(m)


@dataclass(frozen=True)
class _Rule:
    app: str
    nets: dict[str, tuple[np.ndarray, np.ndarray]]
    ports: dict[str, int]
    protocol: int | None
    sni: re.Pattern[str] | None

    def match(self, ends: FlowEnds) -> np.ndarray:
        ok = np.ones(len(ends.protocol), dtype=bool)
        for col, (net, mask) in self.nets.items():
            addr = getattr(ends, col.removesuffix("_ip"))
            ok &= np.all((addr & mask) == net, axis=1)
        for col, port in self.ports.items():
            ok &= getattr(ends, col) == port
        if self.protocol is not None:
            ok &= ends.protocol == self.protocol
        if self.sni is not None:
            pattern = self.sni
            ok &= np.array([s is not None and pattern.fullmatch(s) is not None for s in ends.sni], dtype=bool)
        return ok


def _cell(path: Path, row: int, col: str, value: str) -> tuple[np.ndarray, np.ndarray] | int | re.Pattern[str]:
    """A parsed rules-file cell; errors name file, row and column."""
    try:
        if col.endswith("_ip"):
            return _words(ipaddress.ip_network(value, strict=False))
        if col.endswith("_port"):
            port = int(value)
            if not 0 <= port <= 65535:
                raise ValueError("not a port")  # noqa: TRY301 - reported by the except below
            return port
        if col == "protocol":
            return {"tcp": 6, "udp": 17}[value.lower()]
        return re.compile(value)
    except (ValueError, KeyError, re.error) as exc:
        raise CaptureError(
            f"--label {path}: row {row}, column {col!r}: {value!r} is not a valid {col.replace('_', ' ')} ({exc})"
        ) from None


def read_rules(path: Path) -> list[_Rule]:
    """The rules of a CSV file, in order (first match wins)."""
    if not path.is_file():
        raise CaptureError(f"--label {path}: no such rules file")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        unknown = [c for c in columns if c not in RULE_COLUMNS]
        if unknown or "app" not in columns:
            raise CaptureError(
                f"--label {path}: "
                + (f"unknown column {unknown[0]!r}" if unknown else "no 'app' column")
                + f" (columns: {', '.join(RULE_COLUMNS)})"
            )
        rules = []
        for row, raw in enumerate(reader, start=1):
            cells = {k.strip(): (v or "").strip() for k, v in raw.items()}
            if not cells["app"]:
                raise CaptureError(f"--label {path}: row {row}, column 'app' is empty")
            parsed = {c: _cell(path, row, c, v) for c, v in cells.items() if c != "app" and v}
            protocol, sni = parsed.get("protocol"), parsed.get("sni")
            rules.append(
                _Rule(
                    app=cells["app"],
                    nets={c: v for c, v in parsed.items() if c.endswith("_ip") and isinstance(v, tuple)},
                    ports={c: v for c, v in parsed.items() if c.endswith("_port") and isinstance(v, int)},
                    protocol=protocol if isinstance(protocol, int) else None,
                    sni=sni if isinstance(sni, re.Pattern) else None,
                )
            )
    if not rules:
        raise CaptureError(f"--label {path}: holds no rule")
    return rules


class Labeller:
    """`--label` turned into labels: `for_flows(file, ends) -> (F,) object` (None = drop)."""

    def __init__(self, spec: str, unmatched: str = "drop") -> None:
        if unmatched not in ("drop", "unknown"):
            raise CaptureError(f"--unmatched must be drop or unknown, got {unmatched!r}")
        self.spec, self.unmatched = spec, unmatched
        self.rules: list[_Rule] | None = None
        self.pattern: re.Pattern[str] | None = None
        if spec.startswith("file:"):
            try:
                self.pattern = re.compile(spec[5:])
            except re.error as exc:
                raise CaptureError(f"--label {spec!r}: invalid regular expression ({exc})") from None
        elif spec.lower().endswith(".csv"):
            self.rules = read_rules(Path(spec))
        elif spec == "ndpi":
            raise CaptureError(
                "--label ndpi: tsda's capture engine has no nDPI (it decodes headers itself, for "
                "speed); label by folder, file:REGEX or a rules .csv (server IP, port, SNI)"
            )
        elif spec not in ("folder", "none"):
            raise CaptureError(f"--label {spec!r}: expected folder, file:REGEX, a rules .csv file or none")
        if unmatched != "drop" and self.rules is None:
            raise CaptureError("--unmatched applies to --label RULES.csv only")

    @property
    def wants_sni(self) -> bool:
        return any(r.sni is not None for r in self.rules or [])

    def file_label(self, path: Path) -> str | None:
        """The label every flow of `path` gets (folder, file regex, none); None = per flow."""
        if self.spec == "folder":
            return path.resolve().parent.name
        if self.pattern is not None:
            found = self.pattern.search(path.name)
            if found is None:
                raise CaptureError(f"--label {self.spec!r}: the file name {path.name!r} does not match")
            return found.group(1) if found.groups() else found.group(0)
        return UNKNOWN if self.rules is None else None

    def for_flows(self, path: Path, ends: FlowEnds) -> np.ndarray:
        """`(F,)` object: each flow's app, None for a flow left out."""
        fixed = self.file_label(path)
        if fixed is not None or self.rules is None:
            return np.full(len(ends.protocol), fixed, dtype=object)
        out = np.full(len(ends.protocol), None if self.unmatched == "drop" else UNKNOWN, dtype=object)
        todo = np.ones(len(out), dtype=bool)
        for rule in self.rules:
            hit = todo & rule.match(ends)
            out[hit] = rule.app
            todo &= ~hit
        return out
