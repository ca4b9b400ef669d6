#!/usr/bin/env python3
"""Publish one invocation as raw JSON and wait for its completion (docs/wire-format.md).

Needs only pika (Debian: apt-get install python3-pika). Usage:

    /usr/bin/python3 publish_raw.py [AMQP_URL] [TASK] [ARGUMENTS_JSON]
    /usr/bin/python3 publish_raw.py amqp://guest:guest@127.0.0.1:5682/ echo '{"hello":"world"}'

Prints the completion as one JSON line; exits 0 only if it is Succeeded.
"""
import json
import sys
import uuid

import pika

INVOCATIONS = "RunnerService.Contracts:RunInvocation"    # publish here (fanout: the routing key is ignored)
COMPLETIONS = "RunnerService.Contracts:InvocationCompleted"  # every completion in the cluster is published here


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5682/"
    task = sys.argv[2] if len(sys.argv) > 2 else "echo"
    arguments = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"hello": "from python"}

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()

    # 1. Subscribe before publishing, or a fast completion is missed. The exchange is declared exactly as the
    #    service declares it (durable fanout), so declaring it here is harmless and makes the bind work even before
    #    the service has published its first completion. The queue is this process's own and goes away with it.
    channel.exchange_declare(COMPLETIONS, exchange_type="fanout", durable=True)
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(queue, COMPLETIONS)

    # 2. Publish the RunInvocation object itself: content type application/json, persistent.
    invocation_id = str(uuid.uuid4())
    invocation = {
        "invocationId": invocation_id,
        "taskName": task,
        "arguments": arguments,
        "timeout": 60,  # seconds; "00:01:00" works too
    }
    channel.confirm_delivery()  # basic_publish raises if the broker does not take the message
    channel.basic_publish(
        exchange=INVOCATIONS,
        routing_key="",
        body=json.dumps(invocation).encode("utf-8"),
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
    )

    # 3. Every completion arrives here (sub-invocations and other publishers' too): keep only ours. The fanout
    #    exchange carries MassTransit envelopes; the event itself is under "message".
    for method, _properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=120):
        if method is None:
            sys.exit("no completion within 120 s")
        completed = json.loads(body)["message"]
        if completed["invocationId"] == invocation_id:
            print(json.dumps(completed))
            break
    connection.close()
    sys.exit(0 if completed["status"] == "Succeeded" else 1)


if __name__ == "__main__":
    main()
