"""DAGs the Airflow client's tests run against a real Airflow 3."""
import hashlib

import pendulum
from airflow.sdk import Asset, Connection, Variable, dag, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(schedule=None, start_date=START, catchup=False, tags=["moodbridge"])
def mb_hello():
    @task
    def extract(**context):
        return {"n": 3, "stream": context["dag_run"].conf.get("stream")}

    @task
    def load(found):
        print("loading", found)

    load(extract())


mb_hello()


@dag(schedule=None, start_date=START, catchup=False, default_args={"retries": 0})
def mb_flaky():
    @task
    def check():
        # Fails until the test sets the variable, then succeeds when cleared.
        if Variable.get("mb_flaky_ok", default="no") != "yes":
            raise RuntimeError("mb_flaky_ok is not yes")
        return "ok"

    @task
    def after(x):
        return x

    after(check())


mb_flaky()


@dag(schedule=None, start_date=START, catchup=False)
def mb_connection():
    @task
    def digest():
        # What Airflow stored as the password, as a digest (the password never leaves).
        conn = Connection.get("mb_warehouse")
        return {
            "password_sha256": hashlib.sha256(conn.password.encode()).hexdigest(),
            "host": conn.host,
            "extra": conn.extra_dejson,
        }

    digest()


mb_connection()


@dag(schedule=[Asset("moodbridge://warehouse/Account")], start_date=START, catchup=False)
def mb_on_accounts():
    @task
    def report(**context):
        events = context["triggering_asset_events"]
        return [e.extra for evs in events.values() for e in evs]

    report()


mb_on_accounts()


@dag(schedule=None, start_date=START, catchup=False)
def mb_paused():
    @task
    def never():
        return 1

    never()


mb_paused()
