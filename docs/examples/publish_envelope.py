#!/usr/bin/env python3
"""Publish one invocation in MassTransit's envelope form, with its completion addressed to a queue of our own.

docs/wire-format.md explains each step. Needs only pika (Debian: apt-get install python3-pika). Usage:

    /usr/bin/python3 publish_envelope.py [AMQP_URL] [TASK] [ARGUMENTS_JSON]

Prints the completion as one JSON line; exits 0 only if it is Succeeded.
"""
import json
import sys
import uuid

import pika

INVOCATIONS = "RunnerService.Contracts:RunInvocation"


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5682/"
    task = sys.argv[2] if len(sys.argv) > 2 else "echo"
    arguments = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"hello": "from an envelope"}

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue

    # The envelope's responseAddress names our queue as a MassTransit address ("queue:<name>"): the completion comes
    # back in the envelope form too, the event under "message".
    invocation_id = str(uuid.uuid4())
    envelope = {
        "messageId": str(uuid.uuid4()),
        "messageType": ["urn:message:RunnerService.Contracts:RunInvocation"],
        "responseAddress": f"queue:{reply_queue}",
        "message": {"invocationId": invocation_id, "taskName": task, "arguments": arguments},
    }
    channel.confirm_delivery()
    channel.basic_publish(
        exchange=INVOCATIONS,
        routing_key="",
        body=json.dumps(envelope).encode("utf-8"),
        properties=pika.BasicProperties(content_type="application/vnd.masstransit+json", delivery_mode=2),
    )

    for method, _properties, body in channel.consume(reply_queue, auto_ack=True, inactivity_timeout=120):
        if method is None:
            sys.exit("no completion within 120 s")
        completed = json.loads(body)["message"]
        break
    connection.close()
    print(json.dumps(completed), flush=True)
    sys.exit(0 if completed["invocationId"] == invocation_id and completed["status"] == "Succeeded" else 1)


if __name__ == "__main__":
    main()
