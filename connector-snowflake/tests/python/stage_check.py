"""Snowflake's own Python connector, unchanged, on the files our client put in a stage.

Usage: stage_check.py <port> <stage> <name ours put> <expected content file> <file to put>

GETs the stage (the file our client PUT, encrypted under the stage's master key, must
decrypt to the expected gzip content), then PUTs a file of its own for our client to
read back. Prints a JSON summary as its last line. Any exception fails the run.
"""

import gzip
import json
import os
import sys
import tempfile

import snowflake.connector

port, stage, ours, expected_path, theirs = sys.argv[1:6]
conn = snowflake.connector.connect(
    account="SANDBOX",
    user="LOADER",
    password="sandbox-password-51",
    host="127.0.0.1",
    port=int(port),
    protocol="http",
    database="SANDBOX",
    schema="PUBLIC",
    network_timeout=60,
)
cur = conn.cursor()
summary = {"connector": snowflake.connector.__version__}

with tempfile.TemporaryDirectory() as local:
    rows = cur.execute(f"GET {stage} 'file://{local}/'").fetchall()
    got = {row[0]: row for row in rows}
    summary["got"] = sorted(got)
    path = os.path.join(local, ours)
    with open(path, "rb") as f:
        stored = f.read()
    with open(expected_path, "rb") as f:
        expected = f.read()
    # The file is gzipped (our client compressed it); its content is the original.
    assert gzip.decompress(stored) == expected, "the decrypted file differs"
    summary["decrypted_bytes"] = len(stored)

rows = cur.execute(f"PUT 'file://{theirs}' {stage}").fetchall()
summary["put"] = [[r[0], r[1], r[6]] for r in rows]
assert rows[0][6] == "UPLOADED", rows

conn.close()
print(json.dumps(summary))
