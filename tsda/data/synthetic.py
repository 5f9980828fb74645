"""The embedded default dataset: a seeded simulator of encrypted app traffic (no download).

`make_synthetic` stands in for MIRAGE19 as tcbench curates it: 20 apps with the same
imbalance (`MIRAGE19_COUNTS`, 7,505 down to 1,013 flows, 64,172 in all), payload sizes in
bytes, directions (0 = client to server, 1 = server to client) and times in seconds since
the flow's first packet, in a `FlowTable`.

Generative story
----------------
*Apps and families.* Apps are grouped into families of `FAMILY_SIZE` (= 4) consecutive
apps (app00-app03 are family 0, ...). Each family has a base profile drawn from the seed
(think: apps served by the same CDN / SDK / protocol stack); each app perturbs every
parameter of its family's profile a little (`APP_SPREAD`), and every flow adds its own
noise on top. Apps of one family are therefore confusable, apps of different families
mostly are not (about 2% of a classifier's errors cross families). Within a family the
apps' shifts along each parameter are evenly spaced normal quantiles in a random order,
so no two apps coincide whatever the seed. `APP_SPREAD` was calibrated on seeds 0-3 with
a plain 3-conv 1D CNN on the first 20 packets (flows with > 10 packets, stratified 80/20):
at `scale=1` (seeds 0, 1) and 10 epochs weighted F1 ~0.82-0.85; at `scale=0.25`
~0.65-0.75 after 8 epochs and ~0.68-0.84 after 20; gradient boosting on the flattened
encoding ~0.83 (seed 0). Well below perfect, like MIRAGE19 (0.75 in the paper), leaving
room for augmentation. Difficulty varies with the seed (family profiles are drawn).

*Captures.* The flows of an app come in captures of about `FLOWS_PER_CAPTURE` (= 30) flows
(at least 3 per app), named in `meta["capture"]` (e.g. ``"app03-c007"``). A capture is one
device session on one network path: it fixes the path MSS (1448 mostly, else 1460 or
1380) and scales the round-trip time, so group-aware splits see a realistic shift.

*A flow* is a sequence of messages; a message of ``B`` bytes in one direction becomes
``ceil(B / mss)`` packets: full MSS-sized packets then the remainder (a few packets inside
bursts get an odd size, as TLS record boundaries do). In order:

1. TLS-like handshake: client hello upstream (220-560 B, family-specific, plus per-flow
   extension/SNI jitter); server hello + certificate chain downstream (2-7 kB, so an
   MSS-sized burst and a remainder; a resumed session, with app-specific probability,
   sends only a ~100-250 B server hello); client key exchange / finished upstream (one
   or two small packets); zero to two small downstream session tickets.
2. Request/response exchanges: a request upstream whose size is drawn from an
   app-specific mixture of three log-normal components (large requests split into
   several packets), a response downstream whose size is log-normal with app-specific
   parameters (the burst length), and, with app-specific probability, a small control
   record (ping / window update / alert) in either direction.

*Timing.* Gaps are log-normal. Inside a burst they are short (sub-millisecond to a few
ms, app-specific); the first packet of a server answer waits one round-trip time (per
flow: app base x capture scale x log-normal noise) plus an app-specific server delay; the
client's answers in the handshake wait a short processing delay; a new request waits an
app-specific "think" time (tens of ms to seconds).

*Flow length.* The total packet count (`packets`) is 11 plus a log-normal (app-specific
median) for most flows; an app-specific ~5-15% of flows are short (3 to 10 packets), so
the curation filter (keep flows with more than 10 packets) has work to do. `packets`
can exceed `max_packets`; `lengths = min(packets, max_packets)`.

Bounds: on real packets sizes are integers in [1, 1460] (stored as float64), directions
0/1 and times non-decreasing from 0; padding is zero.

Flows are ordered by class, then capture. Every parameter, and so every array, is a
deterministic function of `seed` (app `i`'s profile and flows do not depend on
`n_apps` or `scale` beyond its count). Generation is vectorised per app (64k flows in
one to three seconds).
"""

from __future__ import annotations

import numpy as np

from tsda.data.table import FlowTable

#: flows per app in MIRAGE19 as tcbench curates it (64,172 flows), largest first:
#: a geometric-like decay from 7,505 to 1,013 (exponent on the index fitted to the total).
MIRAGE19_COUNTS: tuple[int, ...] = (
    7505,
    6635,
    5918,
    5295,
    4747,
    4262,
    3831,
    3447,
    3104,
    2797,
    2522,
    2275,
    2053,
    1854,
    1675,
    1514,
    1368,
    1238,
    1119,
    1013,
)

#: apps per family (apps of one family share a base profile)
FAMILY_SIZE = 4
#: spread of an app's parameters around its family's profile (calibration knob)
APP_SPREAD = 0.30
#: per-flow noise multiplier on the drawn message sizes and delays (calibration knob)
FLOW_NOISE = 1.0
#: target flows per capture
FLOWS_PER_CAPTURE = 30
#: the largest payload a packet carries (bytes)
MAX_SIZE = 1460

_MSS_CHOICES = np.array([1448, 1460, 1380])
_MSS_PROBS = np.array([0.65, 0.25, 0.10])
_N_REQ = 3  # request-size mixture components
_BLOCK = 8192  # flows generated at once (bounds memory)


def _family_profile(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A family's base profile: log-scale means / scales of every message and delay."""
    lu = lambda lo, hi: float(rng.uniform(np.log(lo), np.log(hi)))  # noqa: E731
    req_mu = np.sort(rng.uniform(np.log(50), np.log(1300), size=_N_REQ))
    if rng.random() < 0.3:  # an uploading family: one large request component
        req_mu[-1] = lu(2000, 12000)
    return {
        "ch_mu": np.array(lu(220, 560)),
        "cert_mu": np.array(lu(2000, 7000)),
        "resume_p": np.array(rng.uniform(0.05, 0.45)),
        "sh_mu": np.array(lu(90, 250)),
        "cf_mu": np.array(lu(40, 140)),
        "cf2_p": np.array(rng.uniform(0.0, 0.6)),
        "ticket_mu": np.array(lu(50, 300)),
        "ticket_n": np.array(rng.uniform(0.0, 2.0)),
        "req_mu": req_mu,
        "req_sd": rng.uniform(0.08, 0.35, size=_N_REQ),
        "req_w": rng.dirichlet(np.full(_N_REQ, 1.5)),
        "resp_mu": np.array(lu(150, 25000)),
        "resp_sd": np.array(rng.uniform(0.4, 1.1)),
        "ctrl_p": np.array(rng.uniform(0.0, 0.4)),
        "ctrl_mu": np.array(lu(25, 90)),
        "odd_p": np.array(rng.uniform(0.01, 0.08)),
        "burst_mu": np.array(lu(2e-4, 4e-3)),
        "burst_sd": np.array(rng.uniform(0.5, 1.2)),
        "rtt_mu": np.array(lu(0.015, 0.15)),
        "srv_mu": np.array(lu(0.002, 0.08)),
        "cli_mu": np.array(lu(0.001, 0.02)),
        "think_mu": np.array(lu(0.03, 2.0)),
        "think_sd": np.array(rng.uniform(0.8, 1.6)),
        "len_mu": np.array(lu(8, 150)),
        "len_sd": np.array(rng.uniform(0.6, 1.3)),
        "short_p": np.array(rng.uniform(0.07, 0.15)),
    }


# how far (in log units, times APP_SPREAD) an app moves each log-scale parameter; the
# probabilities/weights move on the logit scale with the same spread.
_LOG_SHIFT = {
    "ch_mu": 0.25,
    "cert_mu": 0.35,
    "sh_mu": 0.2,
    "cf_mu": 0.25,
    "ticket_mu": 0.3,
    "req_mu": 0.5,
    "resp_mu": 0.8,
    "ctrl_mu": 0.2,
    "burst_mu": 0.6,
    "rtt_mu": 0.5,
    "srv_mu": 0.8,
    "cli_mu": 0.6,
    "think_mu": 1.0,
    "len_mu": 0.6,
    "req_sd": 0.3,
    "resp_sd": 0.3,
    "burst_sd": 0.3,
    "think_sd": 0.3,
    "len_sd": 0.3,
    "ticket_n": 0.4,
}
_LOGIT_SHIFT = {"resume_p": 1.0, "cf2_p": 1.0, "ctrl_p": 1.0, "odd_p": 0.5, "short_p": 0.3}


def _app_profile(family: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Move a family's profile by the standardised shifts `z` into one app's."""
    out: dict[str, np.ndarray] = {}
    for key, base in family.items():
        if key in _LOG_SHIFT:
            s = _LOG_SHIFT[key] * APP_SPREAD
            out[key] = base + s * z[key] if key.endswith("_mu") else base * np.exp(s * z[key])
        elif key in _LOGIT_SHIFT:
            logit = np.log(base) - np.log1p(-base)
            out[key] = 1.0 / (1.0 + np.exp(-(logit + _LOGIT_SHIFT[key] * APP_SPREAD * z[key])))
        elif key == "req_w":
            w = base * np.exp(APP_SPREAD * z[key])
            out[key] = w / w.sum()
        else:  # pragma: no cover - every key is listed above
            raise KeyError(key)
    return out


#: the standardised shifts of a family's apps along every parameter: normal quantiles, so
#: the apps of a family sit evenly apart (in a random order per parameter) whatever the seed
_GRID = np.array([-1.15, -0.32, 0.32, 1.15])  # normal quantiles at 1/8, 3/8, 5/8, 7/8
_GRID = _GRID / _GRID.std()


def _profiles(n_apps: int, seed: int) -> list[dict[str, np.ndarray]]:
    n_fam = -(-n_apps // FAMILY_SIZE)
    profiles: list[dict[str, np.ndarray]] = []
    for rng in map(np.random.default_rng, np.random.SeedSequence([seed, 0]).spawn(n_fam)):
        family = _family_profile(rng)
        # per parameter element, a random assignment of the grid points to the apps
        order = {
            k: rng.permuted(np.broadcast_to(_GRID[:, None], (FAMILY_SIZE, np.size(v))), axis=0)
            for k, v in family.items()
        }
        for i in range(FAMILY_SIZE):
            z = {k: o[i].reshape(np.shape(family[k])) for k, o in order.items()}
            profiles.append(_app_profile(family, z))
    return profiles[:n_apps]


def _lognormal(rng: np.random.Generator, mu, sd, size) -> np.ndarray:
    return np.exp(mu + FLOW_NOISE * sd * rng.standard_normal(size))


def _simulate(
    prof: dict[str, np.ndarray],
    n: int,
    cap_mss: np.ndarray,
    cap_rtt: np.ndarray,
    max_packets: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`n` flows of one app; `cap_mss`, `cap_rtt` are per-flow capture effects.

    Returns sizes, directions, times `(n, max_packets)`, lengths and packets `(n,)`.
    """
    P = max_packets
    E = -(-P // 2)  # exchanges: each gives >= 2 packets, so the messages cover P packets
    S = 5 + 3 * E  # messages per flow
    sz = lambda shape: rng.standard_normal(shape)  # noqa: E731

    nbytes = np.zeros((n, S))
    dirs = np.zeros((n, S), dtype=np.int8)
    first_gap = np.zeros((n, S))  # gap before a message's first packet
    present = np.ones((n, S), dtype=bool)

    rtt = cap_rtt * _lognormal(rng, prof["rtt_mu"], 0.35, n)
    srv = lambda k: _lognormal(rng, prof["srv_mu"], 0.6, k)  # noqa: E731
    cli = lambda k: _lognormal(rng, prof["cli_mu"], 0.5, k)  # noqa: E731

    # 1. handshake
    nbytes[:, 0] = np.exp(prof["ch_mu"]) + rng.integers(0, 48, n) + 12 * FLOW_NOISE * sz(n)
    resumed = rng.random(n) < prof["resume_p"]
    cert = _lognormal(rng, prof["cert_mu"], 0.12, n)
    hello = _lognormal(rng, prof["sh_mu"], 0.15, n)
    nbytes[:, 1] = np.where(resumed, hello, cert + hello)
    dirs[:, 1] = 1
    first_gap[:, 1] = rtt + srv(n)
    nbytes[:, 2] = _lognormal(rng, prof["cf_mu"], 0.15, n)
    first_gap[:, 2] = cli(n)
    # key exchange and finished sent as two records (the second one small)
    nbytes[:, 3] = _lognormal(rng, prof["cf_mu"] - 0.5, 0.15, n)
    first_gap[:, 3] = _lognormal(rng, prof["burst_mu"], prof["burst_sd"], n)
    present[:, 3] = rng.random(n) < prof["cf2_p"]
    n_ticket = rng.binomial(2, np.clip(prof["ticket_n"] / 2, 0, 1), n)
    nbytes[:, 4] = _lognormal(rng, prof["ticket_mu"], 0.2, n) * np.maximum(n_ticket, 1)
    dirs[:, 4] = 1
    first_gap[:, 4] = rtt
    present[:, 4] = n_ticket > 0

    # 2. exchanges: request, response, optional control record
    comp = rng.choice(_N_REQ, size=(n, E), p=prof["req_w"])
    req = np.exp(prof["req_mu"][comp] + FLOW_NOISE * prof["req_sd"][comp] * sz((n, E)))
    resp = _lognormal(rng, prof["resp_mu"], prof["resp_sd"], (n, E))
    think = _lognormal(rng, prof["think_mu"], prof["think_sd"], (n, E))
    think[:, 0] = cli(n)  # the first request follows the handshake at once
    ctrl = rng.random((n, E)) < prof["ctrl_p"]
    r, q, c = slice(5, S, 3), slice(6, S, 3), slice(7, S, 3)
    nbytes[:, r], first_gap[:, r] = req, think
    nbytes[:, q], first_gap[:, q], dirs[:, q] = resp, rtt[:, None] + srv((n, E)), 1
    nbytes[:, c] = _lognormal(rng, prof["ctrl_mu"], 0.2, (n, E))
    first_gap[:, c] = _lognormal(rng, prof["think_mu"] - 1.0, prof["think_sd"], (n, E))
    dirs[:, c] = rng.random((n, E)) < 0.5
    present[:, c] = ctrl

    # messages -> packet counts
    nbytes = np.maximum(np.rint(nbytes), 1.0)
    mss = cap_mss.astype(np.float64)[:, None]
    counts = np.ceil(nbytes / mss).astype(np.int64)
    counts *= present
    cum = np.cumsum(counts, axis=1)
    assert (cum[:, -1] >= P).all()

    # flow length: total packets in the flow
    short = rng.random(n) < prof["short_p"]
    long_len = 11 + np.floor(_lognormal(rng, prof["len_mu"], prof["len_sd"], n)).astype(np.int64)
    packets = np.where(short, rng.integers(3, 11, n), long_len)
    lengths = np.minimum(packets, P)

    # expand the messages that fall inside the first `lengths` packets
    start = cum - counts
    kept = np.clip(lengths[:, None] - start, 0, counts)  # (n, S) packets kept per message
    flat = kept.ravel()
    msg = np.repeat(np.arange(n * S), flat)  # message of every kept packet
    offset = np.cumsum(flat) - flat
    j = np.arange(msg.size) - np.repeat(offset, flat)  # index within the message
    row = msg // S
    pos = start.ravel()[msg] + j
    cnt = counts.ravel()[msg]
    m = mss[row, 0]
    size = np.where(j < cnt - 1, m, nbytes.ravel()[msg] - (cnt - 1) * m)
    odd = (cnt > 1) & (j < cnt - 1) & (rng.random(msg.size) < prof["odd_p"])
    size = np.where(odd, rng.integers(1, m.astype(np.int64) + 1), size)
    gap = np.where(
        j == 0,
        first_gap.ravel()[msg],
        _lognormal(rng, prof["burst_mu"], prof["burst_sd"], msg.size),
    )

    sizes = np.zeros((n, P))
    directions = np.zeros((n, P), dtype=np.int8)
    gaps = np.zeros((n, P))
    sizes[row, pos] = np.clip(size, 1, MAX_SIZE)
    directions[row, pos] = dirs.ravel()[msg]
    gaps[row, pos] = gap
    gaps[:, 0] = 0.0
    times = np.cumsum(gaps, axis=1)
    times *= np.arange(P)[None, :] < lengths[:, None]
    return sizes, directions, times, lengths, packets


def make_synthetic(
    n_apps: int = 20,
    scale: float = 1.0,
    seed: int = 0,
    max_packets: int = 64,
    min_flows: int = 20,
) -> FlowTable:
    """Simulate encrypted app traffic with MIRAGE19's class imbalance.

    Args:
        n_apps: classes (`app00`, `app01`, ...); beyond 20 the counts repeat the pattern.
        scale: multiplies every class count of `MIRAGE19_COUNTS` (1.0 gives 64,172 flows).
        seed: seeds the app profiles and every flow.
        max_packets: `P`, packets stored per flow (flows may be longer: see `packets`).
        min_flows: the fewest flows a class gets after scaling.

    Returns:
        A `FlowTable` ordered by class then capture, with `meta["capture"]` (str).
    """
    if isinstance(n_apps, bool) or not isinstance(n_apps, (int, np.integer)) or n_apps < 1:
        raise ValueError(f"n_apps must be an int >= 1, got {n_apps!r}")
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float, np.number))
        or not (np.isfinite(scale) and scale > 0)
    ):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if isinstance(max_packets, bool) or not isinstance(max_packets, (int, np.integer)) or max_packets < 1:
        raise ValueError(f"max_packets must be an int >= 1, got {max_packets!r}")
    if isinstance(min_flows, bool) or not isinstance(min_flows, (int, np.integer)) or min_flows < 1:
        raise ValueError(f"min_flows must be an int >= 1, got {min_flows!r}")
    n_apps, seed, max_packets, min_flows = int(n_apps), int(seed), int(max_packets), int(min_flows)

    names = tuple(f"app{a:02d}" for a in range(n_apps))
    counts = [max(min_flows, round(MIRAGE19_COUNTS[a % len(MIRAGE19_COUNTS)] * scale)) for a in range(n_apps)]
    profiles = _profiles(n_apps, seed)
    flow_ss = np.random.SeedSequence([seed, 2]).spawn(n_apps)

    parts: list[tuple[np.ndarray, ...]] = []
    captures: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for a in range(n_apps):
        rng = np.random.default_rng(flow_ss[a])
        n = counts[a]
        n_cap = min(n, max(3, round(n / FLOWS_PER_CAPTURE)))
        cap = (np.arange(n) * n_cap) // n  # contiguous, balanced captures
        cap_mss = rng.choice(_MSS_CHOICES, size=n_cap, p=_MSS_PROBS)[cap]
        cap_rtt = np.exp(0.3 * rng.standard_normal(n_cap))[cap]
        for lo in range(0, n, _BLOCK):
            hi = min(n, lo + _BLOCK)
            parts.append(_simulate(profiles[a], hi - lo, cap_mss[lo:hi], cap_rtt[lo:hi], max_packets, rng))
        width = max(3, len(str(n_cap - 1)))
        captures.append(np.array([f"{names[a]}-c{k:0{width}d}" for k in range(n_cap)])[cap])
        labels.append(np.full(n, a, dtype=np.int64))

    sizes, directions, times, lengths, packets = (np.concatenate(x) for x in zip(*parts))
    return FlowTable(
        labels=np.concatenate(labels),
        class_names=names,
        sizes=sizes,
        directions=directions,
        times=times,
        lengths=lengths.astype(np.int64),
        packets=packets.astype(np.int64),
        meta={"capture": np.concatenate(captures).astype(object)},
    )
