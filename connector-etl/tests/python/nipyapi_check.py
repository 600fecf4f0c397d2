"""Drives the NiFi fake with nipyapi (PyPI), the NiFi client generated from NiFi's own
API definition, unchanged: a token from /access/token, the version, the root group, the
process groups and processors, a processor started and stopped through its revision (and
a stale revision refused), a process group scheduled as a whole, the controller status,
the bulletin board with filters, and a provenance query through its life-cycle. Prints
one summary line; exits non-zero on any difference.

Usage: nipyapi_check.py BASE_URL USER PASSWORD
"""
import sys

import nipyapi
from nipyapi.nifi.rest import ApiException

base, user, password = sys.argv[1:4]
nipyapi.config.nifi_config.host = base + "/nifi-api"

# No token: refused.
try:
    nipyapi.nifi.FlowApi().get_about_info()
    raise AssertionError("a call without a token was answered")
except ApiException as e:
    assert e.status == 401, e.status

token = nipyapi.nifi.AccessApi().create_access_token(username=user, password=password)
nipyapi.security.set_service_auth_token(token, service="nifi")

about = nipyapi.system.get_nifi_version_info()
assert about.ni_fi_version.startswith("2."), about

root = nipyapi.canvas.get_root_pg_id()
groups = nipyapi.canvas.list_all_process_groups(root)
ingest = [g for g in groups if g.component.name == "moodbridge-ingest"]
assert len(ingest) == 1, [g.component.name for g in groups]
ingest = ingest[0]
assert ingest.component.parent_group_id == root
assert ingest.stopped_count == 2, ingest.stopped_count

processors = nipyapi.canvas.list_all_processors(root)
names = sorted(p.component.name for p in processors)
assert names == ["Generate cases", "Log cases"], names
generate = [p for p in processors if p.component.name == "Generate cases"][0]
assert generate.component.state == "STOPPED"
assert generate.status.aggregate_snapshot.active_thread_count == 0

# Started through its revision; nipyapi waits until it runs.
assert nipyapi.canvas.schedule_processor(generate.id, True) is True
running = nipyapi.canvas.get_processor(generate.id, "id")
assert running.component.state == "RUNNING"
assert running.revision.version == generate.revision.version + 1
assert running.status.aggregate_snapshot.active_thread_count == 1

# A stale revision is refused with 409.
stale = nipyapi.nifi.ProcessorRunStatusEntity(revision=generate.revision, state="STOPPED")
try:
    nipyapi.nifi.ProcessorsApi().update_run_status5(body=stale, id=generate.id)
    raise AssertionError("a stale revision was accepted")
except ApiException as e:
    assert e.status == 409, e.status
    assert "not the most up-to-date revision" in e.body, e.body

status = nipyapi.nifi.FlowApi().get_controller_status().controller_status
assert (status.running_count, status.stopped_count, status.active_thread_count) == (1, 1, 1), status

# The whole group: started, then stopped (nipyapi waits for the threads to end).
assert nipyapi.canvas.schedule_process_group(ingest.id, True) is True
group = nipyapi.canvas.get_process_group(ingest.id, "id")
assert group.running_count == 2, group.running_count
assert nipyapi.canvas.schedule_process_group(ingest.id, False) is True
group = nipyapi.canvas.get_process_group(ingest.id, "id")
assert (group.running_count, group.stopped_count) == (0, 2)
assert group.status.aggregate_snapshot.active_thread_count == 0

bulletins = nipyapi.bulletins.get_bulletin_board()
assert len(bulletins) >= 1
assert bulletins[0].level == "WARNING" and "80% full" in bulletins[0].message, bulletins[0]
assert nipyapi.bulletins.get_bulletin_board(source_name="^Log") == []
assert len(nipyapi.bulletins.get_bulletin_board(pg_id=ingest.id)) == len(bulletins)

# Provenance: submitted, not finished at once; polled; deleted; gone.
api = nipyapi.nifi.ProvenanceApi()
request = nipyapi.nifi.ProvenanceRequestDTO(max_results=100, summarize=True, incremental_results=False)
submitted = api.submit_provenance_request(
    body=nipyapi.nifi.ProvenanceEntity(provenance=nipyapi.nifi.ProvenanceDTO(request=request))
)
query = submitted.provenance
assert query.finished is False
done = api.get_provenance(query.id).provenance
assert done.finished is True and done.percent_completed == 100
events = done.results.provenance_events
types = sorted(e.event_type for e in events)
# Generate started alone; the group's start started Log only (Generate was running).
assert types == ["CREATE", "RECEIVE"], types
assert all(e.component_id in (p.id for p in processors) for e in events)
api.delete_provenance(query.id)
try:
    api.get_provenance(query.id)
    raise AssertionError("a deleted query was answered")
except ApiException as e:
    assert e.status == 404, e.status

print(f"nifi={about.ni_fi_version} groups={len(groups)} processors={len(processors)} events={len(events)} bulletins={len(bulletins)}")
