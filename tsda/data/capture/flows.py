"""Bidirectional flows from decoded packets, chunk by chunk, with state carried between chunks.

A flow is the packets of one 5-tuple (both directions) until one of:
- an idle gap longer than `idle_timeout` between two of its packets (nfstream's 120 s),
- a packet `active_timeout` or more after the flow's first (nfstream's 1800 s): that packet
  starts the next flow,
- a TCP RST, or the second direction's FIN (both sides closed): that packet is the flow's
  last, the next packet of the 5-tuple starts a new flow.
The client is the sender of the flow's first packet (whatever it carries); direction 0 =
client to server, 1 = server to client (tcbench's convention).

The packet series (`pkts_size`, `pkts_dir`, `timetofirst`) holds the flow's first
`max_packets` *series packets*: those with a transport payload (unless `keep_zero_payload`),
TCP retransmissions left out (unless `keep_retransmissions`), as tcbench's curated MIRAGE
files and FG-Net hold them. A TCP segment is a retransmission when its last byte is at or
below the highest byte its side has already sent (out-of-order segments count as well, as
FG-Net's authors removed both). `timetofirst` counts from the first series packet; `packets`
and `bytes` count every series packet of the flow (also those past `max_packets`).

Memory: one state row per flow in progress plus its (at most `max_packets`) series packets;
a flow is written out as soon as it ends, so memory does not grow with the capture.
Everything is vectorised over a chunk; the only loop is over rounds of timeout/FIN splits,
one round per split inside one 5-tuple's run of packets in the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsda.data.capture.decode import FIN, RST, TCP, Packets, key_hash

NS = 1_000_000_000
_BIG = np.iinfo(np.int64).max


@dataclass(frozen=True)
class FlowRules:
    """How packets become flows (times in seconds)."""

    idle_timeout: float = 120.0
    active_timeout: float = 1800.0
    max_packets: int = 64
    keep_zero_payload: bool = False
    keep_retransmissions: bool = False

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "active_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_packets < 1:
            raise ValueError(f"--max_packets must be >= 1, got {self.max_packets}")


@dataclass
class Flows:
    """Finished flows, one row each, and their series packets (ragged, row-major).

    Attributes:
        state: per-flow arrays (`key (F, 5)`, `client_b`, `start`/`last` ns, `packets`,
            `bytes`, `sni` (the server name of the client's first TLS ClientHello, or None),
            `first_index`), in the order of their first packet in the file.
        offsets: `(F + 1,)` int64, row f's series packets are `[offsets[f], offsets[f+1])`.
        sizes, dirs, times_ns: `(offsets[-1],)` payload bytes, direction (0/1), ns since
            the first series packet.
    """

    state: dict[str, np.ndarray]
    offsets: np.ndarray
    sizes: np.ndarray
    dirs: np.ndarray
    times_ns: np.ndarray

    def __len__(self) -> int:
        return int(len(self.offsets) - 1)


def _empty_state() -> dict[str, np.ndarray]:
    i64 = np.zeros(0, dtype=np.int64)
    return {
        "h": np.zeros((0, 2), np.uint64),
        "key": np.zeros((0, 5), np.uint64),
        "uid": i64,
        "client_b": np.zeros(0, bool),
        "start": i64,
        "last": i64,
        "first_kept": i64,
        "fin": i64,
        "base": np.zeros((0, 2), np.int64),
        "max_end": np.zeros((0, 2), np.int64),
        "n_kept": i64,
        "packets": i64,
        "bytes": i64,
        "sni": np.zeros(0, dtype=object),
        "first_index": i64,
    }


def _take(state: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in state.items()}


def _concat(*states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([s[k] for s in states]) for k in states[0]}


def _seg_cumsum(values: np.ndarray, first: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of `values (n,)` restarting at each segment (`first`: the
    segments' first positions, `seg (n,)`: each position's segment)."""
    c = np.cumsum(values)
    return c - (c[first] - values[first])[seg]


def _sort_by_hash(h: np.ndarray) -> np.ndarray:
    order = np.argsort(h[:, 0], kind="stable")
    s = h[order]
    if np.any((s[1:, 0] == s[:-1, 0]) & (s[1:, 1] != s[:-1, 1])):  # a 64-bit collision: both words
        order = np.lexsort((np.arange(len(h)), h[:, 1], h[:, 0]))
    return order


class FlowAssembler:
    """Feeds chunks of packets (`push`), returns the flows that ended; `finish` ends the rest."""

    def __init__(self, rules: FlowRules) -> None:
        self.rules = rules
        self.state = _empty_state()
        self.pool: dict[str, np.ndarray] = {
            "uid": np.zeros(0, np.int64),
            "rank": np.zeros(0, np.int64),
            "size": np.zeros(0, np.int64),
            "dir": np.zeros(0, np.int8),
            "time": np.zeros(0, np.int64),
        }
        self.next_uid = 0
        self.dropped_empty = 0  # flows with no series packet (e.g. only handshake and ACKs)

    # -- segmentation -------------------------------------------------------------------
    def _boundaries(self, p: dict[str, np.ndarray], head_state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(boundary (n,) bool, seg_state (S,))`: where flows start in the hash-sorted
        packets, and the state row each flow continues (-1 for a new flow)."""
        t, gid = p["t"], p["gid"]
        n = len(t)
        idle, active = int(self.rules.idle_timeout * NS), int(self.rules.active_timeout * NS)
        boundary = np.ones(n, dtype=bool)
        boundary[1:] = (gid[1:] != gid[:-1]) | (t[1:] - t[:-1] > idle)
        live = head_state.copy()  # (G,) the state row a group's first packet may continue
        heads = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
        st = self.state
        ok = live >= 0
        th = t[heads]
        ok[ok] = (th[ok] - st["last"][live[ok]] <= idle) & (th[ok] - st["start"][live[ok]] < active)
        live[~ok] = -1
        fin_a = ((p["flags"] & FIN) != 0) & ~p["from_b"]
        fin_b = ((p["flags"] & FIN) != 0) & p["from_b"]
        rst = (p["flags"] & RST) != 0
        while True:
            first = np.flatnonzero(boundary)
            seg = np.cumsum(boundary) - 1
            seg_state = np.full(len(first), -1, dtype=np.int64)
            at_head = np.isin(first, heads)
            seg_state[at_head] = live[gid[first[at_head]]]
            has = seg_state >= 0
            start = t[first].copy()
            start[has] = st["start"][seg_state[has]]
            bits = np.zeros(len(first), dtype=np.int64)
            bits[has] = st["fin"][seg_state[has]]
            cum_a = _seg_cumsum(fin_a.astype(np.int64), first, seg) + (bits & 1)[seg]
            cum_b = _seg_cumsum(fin_b.astype(np.int64), first, seg) + (bits >> 1)[seg]
            term = rst | (fin_a & (cum_b > 0)) | (fin_b & (cum_a > 0))
            nxt = np.r_[seg[1:] == seg[:-1], False]  # the next packet is in the same flow
            act = (t - start[seg] >= active) & ~boundary
            cand = np.where(term & nxt, np.arange(n) + 1, np.where(act, np.arange(n), _BIG))
            earliest = np.minimum.reduceat(cand, first)
            new = earliest[earliest < _BIG]
            if not len(new):
                return boundary, seg_state
            boundary[new] = True

    # -- one chunk ----------------------------------------------------------------------
    def push(self, pk: Packets) -> Flows:
        """Add a chunk of packets (capture order); returns the flows that ended in it."""
        if not len(pk):
            return self._emit(np.zeros(0, np.int64), _empty_state())
        h = key_hash(pk.key)
        order = _sort_by_hash(h)
        p = {
            "t": pk.ts_ns[order],
            "h": h[order],
            "key": pk.key[order],
            "from_b": pk.from_b[order],
            "payload": pk.payload[order],
            "seq": pk.seq[order],
            "flags": pk.flags[order],
            "sni": pk.sni[order],
            "index": pk.index[order],
            "tcp": (pk.key[order, 4] & np.uint64(0xFF)) == TCP,
        }
        hs = p["h"]
        p["gid"] = np.cumsum(np.r_[True, np.any(hs[1:] != hs[:-1], axis=1)]) - 1
        heads = np.flatnonzero(np.r_[True, p["gid"][1:] != p["gid"][:-1]])
        head_state = self._match(hs[heads])
        boundary, seg_state = self._boundaries(p, head_state)
        segs = self._segments(p, boundary, seg_state)
        return self._advance(p, boundary, seg_state, segs, head_state)

    def _match(self, h: np.ndarray) -> np.ndarray:
        """`(G,)` the state row holding each 128-bit key hash, -1 where none."""
        st = self.state["h"]
        if not len(st):
            return np.full(len(h), -1, dtype=np.int64)
        dt = [("a", "u8"), ("b", "u8")]
        table = np.ascontiguousarray(st).view(dt).ravel()
        query = np.ascontiguousarray(h).view(dt).ravel()
        pos = np.minimum(np.searchsorted(table, query), len(st) - 1)
        return np.where(np.all(st[pos] == h, axis=1), pos, -1)

    def _segments(self, p: dict[str, np.ndarray], boundary: np.ndarray, seg_state: np.ndarray) -> dict[str, np.ndarray]:
        """The state rows of the chunk's flows (continued or new); adds their series
        packets to the pool."""
        st, rules = self.state, self.rules
        n = len(boundary)
        first = np.flatnonzero(boundary)
        seg = np.cumsum(boundary) - 1
        last = np.r_[first[1:], n] - 1
        has = seg_state >= 0
        s_rows = seg_state[has]
        out = {
            "h": p["h"][first],
            "key": p["key"][first],
            "client_b": p["from_b"][first].copy(),
            "start": p["t"][first].copy(),
            "last": p["t"][last],
            "first_index": p["index"][first].copy(),
        }
        uid = self.next_uid + np.arange(len(first), dtype=np.int64)
        uid[has] = st["uid"][s_rows]
        self.next_uid += len(first)
        out["uid"] = uid
        for k in ("client_b", "start", "first_index"):
            out[k][has] = st[k][s_rows]
        side = p["from_b"].astype(np.int64)
        # retransmissions: per (flow, side), sequence numbers relative to a base, centred
        # so a segment slightly before the first one seen stays positive
        data = p["tcp"] & (p["payload"] > 0)
        grp = seg * 2 + side
        order = np.lexsort((np.arange(n), grp))
        g_sorted = grp[order]
        g_first_mask = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
        g_first = np.flatnonzero(g_first_mask)
        g_id = np.cumsum(g_first_mask) - 1
        cand_pos = np.where(data[order], np.arange(n), n)
        first_data = np.minimum.reduceat(cand_pos, g_first)  # (groups,) position in `order` or n
        base_g = np.where(first_data < n, p["seq"][order][np.minimum(first_data, n - 1)], -1)
        g_seg, g_side = g_sorted[g_first] // 2, g_sorted[g_first] % 2
        base_state = np.full(len(g_first), -1, dtype=np.int64)
        max_state = np.full(len(g_first), -1, dtype=np.int64)
        cont = seg_state[g_seg] >= 0
        base_state[cont] = st["base"][seg_state[g_seg[cont]], g_side[cont]]
        max_state[cont] = st["max_end"][seg_state[g_seg[cont]], g_side[cont]]
        base = np.where(base_state >= 0, base_state, base_g)
        rel = (p["seq"][order] - base[g_id] + (1 << 31)) % (1 << 32)
        end = np.where(data[order], rel + p["payload"][order], -1)
        shifted = end + 1 + g_id * (1 << 34)  # >= 0, groups kept apart for one running max
        run = np.maximum.accumulate(shifted) - g_id * (1 << 34) - 1
        prior = np.r_[-1, run[:-1]]
        prior[g_first] = -1
        prior = np.maximum(prior, max_state[g_id])
        retrans_sorted = data[order] & (end <= prior)
        retrans = np.empty(n, dtype=bool)
        retrans[order] = retrans_sorted
        g_max = np.maximum(np.maximum.reduceat(np.where(data[order], end, -1), g_first), max_state)
        for k in ("base", "max_end"):  # a side silent in this chunk keeps its state
            out[k] = np.full((len(first), 2), -1, dtype=np.int64)
            out[k][has] = st[k][s_rows]
        out["base"][g_seg, g_side] = base
        out["max_end"][g_seg, g_side] = g_max
        # series packets
        series = ((p["payload"] > 0) | rules.keep_zero_payload) & ~(retrans & (not rules.keep_retransmissions))
        n_kept0 = np.zeros(len(first), dtype=np.int64)
        n_kept0[has] = st["n_kept"][s_rows]
        rank = n_kept0[seg] + _seg_cumsum(series.astype(np.int64), first, seg) - series
        kept = series & (rank < rules.max_packets)
        first_series = np.minimum.reduceat(np.where(series, np.arange(n), n), first)
        fk = np.where(first_series < n, p["t"][np.minimum(first_series, n - 1)], -1)
        fk[has] = np.where(st["first_kept"][s_rows] >= 0, st["first_kept"][s_rows], fk[has])
        out["first_kept"] = fk
        client_b = out["client_b"][seg]
        self._pool_add(
            uid[seg][kept],
            rank[kept],
            p["payload"][kept],
            (p["from_b"] != client_b)[kept],
            p["t"][kept] - fk[seg][kept],
        )
        add = lambda v: np.add.reduceat(v, first)  # noqa: E731
        out["n_kept"] = np.minimum(n_kept0 + add(series.astype(np.int64)), rules.max_packets)
        for k, v in (("packets", series.astype(np.int64)), ("bytes", np.where(series, p["payload"], 0))):
            prev = np.zeros(len(first), dtype=np.int64)
            prev[has] = st[k][s_rows]
            out[k] = prev + add(v)
        fin = np.zeros(len(first), dtype=np.int64)
        fin[has] = st["fin"][s_rows]
        fin_bits = np.where((p["flags"] & FIN) != 0, np.where(p["from_b"], 2, 1), 0)
        out["fin"] = fin | np.bitwise_or.reduceat(fin_bits, first)
        # numpy's stub refuses None, which an object array compares element-wise
        named = ~np.equal(p["sni"], None) & (p["from_b"] == client_b)  # type: ignore[call-overload]
        at = np.minimum.reduceat(np.where(named, np.arange(n), n), first)
        sni = np.full(len(first), None, dtype=object)
        sni[at < n] = p["sni"][at[at < n]]
        unnamed = np.equal(st["sni"][s_rows], None)  # type: ignore[call-overload]
        sni[has] = np.where(unnamed, sni[has], st["sni"][s_rows])
        out["sni"] = sni
        return out

    def _pool_add(
        self, uid: np.ndarray, rank: np.ndarray, size: np.ndarray, direction: np.ndarray, time: np.ndarray
    ) -> None:
        for k, v in (("uid", uid), ("rank", rank), ("size", size), ("dir", direction.astype(np.int8)), ("time", time)):
            self.pool[k] = np.concatenate([self.pool[k], v])

    def _advance(
        self,
        p: dict[str, np.ndarray],
        boundary: np.ndarray,
        seg_state: np.ndarray,
        segs: dict[str, np.ndarray],
        head_state: np.ndarray,
    ) -> Flows:
        """New state: untouched flows still in time, plus each 5-tuple's last flow of the
        chunk unless it ended with RST/FIN; every other flow is returned."""
        st = self.state
        n = len(boundary)
        first = np.flatnonzero(boundary)
        last_pkt = np.r_[first[1:], n] - 1
        gid_of = p["gid"][first]
        last_of_group = np.r_[gid_of[1:] != gid_of[:-1], True]
        both_fin = segs["fin"] == 3
        rst_end = (p["flags"][last_pkt] & RST) != 0
        open_seg = last_of_group & ~both_fin & ~rst_end
        touched = np.zeros(len(st["uid"]), dtype=bool)
        touched[head_state[head_state >= 0]] = True
        now = int(p["t"].max())
        stale = ~touched & (now - st["last"] > int(self.rules.idle_timeout * NS))
        ended_state = (touched & ~np.isin(st["uid"], segs["uid"])) | stale
        done = _concat(_take(st, ended_state), _take(segs, ~open_seg))
        self.state = _concat(_take(st, ~touched & ~stale), _take(segs, open_seg))
        order = np.lexsort(self.state["h"][:, ::-1].T)
        self.state = _take(self.state, order)
        return self._emit(np.argsort(done["first_index"], kind="stable"), done)

    def finish(self) -> Flows:
        """End every flow still in progress (the end of a capture)."""
        done, self.state = self.state, _empty_state()
        return self._emit(np.argsort(done["first_index"], kind="stable"), done)

    def _emit(self, order: np.ndarray, done: dict[str, np.ndarray]) -> Flows:
        """`done`'s flows in `order` with their series packets, taken out of the pool;
        flows without a series packet are counted and left out."""
        done = _take(done, order)
        nonempty = done["n_kept"] > 0
        self.dropped_empty += int((~nonempty).sum())
        pool = self.pool
        leaving = np.isin(pool["uid"], done["uid"])
        done = _take(done, nonempty)
        rows = np.searchsorted(np.sort(done["uid"]), pool["uid"][leaving])
        row_of_uid = np.argsort(done["uid"])[rows]
        o = np.lexsort((pool["rank"][leaving], row_of_uid))
        counts = np.bincount(row_of_uid, minlength=len(done["uid"]))
        flows = Flows(
            state=done,
            offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
            sizes=pool["size"][leaving][o],
            dirs=pool["dir"][leaving][o],
            times_ns=pool["time"][leaving][o],
        )
        self.pool = {k: v[~leaving] for k, v in pool.items()}
        return flows
