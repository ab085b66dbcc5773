"""Runs every SQL query (in DuckDB) and every Python snippet of the README, in WORKDIR, and
prints a JSON summary with each query's rows. Any failure ends it with a traceback.

Usage: python readme_snippets.py README.md WORKDIR
"""
import contextlib
import json
import os
import re
import sys

import duckdb

readme, workdir = sys.argv[1], sys.argv[2]
blocks = re.findall(r"```(sql|python)\n(.*?)```", open(readme).read(), re.S)
os.chdir(workdir)

con = duckdb.connect()
queries, snippets = [], 0
for language, code in blocks:
    if language == "python":
        # What a snippet prints goes to stderr: stdout is this script's JSON.
        with contextlib.redirect_stdout(sys.stderr):
            exec(compile(code, "README.md", "exec"), {})
        snippets += 1
        continue
    for query in filter(str.strip, code.split(";")):
        rows = con.execute(query).fetchall()
        queries.append({"query": query.strip(), "rows": [[str(v) for v in row] for row in rows]})

print(json.dumps({"queries": queries, "python_snippets": snippets}))
