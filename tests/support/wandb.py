"""Reading an offline W&B run back (tests only): wandb 0.31 offline keeps the summary in the
run's binary `run-*.wandb` log (no wandb-summary.json); its records are protobufs in a
LevelDB-style log of 32 KiB blocks. Depends on wandb's internal format."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def wandb_records(path: Path) -> list:
    """The records of an offline run's `run-*.wandb` (a LevelDB-style log: a 7-byte header,
    32 KiB blocks of chunks `crc32 (4) | length (2, little-endian) | type (1)`)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = chunk + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def offline_summary(wandb_dir: Path, wait: float = 30.0) -> tuple[Path, dict[str, Any]]:
    """The one offline run under `wandb_dir` (a `wandb/` folder) and its summary keys. The
    log is re-read for up to `wait` seconds until it holds a summary record: on a loaded
    machine wandb's writer process may still be flushing when `finish()` has returned."""
    import time

    (run_dir,) = wandb_dir.glob("offline-run-*")
    deadline = time.monotonic() + wait
    while True:
        summary: dict[str, Any] = {}
        for record in wandb_records(next(run_dir.glob("run-*.wandb"))):
            if record.WhichOneof("record_type") == "summary":
                summary.update(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.summary.update
                    }
                )
        if summary or time.monotonic() > deadline:
            return run_dir, summary
        time.sleep(0.5)
