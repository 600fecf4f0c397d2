"""Snowflake's own Python connector (4.x) reads a query from the same server: its
values, as JSON, for comparison with ours. Environment: SF_HOST, SF_PORT, SF_QUERY."""

import datetime
import decimal
import json
import os

import snowflake.connector

connection = snowflake.connector.connect(
    account="acme-test",
    user="LOADER",
    password="fakesnow-password-7e2",
    host=os.environ["SF_HOST"],
    port=int(os.environ["SF_PORT"]),
    protocol="http",
    database="CASES",
    schema="PUBLIC",
)
cursor = connection.cursor()
cursor.execute(os.environ["SF_QUERY"])
names = [d[0] for d in cursor.description]


def plain(value):
    if isinstance(value, decimal.Decimal):
        return str(value) if value.as_tuple().exponent < 0 else int(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


rows = [{n: plain(v) for n, v in zip(names, row)} for row in cursor.fetchall()]
print(json.dumps(rows))
connection.close()
