"""Microsoft's Python Service Bus client on the other end of our Rust client: it reads
what the Rust client sent (`read`), or sends what the Rust client then reads (`send`).
Environment: SB_CONNECTION, SB_QUEUE. Prints what it read as JSON."""

import json
import os
import sys

from azure.servicebus import ServiceBusClient, ServiceBusMessage

conn, queue = os.environ["SB_CONNECTION"], os.environ["SB_QUEUE"]
with ServiceBusClient.from_connection_string(conn) as client:
    if sys.argv[1] == "send":
        with client.get_queue_sender(queue) as sender:
            sender.send_messages(
                ServiceBusMessage('{"Id":"500B","Status":"Open"}', application_properties={"type": "case.opened"}, message_id="py-1")
            )
        print(json.dumps({"sent": 1}))
    else:
        with client.get_queue_receiver(queue, max_wait_time=3) as receiver:
            got = receiver.receive_messages(max_message_count=10, max_wait_time=3)
            out = [
                {
                    "body": str(m),
                    "id": m.message_id,
                    "properties": {k.decode(): v.decode() for k, v in (m.application_properties or {}).items()},
                }
                for m in got
            ]
            for m in got:
                receiver.complete_message(m)
        print(json.dumps(out))
