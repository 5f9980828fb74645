"""The vectorised flow assembler (`tsda.data.capture.flows`) against a packet-by-packet
reference of the same rules, on random interleaved packets cut into random chunks."""

from __future__ import annotations

import numpy as np
import pytest

from tsda.data.capture.decode import FIN, RST, Packets
from tsda.data.capture.flows import NS, FlowAssembler, FlowRules, Flows

TCP_KEY, UDP_KEY = 6, 17


def reference(pk: Packets, rules: FlowRules) -> list[dict]:
    """The flows of `pk`, one packet at a time (the rules of the module docstring)."""
    idle, active = rules.idle_timeout * NS, rules.active_timeout * NS
    open_flows: dict[tuple, dict] = {}
    done: list[dict] = []
    for i in range(len(pk)):
        key, t, side = tuple(pk.key[i].tolist()), int(pk.ts_ns[i]), int(pk.from_b[i])
        size, flags, tcp = int(pk.payload[i]), int(pk.flags[i]), (int(pk.key[i, 4]) & 0xFF) == TCP_KEY
        f = open_flows.get(key)
        if f is not None and (t - f["last"] > idle or t - f["start"] >= active):
            done.append(open_flows.pop(key))
            f = None
        if f is None:
            f = open_flows[key] = {
                "key": key,
                "client_b": side,
                "start": t,
                "fin": 0,
                "base": [None, None],
                "max_end": [None, None],
                "series": [],
                "packets": 0,
                "bytes": 0,
                "first": None,
            }
        retrans = False
        if tcp and size > 0:
            if f["base"][side] is None:
                f["base"][side] = int(pk.seq[i])
            end = (int(pk.seq[i]) - f["base"][side] + (1 << 31)) % (1 << 32) + size
            retrans = f["max_end"][side] is not None and end <= f["max_end"][side]
            f["max_end"][side] = end if f["max_end"][side] is None else max(f["max_end"][side], end)
        if (size > 0 or rules.keep_zero_payload) and not (retrans and not rules.keep_retransmissions):
            f["first"] = t if f["first"] is None else f["first"]
            f["packets"] += 1
            f["bytes"] += size
            if len(f["series"]) < rules.max_packets:
                f["series"].append((size, int(side != f["client_b"]), t - f["first"]))
        f["last"] = t
        other_fin = f["fin"] & (1 if side else 2)
        if flags & FIN:
            f["fin"] |= 2 if side else 1
        if flags & RST or (flags & FIN and other_fin):
            done.append(open_flows.pop(key))
    done += open_flows.values()
    return sorted(
        (
            {
                "key": f["key"],
                "start": f["start"],
                "last": f["last"],
                "client_b": f["client_b"],
                "packets": f["packets"],
                "bytes": f["bytes"],
                "series": f["series"],
            }
            for f in done
            if f["series"]
        ),
        key=lambda f: (f["start"], f["key"]),
    )


def assembled(pk: Packets, rules: FlowRules, cuts: list[int]) -> list[dict]:
    """The flows `FlowAssembler` gives for `pk` fed in chunks ending at `cuts`."""
    asm, parts = FlowAssembler(rules), []
    for lo, hi in zip([0, *cuts], [*cuts, len(pk)]):
        sel = slice(lo, hi)
        parts.append(
            asm.push(
                Packets(
                    pk.ts_ns[sel],
                    pk.index[sel],
                    pk.key[sel],
                    pk.from_b[sel],
                    pk.payload[sel],
                    pk.seq[sel],
                    pk.flags[sel],
                    pk.sni[sel],
                )
            )
        )
    parts.append(asm.finish())
    out = []
    for fl in parts:
        out += _rows(fl)
    return sorted(out, key=lambda f: (f["start"], f["key"]))


def _rows(fl: Flows) -> list[dict]:
    st, rows = fl.state, []
    for f in range(len(fl)):
        lo, hi = fl.offsets[f], fl.offsets[f + 1]
        rows.append(
            {
                "key": tuple(st["key"][f].tolist()),
                "start": int(st["start"][f]),
                "last": int(st["last"][f]),
                "client_b": int(st["client_b"][f]),
                "packets": int(st["packets"][f]),
                "bytes": int(st["bytes"][f]),
                "series": list(zip(fl.sizes[lo:hi].tolist(), fl.dirs[lo:hi].tolist(), fl.times_ns[lo:hi].tolist())),
            }
        )
    return rows


def random_packets(rng: np.random.Generator, n: int) -> Packets:
    """`n` packets of 5 keys (3 TCP, 2 UDP), seconds apart with some long silences, payloads
    of 0 or more bytes, sequence numbers that mostly advance (and sometimes repeat or wrap),
    FIN and RST now and then."""
    keys = np.array(
        [[0, 1, 0, 2, (1000 + k) << 24 | 443 << 8 | (TCP_KEY if k < 3 else UDP_KEY)] for k in range(5)], dtype=np.uint64
    )
    which = rng.integers(0, 5, n)
    gaps = rng.choice([0.001, 0.5, 5.0, 150.0, 400.0], size=n, p=[0.5, 0.3, 0.17, 0.025, 0.005])
    ts = (1_000 * NS + np.cumsum(gaps * NS)).astype(np.int64)
    from_b = rng.random(n) < 0.5
    payload = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 1500, n))
    seq = np.zeros(n, dtype=np.int64)
    nxt = {(k, s): int(rng.integers(0, 1 << 32)) for k in range(5) for s in (0, 1)}
    for i in range(n):
        k = (int(which[i]), int(from_b[i]))
        back = rng.random() < 0.1  # a retransmission: an earlier sequence number
        seq[i] = (nxt[k] - (int(rng.integers(1, 3000)) if back else 0)) % (1 << 32)
        if not back:
            nxt[k] = (nxt[k] + int(payload[i])) % (1 << 32)
    tcp = (keys[which, 4] & np.uint64(0xFF)) == TCP_KEY
    flags = np.where(rng.random(n) < 0.06, FIN, 0) | np.where(rng.random(n) < 0.02, RST, 0)
    return Packets(
        ts_ns=ts,
        index=np.arange(n, dtype=np.int64),
        key=keys[which],
        from_b=from_b,
        payload=payload.astype(np.int64),
        seq=np.where(tcp, seq, 0),
        flags=np.where(tcp, flags, 0).astype(np.uint8),
        sni=np.full(n, None, dtype=object),
    )


@pytest.mark.parametrize("seed", range(12))
def test_assembler_matches_the_packet_by_packet_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pk = random_packets(rng, 400)
    rules = FlowRules(
        idle_timeout=120,
        active_timeout=60 if seed % 2 else 900,
        max_packets=int(rng.integers(3, 30)),
        keep_zero_payload=bool(seed % 3 == 1),
        keep_retransmissions=bool(seed % 4 == 2),
    )
    want = reference(pk, rules)
    assert want, "the random capture makes flows"
    cuts = sorted(rng.choice(np.arange(1, len(pk)), size=int(rng.integers(0, 12)), replace=False).tolist())
    assert assembled(pk, rules, cuts) == want
    assert assembled(pk, rules, list(range(1, len(pk)))) == want  # one packet per chunk
