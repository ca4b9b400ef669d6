#!/usr/bin/env python3
"""Publish one invocation as raw JSON, receive its completion on a queue of our own, read its status over HTTP.

docs/wire-format.md explains each step. Needs only pika (Debian: apt-get install python3-pika). Usage:

    /usr/bin/python3 publish_raw.py [AMQP_URL] [HTTP_URL] [TASK] [ARGUMENTS_JSON]
    /usr/bin/python3 publish_raw.py amqp://guest:guest@127.0.0.1:5682/ http://127.0.0.1:5690 echo '{"hello":"world"}'

Prints two JSON lines, the completion and then the status report, and exits 0 only if the invocation Succeeded.
"""
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import pika

INVOCATIONS = "RunnerService.Contracts:RunInvocation"  # publish here (fanout: the routing key is ignored)


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5682/"
    http = (sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:5690").rstrip("/")
    task = sys.argv[3] if len(sys.argv) > 3 else "echo"
    arguments = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {"hello": "from python"}

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()

    # 1. A queue of our own for the reply: the broker names it, and it goes away with this process. Nothing else is
    #    sent to it, so there is nothing to filter.
    reply_queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue

    # 2. Publish the RunInvocation object itself: content type application/json, persistent, reply_to our queue.
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
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2, reply_to=reply_queue),
    )

    # 3. The completion arrives on our queue as the raw event object (content type application/json).
    completed = None
    for method, _properties, body in channel.consume(reply_queue, auto_ack=True, inactivity_timeout=120):
        if method is None:
            sys.exit("no completion within 120 s")
        completed = json.loads(body)
        break
    connection.close()
    print(json.dumps(completed), flush=True)

    # 4. The saga's record over HTTP. It records the completion a moment after it is sent: poll until it shows.
    report = None
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{http}/invocations/{invocation_id}", timeout=10) as response:
                report = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        if report is not None and report["status"] == completed["status"]:
            break
        time.sleep(0.2)
    print(json.dumps(report), flush=True)
    sys.exit(0 if completed["status"] == "Succeeded" and report is not None else 1)


if __name__ == "__main__":
    main()
