"""Reads the sink's OpenLineage events (one JSON object per line) with the OpenLineage
project's own Python client: each event is rebuilt from its classes (which check the run
id is a UUID and the event time an ISO date-time), serialised back by the client's Serde,
and compared with ours; the table's dataset is checked against the client's Snowflake
naming. Prints a summary line; exits non-zero on any difference.

Usage: openlineage_check.py EVENTS.jsonl ORG ACCOUNT DATABASE SCHEMA TABLE
"""
import json
import sys

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import output_statistics_output_dataset
from openlineage.client.naming.dataset import Snowflake
from openlineage.client.serde import Serde

path, org, account, database, schema, table = sys.argv[1:7]
naming = Snowflake(
    organization_name=org, account_name=account, database=database, schema=schema, table=table
)
counts = {}
for line in open(path, encoding="utf-8"):
    ours = json.loads(line)
    outputs = []
    for o in ours.get("outputs", []):
        facets = {}
        stats = o.get("outputFacets", {}).get("outputStatistics")
        if stats is not None:
            facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=stats["rowCount"],
                size=stats["size"],
                fileCount=stats["fileCount"],
                producer=stats["_producer"],
            )
        outputs.append(OutputDataset(namespace=o["namespace"], name=o["name"], outputFacets=facets))
        assert (o["namespace"], o["name"]) == (naming.get_namespace(), naming.get_name()), (
            o["namespace"],
            o["name"],
            naming.get_namespace(),
            naming.get_name(),
        )
    event = RunEvent(
        eventType=RunState(ours["eventType"]),
        eventTime=ours["eventTime"],
        run=Run(runId=ours["run"]["runId"]),
        job=Job(namespace=ours["job"]["namespace"], name=ours["job"]["name"]),
        inputs=[InputDataset(namespace=i["namespace"], name=i["name"]) for i in ours.get("inputs", [])],
        outputs=outputs,
        producer=ours["producer"],
    )
    theirs = Serde.to_dict(event)
    for key in ["eventType", "eventTime", "producer", "schemaURL"]:
        assert theirs[key] == ours[key], (key, theirs[key], ours[key])
    # (The client writes empty facet maps out; we leave them out.)
    for key in ["namespace", "name"]:
        assert theirs["job"][key] == ours["job"][key], (key, theirs["job"], ours["job"])
    assert theirs["run"]["runId"] == ours["run"]["runId"]
    for mine, client in zip(ours.get("outputs", []), theirs.get("outputs", [])):
        mine_stats = mine.get("outputFacets", {}).get("outputStatistics")
        if mine_stats is not None:
            assert client["outputFacets"]["outputStatistics"] == mine_stats, (
                client["outputFacets"]["outputStatistics"],
                mine_stats,
            )
    for mine, client in zip(ours.get("inputs", []), theirs.get("inputs", [])):
        assert (client["namespace"], client["name"]) == (mine["namespace"], mine["name"])
    counts[ours["eventType"]] = counts.get(ours["eventType"], 0) + 1
print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
