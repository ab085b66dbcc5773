"""Reads the Delta tables under DELTA_ROOT with the `deltalake` package and with polars,
and the Parquet folders the parquet format wrote for the same input under PARQUET_ROOT with
pyarrow; every table must hold the same rows as its folder. Prints rows per dataset as JSON.

With --hold, the tables are opened (their current versions loaded), then "opened" is printed
and a line is awaited on stdin before any row is read: a reader that started on a version
which something else (a compaction) replaces in the meantime must still read it whole.

usage: read_delta.py PARQUET_ROOT DELTA_ROOT [--hold]
"""

import json
import sys

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable

DATASETS = {
    "raw-events": ["dt", "event_hour"],
    "aggregated": ["dt"],
    "dlq": [],
}


def rows(table: pa.Table, columns: list) -> list:
    """The rows as tuples in `columns` order, sorted: timestamps compare as instants whatever
    their unit, so a Delta reader's microseconds equal the files' milliseconds."""
    table = table.select(columns)
    return sorted(zip(*(table.column(c).to_pylist() for c in columns)), key=repr)


def main(parquet_root: str, delta_root: str, hold: bool) -> None:
    tables = {
        name: DeltaTable(f"{delta_root}/pageview-pipeline-local-{name}") for name in DATASETS
    }
    versions = {name: table.version() for name, table in tables.items()}
    if hold:
        print("opened", flush=True)
        sys.stdin.readline()
    counts = {}
    for name, partitions in DATASETS.items():
        bucket = f"pageview-pipeline-local-{name}"
        folder = f"{parquet_root}/{bucket}"
        partitioning = None
        if partitions:
            fields = [(c, pa.string()) for c in partitions]
            partitioning = ds.partitioning(pa.schema(fields), flavor="hive")
        want = ds.dataset(folder, format="parquet", partitioning=partitioning).to_table()
        columns = want.column_names
        expected = rows(want, columns)

        table = tables[name]
        assert table.metadata().partition_columns == partitions, (name, table.metadata())
        by_deltalake = rows(table.to_pyarrow_table(), columns)
        read = pl.read_delta(f"{delta_root}/{bucket}", version=versions[name])
        by_polars = rows(read.to_arrow(), columns)
        assert by_deltalake == expected, f"{name}: deltalake reads other rows than the folder"
        assert by_polars == expected, f"{name}: polars reads other rows than the folder"
        counts[name] = len(expected)
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:] == ["--hold"])
