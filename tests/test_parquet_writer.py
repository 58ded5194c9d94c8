"""The trace cache's own Parquet writer: what it writes, pyarrow reads back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kat.tools.telemetry import parquet_writer
from kat.tools.telemetry.parquet_writer import write_columns


def _roundtrip(tmp_path: Path, ints: dict[str, np.ndarray], strings: dict[str, tuple[np.ndarray, list[str]]]) -> dict:
    path = tmp_path / "t.parquet"
    order = [*ints, *strings]
    write_columns(path, ints, strings, order)
    table = pq.read_table(path, read_dictionary=list(strings))
    assert table.column_names == order
    return {c: table.column(c).combine_chunks() for c in order}


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
@pytest.mark.parametrize("table_size", [1, 2, 3, 255, 256, 257, 70_000])
def test_ints_and_strings_roundtrip(tmp_path: Path, n: int, table_size: int) -> None:
    rng = np.random.default_rng(n * 1000 + table_size)
    table = ["", *(f"s{i}-é✓" for i in range(table_size - 1))]
    codes = rng.integers(0, table_size, size=n).astype(np.int32)
    if n:
        codes[-1] = table_size - 1  # the widest code is always present
    i64 = rng.integers(-(2**62), 2**62, size=n, dtype=np.int64)
    i32 = rng.integers(-(2**31), 2**31 - 1, size=n, dtype=np.int64).astype(np.int32)
    got = _roundtrip(tmp_path, {"a": i64, "b": i32}, {"s": (codes, table)})
    assert str(got["a"].type) == "int64" and str(got["b"].type) == "int32"
    assert np.array_equal(got["a"].to_numpy(), i64)
    assert np.array_equal(got["b"].to_numpy(), i32)
    assert got["s"].to_pylist() == [table[c] for c in codes]


def test_many_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_writer, "PAGE_VALUES", 1000)
    n = 4321
    vals = np.arange(n, dtype=np.int64) * 3 - 7
    codes = (np.arange(n) % 5).astype(np.int64)
    got = _roundtrip(tmp_path, {"v": vals}, {"s": (codes, ["a", "b", "c", "d", "e"])})
    assert np.array_equal(got["v"].to_numpy(), vals)
    assert got["s"].to_pylist() == [["a", "b", "c", "d", "e"][c] for c in codes]


def test_odd_strings_survive(tmp_path: Path) -> None:
    # (lone surrogates never get this far: the importer refuses them as invalid JSON)
    table = ["", "a\x00b", "x" * 100_000, "日本語", 'quote"and\\backslash', "emoji 🧯"]
    codes = np.array([5, 4, 3, 2, 1, 0, 2], dtype=np.int32)
    got = _roundtrip(tmp_path, {}, {"s": (codes, table)})
    assert got["s"].to_pylist() == [table[c] for c in codes]


def test_bad_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="column 'b' has 2 rows, expected 3"):
        write_columns(tmp_path / "x.parquet", {"a": np.zeros(3, np.int64), "b": np.zeros(2, np.int64)}, {}, ["a", "b"])
    with pytest.raises(ValueError, match="codes outside its table"):
        write_columns(tmp_path / "y.parquet", {}, {"s": (np.array([0, 2]), ["", "x"])}, ["s"])


def test_cache_entry_matches_pyarrow_writer(tmp_path: Path) -> None:
    """A real trace's cache entry reads back the same as the same columns written by pyarrow."""
    import pyarrow as pa

    from kat.tools.telemetry.kineto import import_kineto_columns
    from kat.tools.telemetry.schema import COLUMNS, INT_COLUMNS, STR_COLUMNS

    src = Path(__file__).parent / "data" / "real-traces" / "vllm_tp8_b200_rank_eager.json.gz"
    cols, _ = import_kineto_columns(src)
    ours = tmp_path / "ours.parquet"
    write_columns(ours, {c: cols.ints[c] for c in INT_COLUMNS}, {c: (cols.codes[c], cols.tables[c]) for c in STR_COLUMNS}, list(COLUMNS))
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(
        pa.table(
            {
                c: cols.ints[c]
                if c in INT_COLUMNS
                else pa.DictionaryArray.from_arrays(pa.array(cols.codes[c], pa.int32()), pa.array(cols.tables[c]))
                for c in COLUMNS
            }
        ),
        theirs,
    )
    a = pq.read_table(ours, read_dictionary=list(STR_COLUMNS)).to_pandas()
    b = pq.read_table(theirs, read_dictionary=list(STR_COLUMNS)).to_pandas()
    for c in COLUMNS:
        assert a[c].astype(object).tolist() == b[c].astype(object).tolist(), c


def test_narrow_stores_small_int64_columns_as_int32(tmp_path: Path) -> None:
    small = np.array([-5, 0, 2**31 - 1, -(2**31)], dtype=np.int64)
    big = np.array([0, 2**31], dtype=np.int64)
    path = tmp_path / "n.parquet"
    write_columns(path, {"small": small, "big": np.resize(big, 4)}, {}, ["small", "big"], narrow=True)
    t = pq.read_table(path)
    assert str(t.schema.field("small").type) == "int32" and str(t.schema.field("big").type) == "int64"
    assert t.column("small").to_numpy().tolist() == small.tolist()
    assert t.column("big").to_numpy().tolist() == np.resize(big, 4).tolist()


def test_cache_reads_back_in_canonical_dtypes(tmp_path: Path) -> None:
    from kat.tools.telemetry.bundle import open_bundle
    from kat.tools.telemetry.schema import INT_COLUMNS
    from tests.bundle_factory import make_bundle

    root = make_bundle(tmp_path / "inc")
    open_bundle(root, cache_dir=tmp_path / "c")
    again = open_bundle(root, cache_dir=tmp_path / "c").events(0)  # from the cache
    for col, dtype in INT_COLUMNS.items():
        assert again[col].dtype == np.dtype(dtype), col
