"""Flow tables: Parquet reading/writing, bad input, curation and splits."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.flows import random_table

from tsda.data.curation import curate, split_indices, stratified_fraction
from tsda.data.sources import FlowDataError, ParquetColumns, read_parquet, write_parquet
from tsda.data.table import FlowTable


def assert_tables_equal(a: FlowTable, b: FlowTable) -> None:
    assert a.class_names == b.class_names
    for name in ("labels", "sizes", "directions", "times", "lengths", "packets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert set(a.meta) == set(b.meta)
    for key in a.meta:
        np.testing.assert_array_equal(a.meta[key], b.meta[key], err_msg=key)


# -- Parquet round trip ---------------------------------------------------------------------
def test_parquet_round_trip(tmp_path: Path) -> None:
    table = random_table(counts=(12, 7, 5), max_packets=32, max_len=50)
    path = write_parquet(table, tmp_path / "flows.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.parquet"], "no temporary file left"
    back = read_parquet(path, max_packets=32, meta_columns=("capture",))
    assert_tables_equal(back, table)


def test_parquet_schema_is_tcbench(tmp_path: Path) -> None:
    table = random_table(counts=(3, 2), max_packets=8, max_len=8)
    schema = pq.read_schema(write_parquet(table, tmp_path / "f.parquet"))
    assert {"app", "pkts_size", "pkts_dir", "timetofirst", "packets"} <= set(schema.names)
    assert pa.types.is_list(schema.field("pkts_size").type)
    rows = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert len(rows[0]["pkts_size"]) == table.lengths[0]
    assert rows[0]["timetofirst"][0] == 0.0


def test_read_pads_and_truncates_to_max_packets(tmp_path: Path) -> None:
    table = random_table(counts=(10, 10), max_packets=40, min_len=2, max_len=40)
    path = write_parquet(table, tmp_path / "f.parquet")
    short = read_parquet(path, max_packets=16)
    assert short.max_packets == 16
    np.testing.assert_array_equal(short.lengths, np.minimum(table.lengths, 16))
    np.testing.assert_array_equal(short.sizes, table.sizes[:, :16])
    np.testing.assert_array_equal(short.packets, table.packets)


def test_tcbench_style_column_renames(tmp_path: Path) -> None:
    table = random_table(counts=(6, 4), max_packets=16, max_len=16)
    cols = ParquetColumns(label="label", sizes="sizes", directions="dirs", times="ts", packets=None)
    path = write_parquet(table, tmp_path / "renamed.parquet", cols)
    assert "app" not in pq.read_schema(path).names
    back = read_parquet(path, cols, max_packets=16)
    np.testing.assert_array_equal(back.sizes, table.sizes)
    np.testing.assert_array_equal(back.packets, table.lengths)  # no packets column: list lengths
    with pytest.raises(FlowDataError, match="missing column 'app'"):
        read_parquet(path, max_packets=16)


def test_integer_labels_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "int.parquet"
    pq.write_table(
        pa.table(
            {
                "app": pa.array([3, 7, 3], pa.int64()),
                "pkts_size": [[10, 20], [30], [40, 50]],
                "pkts_dir": [[0, 1], [1], [0, 0]],
                "timetofirst": [[0.0, 0.1], [0.0], [0.0, 0.2]],
            }
        ),
        path,
    )
    table = read_parquet(path, max_packets=4)
    assert table.class_names == ("3", "7")
    assert table.labels.tolist() == [0, 1, 0]


def test_reads_fgnet_d1(fgnet_d1: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = read_parquet(fgnet_d1, invalid_rows="drop", meta_columns=("capture",))
    assert len(table.class_names) == 53
    assert 150_000 < table.n_flows <= 150_897
    assert table.max_packets == 64
    assert ((table.directions == 0) | (table.directions == 1)).all()
    assert (table.times[:, 0] == 0).all()
    assert "capture" in table.meta
    assert (table.packets > 10).sum() > 130_000


# -- bad input: a clear error naming file, column and row; nothing written ---------------------
GOOD = {
    "app": ["a", "a", "b", "b"],
    "pkts_size": [[100, 200, 300], [10, 20], [1460, 5], [7, 8, 9]],
    "pkts_dir": [[0, 1, 1], [0, 1], [1, 0], [0, 0, 1]],
    "timetofirst": [[0.0, 0.1, 0.2], [0.0, 1.0], [0.0, 0.5], [0.0, 0.01, 0.02]],
    "packets": [3, 2, 2, 3],
}


def write_raw(tmp_path: Path, name: str = "bad.parquet", **changes: object) -> Path:
    """A tcbench-style Parquet file from `GOOD` with `changes` (column -> values or None to
    drop the column)."""
    columns = {**GOOD, **changes}
    data = {k: v for k, v in columns.items() if v is not None}
    path = tmp_path / name
    pq.write_table(pa.table(data), path)
    return path


def test_good_raw_file_reads(tmp_path: Path) -> None:
    table = read_parquet(write_raw(tmp_path), max_packets=4)
    assert table.class_names == ("a", "b") and table.lengths.tolist() == [3, 2, 2, 3]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_parquet(missing)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "text.parquet"
    path.write_text("hello")
    with pytest.raises(FlowDataError, match="text.parquet"):
        read_parquet(path)


@pytest.mark.parametrize(
    ("changes", "column", "row"),
    [
        ({"pkts_dir": None}, "pkts_dir", None),  # missing column
        ({"timetofirst": None, "time_to_first": GOOD["timetofirst"]}, "timetofirst", None),  # misnamed
        ({"pkts_dir": [[0, 1, 1], [0, 1], [1], [0, 0, 1]]}, "pkts_dir", 2),  # unequal lengths
        ({"timetofirst": [[0.0, 0.1, 0.2], [0.0, 1.0], [0.0, 0.5], [0.0, 0.01]]}, "timetofirst", 3),
        ({"pkts_size": [[100, 200, 300], [10, -20], [1460, 5], [7, 8, 9]]}, "pkts_size", 1),  # negative
        (
            {"pkts_size": [[100.0, 200.0, 300.0], [10.0, 20.0], [1460.0, float("nan")], [7.0, 8.0, 9.0]]},
            "pkts_size",
            2,
        ),  # NaN size
        (
            {"timetofirst": [[0.0, 0.1, 0.2], [0.0, float("nan")], [0.0, 0.5], [0.0, 0.01, 0.02]]},
            "timetofirst",
            1,
        ),  # NaN time
        (
            {"timetofirst": [[0.0, 0.1, 0.2], [-1.0, 1.0], [0.0, 0.5], [0.0, 0.01, 0.02]]},
            "timetofirst",
            1,
        ),  # negative time
        (
            {"timetofirst": [[0.0, 0.1, 0.2], [0.0, 1.0], [0.0, 0.5], [0.0, 0.3, 0.02]]},
            "timetofirst",
            3,
        ),  # decreasing times
        ({"pkts_dir": [[0, 1, 1], [0, 2], [1, 0], [0, 0, 1]]}, "pkts_dir", 1),  # direction 2
        ({"app": ["a", None, "b", "b"]}, "app", 1),  # null class
        ({"app": ["a", "a", "  ", "b"]}, "app", 2),  # empty class name
        ({"app": [1.0, 1.0, 2.0, 2.0]}, "app", None),  # float labels
    ],
    ids=[
        "missing-column",
        "misnamed-column",
        "unequal-dir",
        "unequal-time",
        "negative-size",
        "nan-size",
        "nan-time",
        "negative-time",
        "decreasing-time",
        "bad-direction",
        "null-label",
        "empty-label",
        "float-label",
    ],
)
def test_bad_input_names_file_column_row(tmp_path: Path, changes: dict, column: str, row: int | None) -> None:
    path = write_raw(tmp_path, **changes)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(FlowDataError) as info:
        read_parquet(path, max_packets=4)
    message = str(info.value)
    assert str(path) in message
    assert repr(column) in message
    if row is not None:
        assert f"row {row}" in message
    assert sorted(tmp_path.iterdir()) == before, "a failed read must write nothing"


def test_invalid_rows_drop_leaves_bad_rows_out(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        pkts_size=[[100, 200, 300], [10, -20], [1460, 5], [7, 8, 9]],
        timetofirst=[[0.0, 0.1, 0.2], [0.0, 1.0], [0.0, 0.5], [0.0, 0.3, 0.02]],
    )
    with pytest.warns(UserWarning, match="left out 2 invalid rows"):
        table = read_parquet(path, max_packets=4, invalid_rows="drop")
    assert table.n_flows == 2
    assert table.sizes[:, 0].tolist() == [100.0, 1460.0]


# -- curation --------------------------------------------------------------------------------
def test_curation_filters_and_truncates() -> None:
    table = random_table(counts=(40, 30, 12), max_packets=32, min_len=5, max_len=30, seed=1)
    out = curate(table, min_packets=10, min_class_size=8, n_packets=20)
    long = table.packets > 10
    counts = np.bincount(table.labels[long], minlength=3)
    kept = [name for name, c in zip(table.class_names, counts) if c > 8]
    assert out.class_names == tuple(kept)
    assert (out.packets > 10).all()
    assert out.n_flows == sum(c for c in counts if c > 8)
    assert out.max_packets == 20
    assert (out.lengths == np.minimum(out.packets, 20)).all()
    # the strict "more than": a class with exactly min_class_size long flows is dropped
    exact = int(counts[2])
    assert curate(table, 10, exact, 20).class_names == tuple(n for n, c in zip(table.class_names, counts) if c > exact)
    assert "app2" not in curate(table, 10, exact, 20).class_names


def test_curation_renumbers_labels() -> None:
    table = random_table(counts=(3, 30, 30), min_len=12, max_len=20)
    out = curate(table, min_packets=10, min_class_size=5, n_packets=20)
    assert out.class_names == ("app1", "app2")
    assert sorted(set(out.labels.tolist())) == [0, 1]
    assert out.class_counts().tolist() == [30, 30]


def test_curation_that_keeps_nothing_raises() -> None:
    with pytest.raises(ValueError, match="min_class_size"):
        curate(random_table(counts=(5, 5)), min_packets=0, min_class_size=100)


# -- splits ----------------------------------------------------------------------------------
def test_stratified_split_proportions_and_disjointness() -> None:
    table = random_table(counts=(200, 100, 50), max_packets=8)
    s = split_indices(table, "stratified", seed=0)
    train, val, test = s["train"], s["val"], s["test"]
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(train, test)) == len(np.intersect1d(val, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(table.n_flows))
    for k, n in enumerate(table.class_counts()):
        per = [int((table.labels[idx] == k).sum()) for idx in (train, val, test)]
        assert abs(per[1] - 0.1 * n) <= 1 and abs(per[2] - 0.1 * n) <= 1
        assert abs(per[0] - 0.8 * n) <= 2
    again = split_indices(table, "stratified", seed=0)
    other = split_indices(table, "stratified", seed=1)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(s["test"], other["test"])


def test_group_split_keeps_captures_together() -> None:
    table = random_table(counts=(100, 80, 60), max_packets=8, flows_per_capture=5)
    s = split_indices(table, "group", seed=0)
    captures = {k: set(table.meta["capture"][idx]) for k, idx in s.items()}
    assert not captures["train"] & captures["val"]
    assert not captures["train"] & captures["test"]
    assert not captures["val"] & captures["test"]
    assert sum(len(v) for v in s.values()) == table.n_flows
    for idx in s.values():
        assert set(table.labels[idx]) == {0, 1, 2}, "every class in every split"


def test_group_split_needs_the_column() -> None:
    table = random_table(counts=(20, 20))
    table.meta.clear()
    with pytest.raises(ValueError, match="capture"):
        split_indices(table, "group")


def test_split_none_is_all_test() -> None:
    table = random_table(counts=(5, 5))
    s = split_indices(table, "none")
    assert len(s["train"]) == len(s["val"]) == 0
    assert np.array_equal(s["test"], np.arange(10))


def test_train_fraction_keeps_every_class() -> None:
    labels = np.repeat(np.arange(4), [400, 100, 10, 2])
    keep = stratified_fraction(labels, 0.05, seed=0)
    assert set(labels[keep]) == {0, 1, 2, 3}
    assert np.bincount(labels[keep]).tolist() == [20, 5, 1, 1]
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction(labels, 0.0, seed=0)
