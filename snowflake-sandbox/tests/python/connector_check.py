"""Drives the Snowflake sandbox with Snowflake's own Python connector, unchanged.

Usage: connector_check.py <port> <account> <private key PEM path>

Every step asserts what the connector got; the last line printed is a JSON summary the
Rust test checks against the sandbox's own record. Any exception fails the run.
"""

import datetime
import decimal
import json
import sys
import time

import snowflake.connector
from snowflake.connector.constants import QueryStatus

snowflake.connector.paramstyle = "qmark"

port, account, key_path = sys.argv[1], sys.argv[2], sys.argv[3]
common = dict(
    account=account,
    host="127.0.0.1",
    port=int(port),
    protocol="http",
    database="SANDBOX",
    schema="PUBLIC",
    warehouse="LOAD_WH",
    session_parameters={"QUERY_TAG": "python-check"},
    network_timeout=60,
)
summary = {"connector": snowflake.connector.__version__}

conn = snowflake.connector.connect(user="LOADER", password="sandbox-password-51", **common)
cur = conn.cursor()

# A result in chunks: 1,000 rows inline, the rest in gzip Arrow chunks behind the qrmk.
cur.execute("select * from ACCOUNTS")
assert [d.name for d in cur.description] == ["ID", "NAME", "AMOUNT", "ACTIVE", "CREATED", "NOTE"]
rows = cur.fetchall()
assert len(rows) == 120_000, len(rows)
for i in (0, 999, 1000, 54_321, 119_999):
    id_, name, amount, active, created, note = rows[i]
    assert id_ == i + 1, (i, id_)
    assert name == f"Account {i:07}", name
    assert amount == decimal.Decimal((i * 1237) % 10_000_000) / 100, (i, amount)
    assert active == (i % 3 != 0)
    expected = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=1_700_000_000 + i)
    nanos = (i * 7919) % 1_000_000_000
    assert created.replace(microsecond=0) == expected, (created, expected)
    assert created.microsecond == nanos // 1000, (created, nanos)
    assert note == (None if i % 7 == 0 else f"note {i}"), note
summary["chunked_rows"] = len(rows)

# SHOW GRANTS: a JSON rowset in the documented columns, created_on a TIMESTAMP_LTZ.
cur.execute("SHOW GRANTS TO ROLE LOADER")
assert [d.name for d in cur.description] == [
    "created_on", "privilege", "granted_on", "name",
    "granted_to", "grantee_name", "grant_option", "granted_by",
], [d.name for d in cur.description]
grants = cur.fetchall()
assert [(g[1], g[2], g[3]) for g in grants] == [
    ("USAGE", "WAREHOUSE", "LOAD_WH"),
    ("USAGE", "DATABASE", "SANDBOX"),
], grants
assert grants[0][0].timestamp() == 1_793_000_000, grants[0][0]
summary["grants"] = len(grants)

# A limit cuts the chunks short.
cur.execute("select * from ACCOUNTS limit 60000")
assert len(cur.fetchall()) == 60_000

# A statement still running after the sandbox's wait: 333333, then polled to the end.
started = time.monotonic()
cur.execute("select system$wait(3)")
assert cur.fetchone()[0] == "waited 3 seconds"
assert time.monotonic() - started >= 3

# Asynchronous: submit, watch it run, read the result by query id.
cur.execute_async("select system$wait(3)")
qid = cur.sfqid
assert conn.get_query_status(qid) == QueryStatus.RUNNING
cur.get_results_from_sfqid(qid)
assert cur.fetchone()[0] == "waited 3 seconds"
assert conn.get_query_status(qid) == QueryStatus.SUCCESS

# Cancel a running query.
cur.execute_async("select system$wait(60)")
slow = cur.sfqid
assert cur.abort_query(slow)
assert conn.get_query_status(slow) == QueryStatus.ABORTED

# Multi-statement.
cur.execute("select 7; select count(*) from ACCOUNTS", num_statements=2)
assert cur.fetchone()[0] == 7
assert cur.nextset()
assert cur.fetchone()[0] == 120_000
assert cur.nextset() is None
try:
    cur.execute("select 1; select 2")
    raise AssertionError("two statements without num_statements ran")
except snowflake.connector.errors.ProgrammingError as e:
    assert e.errno == 8, e.errno

# Binds: one row, then an array bind of many (executemany with qmark).
cur.execute("insert into MATTERS values (?, ?, ?)", (1, "Doe v. Roe", datetime.date(2024, 1, 31)))
cur.executemany(
    "insert into MATTERS values (?, ?, ?)",
    [(n, f"matter {n}", datetime.date(2024, 2, n)) for n in range(2, 12)],
)
assert cur.rowcount == 10, cur.rowcount
cur.execute("select * from MATTERS")
matters = cur.fetchall()
assert len(matters) == 11
assert matters[0] == (1, "Doe v. Roe", datetime.date(2024, 1, 31)), matters[0]
assert matters[10] == (11, "matter 11", datetime.date(2024, 2, 11)), matters[10]

# Binds past the session's CLIENT_STAGE_ARRAY_BINDING_THRESHOLD (100 here): 60 rows of
# 3 go as CSV to a temporary stage, encrypted and gzipped, and the statement names it.
tricky = ["plain", "with, comma", 'with "quotes"', "two\nlines", "", None, "back\\slash"]
staged_rows = [
    (100 + n, tricky[n % len(tricky)], datetime.date(2024, 3, 1 + n % 28)) for n in range(60)
]
cur.executemany("insert into MATTERS values (?, ?, ?)", staged_rows)
assert cur.rowcount == 60, cur.rowcount
cur.execute("select * from MATTERS")
assert [r for r in cur.fetchall() if r[0] >= 100] == staged_rows
summary["staged_binds"] = len(staged_rows)

# Errors carry Snowflake's code and SQL state.
try:
    cur.execute("select * from NOPE")
    raise AssertionError("an unknown table was read")
except snowflake.connector.errors.ProgrammingError as e:
    assert e.errno == 2003 and e.sqlstate == "42S02", (e.errno, e.sqlstate)

# Session expiry: the sandbox's sessions last 4 s; past that the connector renews with
# its master token and carries on.
time.sleep(4.5)
cur.execute("select 1")
assert cur.fetchone()[0] == 1
conn.close()

# A key-pair login: the JWT is checked against the key registered as RSA_PUBLIC_KEY_2.
keyed = snowflake.connector.connect(
    user="LOADER", authenticator="SNOWFLAKE_JWT", private_key_file=key_path, **common
)
assert keyed.cursor().execute("select 3").fetchone()[0] == 3
keyed.close()

# A programmatic access token.
pat = snowflake.connector.connect(
    user="LOADER", authenticator="PROGRAMMATIC_ACCESS_TOKEN", token="sandbox-pat-9", **common
)
assert pat.cursor().execute("select 4").fetchone()[0] == 4
pat.close()

# A wrong password is refused with Snowflake's code.
try:
    snowflake.connector.connect(user="LOADER", password="wrong", **common)
    raise AssertionError("a wrong password logged in")
except snowflake.connector.errors.DatabaseError as e:
    assert e.errno == 390100, e.errno

summary["slow_query"] = slow
summary["async_query"] = qid
print(json.dumps(summary))
