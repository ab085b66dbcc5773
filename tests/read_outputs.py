"""Reads the three datasets with pyarrow and DuckDB, no custom code, and prints a JSON summary.

Usage: python read_outputs.py STORAGE_ROOT
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]
raw_dir = f"{root}/pageview-pipeline-local-raw-events"
agg_dir = f"{root}/pageview-pipeline-local-aggregated"
dlq_dir = f"{root}/pageview-pipeline-local-dlq"

raw = ds.dataset(raw_dir, format="parquet", partitioning="hive").to_table()
agg = ds.dataset(agg_dir, format="parquet", partitioning="hive").to_table()
dlq = ds.dataset(dlq_dir, format="parquet").to_table()

con = duckdb.connect()
duck_raw = con.execute(
    f"SELECT count(*), count(DISTINCT dt || '/' || event_hour), min(timestamp), max(timestamp) "
    f"FROM read_parquet('{raw_dir}/**/*.parquet', hive_partitioning = true)"
).fetchone()
duck_agg = con.execute(
    f"SELECT count(*), sum(pageview_count), min(window_start)::VARCHAR, typeof(min(window_start)) "
    f"FROM read_parquet('{agg_dir}/**/*.parquet')"
).fetchone()
duck_dlq = con.execute(
    f"SELECT error_kind, count(*) FROM read_parquet('{dlq_dir}/*.parquet') GROUP BY 1 ORDER BY 1"
).fetchall()

print(json.dumps({
    "pyarrow": {
        "raw_rows": raw.num_rows,
        "raw_types": {f.name: str(f.type) for f in raw.schema},
        "agg_rows": agg.num_rows,
        "agg_count_sum": sum(agg.column("pageview_count").to_pylist()),
        "agg_types": {f.name: str(f.type) for f in agg.schema},
        "dlq_rows": dlq.num_rows,
        "dlq_types": {f.name: str(f.type) for f in dlq.schema},
    },
    "duckdb": {
        "raw_rows": duck_raw[0],
        "raw_partitions": duck_raw[1],
        "agg_rows": duck_agg[0],
        "agg_count_sum": int(duck_agg[1]),
        "agg_first_window": duck_agg[2],
        "agg_window_type": duck_agg[3],
        "dlq_by_kind": {k: n for k, n in duck_dlq},
    },
}))
