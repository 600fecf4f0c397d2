"""Microsoft's Python Service Bus client (azure-servicebus), unchanged, against the
Service Bus sandbox: CBS tokens, sends and batches, peek-lock receives and every
settlement, lock renewal and expiry, dead letters, deferral, scheduling, duplicate
detection and sessions. Prints what it saw as JSON; any assert failing exits non-zero.

Environment: SB_CONNECTION (the sandbox's connection string). Queues the test creates:
`cases` (2 s locks, 3 deliveries), `cases-dedup` (duplicate detection), `cases-sessions`
(sessions)."""

import datetime
import json
import os
import time

from azure.servicebus import (
    NEXT_AVAILABLE_SESSION,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusSubQueue,
)
from azure.servicebus.exceptions import (
    MessageLockLostError,
    ServiceBusAuthenticationError,
    ServiceBusError,
)

conn = os.environ["SB_CONNECTION"]
found = {}


def now():
    return datetime.datetime.now(datetime.timezone.utc)


with ServiceBusClient.from_connection_string(conn) as client:
    with client.get_queue_sender("cases") as sender, client.get_queue_receiver("cases", max_wait_time=2) as receiver:
        # A message and a batch, received with their properties.
        sender.send_messages(
            ServiceBusMessage(
                '{"Id":"500A"}',
                application_properties={"type": "case.closed"},
                message_id="m-1",
                subject="case",
                content_type="application/json",
                correlation_id="corr-1",
            )
        )
        batch = sender.create_message_batch()
        for i in range(3):
            batch.add_message(ServiceBusMessage(f"batch {i}"))
        sender.send_messages(batch)
        got = []
        deadline = time.time() + 10
        while len(got) < 4 and time.time() < deadline:
            got += receiver.receive_messages(max_message_count=10, max_wait_time=2)
        assert [str(m) for m in got] == ['{"Id":"500A"}', "batch 0", "batch 1", "batch 2"], [str(m) for m in got]
        first = got[0]
        assert first.message_id == "m-1"
        assert first.application_properties == {b"type": b"case.closed"}, first.application_properties
        assert first.subject == "case" and first.content_type == "application/json"
        assert first.correlation_id == "corr-1"
        assert first.lock_token is not None and first.locked_until_utc > now()
        assert first.enqueued_time_utc <= now()
        sequence = [m.sequence_number for m in got]
        assert sequence == sorted(sequence) and len(set(sequence)) == 4, sequence
        for m in got:
            receiver.complete_message(m)
        assert receiver.receive_messages(max_wait_time=1) == []
        found["received"] = len(got)

        # Abandoned until the entity's MaxDeliveryCount (3): then in the dead-letter queue.
        sender.send_messages(ServiceBusMessage("poison", application_properties={"kind": "bad"}))
        counts = []
        for _ in range(3):
            (m,) = receiver.receive_messages(max_wait_time=3)
            counts.append(m.delivery_count or 0)
            receiver.abandon_message(m)
        assert receiver.receive_messages(max_wait_time=1) == []
        found["delivery_counts"] = counts
        with client.get_queue_receiver("cases", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=2) as dlq:
            (d,) = dlq.receive_messages(max_wait_time=3)
            assert str(d) == "poison"
            assert d.dead_letter_reason == "MaxDeliveryCountExceeded", d.dead_letter_reason
            assert d.dead_letter_source == "cases", d.dead_letter_source
            assert d.application_properties[b"kind"] == b"bad"
            dlq.complete_message(d)

        # Dead-lettered with a reason.
        sender.send_messages(ServiceBusMessage("bad json"))
        (m,) = receiver.receive_messages(max_wait_time=3)
        receiver.dead_letter_message(m, reason="Invalid", error_description="not JSON")
        with client.get_queue_receiver("cases", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=2) as dlq:
            (d,) = dlq.receive_messages(max_wait_time=3)
            found["dead_letter"] = [str(d), d.dead_letter_reason, d.dead_letter_error_description]
            dlq.complete_message(d)

        # Deferred, then received by sequence number.
        sender.send_messages(ServiceBusMessage("later"))
        (m,) = receiver.receive_messages(max_wait_time=3)
        receiver.defer_message(m)
        assert receiver.receive_messages(max_wait_time=1) == []
        (d,) = receiver.receive_deferred_messages([m.sequence_number])
        assert str(d) == "later"
        receiver.complete_message(d)

        # A lock renewed, and a lock that runs out (2 s).
        sender.send_messages(ServiceBusMessage("slow"))
        (m,) = receiver.receive_messages(max_wait_time=3)
        before = m.locked_until_utc
        time.sleep(0.5)
        after = receiver.renew_message_lock(m)
        assert after > before, (before, after)
        receiver.complete_message(m)
        sender.send_messages(ServiceBusMessage("expires"))
        (m,) = receiver.receive_messages(max_wait_time=3)
        time.sleep(2.5)
        try:
            receiver.complete_message(m)
            raise AssertionError("a lock that ran out still completed")
        except MessageLockLostError:
            found["lock_lost"] = True
        (again,) = receiver.receive_messages(max_wait_time=3)
        assert str(again) == "expires" and again.delivery_count == 1, again.delivery_count
        receiver.complete_message(again)

        # Scheduled (one cancelled), peeked, delivered when due.
        at = now() + datetime.timedelta(seconds=2)
        (kept,) = sender.schedule_messages(ServiceBusMessage("scheduled"), at)
        (cancelled,) = sender.schedule_messages(ServiceBusMessage("cancelled"), at)
        sender.cancel_scheduled_messages(cancelled)
        peeked = receiver.peek_messages(max_message_count=10)
        assert [str(p) for p in peeked] == ["scheduled"], [str(p) for p in peeked]
        assert peeked[0].sequence_number == kept
        assert receiver.receive_messages(max_wait_time=1) == []
        due = []
        deadline = time.time() + 5
        while not due and time.time() < deadline:
            due = receiver.receive_messages(max_wait_time=1)
        assert [str(m) for m in due] == ["scheduled"]
        receiver.complete_message(due[0])

    # Duplicate detection by message id.
    with client.get_queue_sender("cases-dedup") as sender, client.get_queue_receiver("cases-dedup", max_wait_time=2) as receiver:
        sender.send_messages(ServiceBusMessage("first", message_id="evt-1"))
        sender.send_messages(ServiceBusMessage("second", message_id="evt-1"))
        got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
        found["deduplicated"] = [str(m) for m in got]
        for m in got:
            receiver.complete_message(m)

    # Sessions: a message without one is refused; a named session, its state, the next one.
    with client.get_queue_sender("cases-sessions") as sender:
        sender.send_messages(
            [ServiceBusMessage(f"A{i}", session_id="A") for i in range(3)]
            + [ServiceBusMessage(f"B{i}", session_id="B") for i in range(2)]
        )
        try:
            sender.send_messages(ServiceBusMessage("no session"))
            raise AssertionError("a message without a session was accepted")
        except ServiceBusError:
            found["sessionless_refused"] = True
    with client.get_queue_receiver("cases-sessions", session_id="B", max_wait_time=2) as receiver:
        got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
        assert [str(m) for m in got] == ["B0", "B1"]
        assert receiver.session.session_id == "B"
        receiver.session.set_state(b"step-2")
        assert receiver.session.get_state() == b"step-2"
        receiver.session.renew_lock()
        for m in got:
            receiver.complete_message(m)
    with client.get_queue_receiver("cases-sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=2) as receiver:
        got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
        found["next_session"] = [receiver.session.session_id, [str(m) for m in got]]
        for m in got:
            receiver.complete_message(m)

    # A topic: each subscription gets what its rules let through.
    with client.get_topic_sender("case-events") as sender:
        sender.send_messages(
            [
                ServiceBusMessage("closed big", application_properties={"type": "case.closed", "amount": 1200}),
                ServiceBusMessage("closed small", application_properties={"type": "case.closed", "amount": 50}),
                ServiceBusMessage("invoice", subject="invoice", application_properties={"type": "billing"}),
            ]
        )
    topics = {}
    for name in ["all", "closed", "billing"]:
        with client.get_subscription_receiver("case-events", name, max_wait_time=2) as receiver:
            got = receiver.receive_messages(max_message_count=10, max_wait_time=2)
            topics[name] = sorted(str(m) for m in got)
            for m in got:
                receiver.complete_message(m)
    found["topics"] = topics

# A wrong key: the token is refused.
wrong = conn.replace("SharedAccessKey=", "SharedAccessKey=wrong")
with ServiceBusClient.from_connection_string(wrong, retry_total=0) as client:
    try:
        with client.get_queue_sender("cases") as sender:
            sender.send_messages(ServiceBusMessage("x"))
        raise AssertionError("a wrong key was accepted")
    except ServiceBusAuthenticationError:
        found["wrong_key"] = "refused"

print(json.dumps(found))
