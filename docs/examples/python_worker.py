#!/usr/bin/env python3
"""A complete RunnerService worker in Python 3, standard library only.

It speaks the worker protocol, version 1 (docs/protocol.md), with no help from the C# SDK:

    stdout  hello, then any invoke/log/progress/wait lines, then exactly one result or error
    stdin   one invocation line; after each wait, one resume line

Tasks:
    py-echo  ARGS        -> ARGS (the arguments, unchanged)
    py-add   {a, b}      -> a + b
    py-fib   {n}         -> fib(n), computed with sub-invocations of py-fib (n-1 and n-2)
                            and a wait for both; n < 2 returns n
    anything else        -> error of type UnknownTask

Run it under a runner:
    Runner__WorkerCommand=/usr/bin/python3
    Runner__WorkerArguments__0=/path/to/docs/examples/python_worker.py

Try it by hand (a task without sub-invocations):
    echo '{"type":"invocation","protocol":1,"invocationId":"00000000-0000-0000-0000-000000000001","taskName":"py-add","arguments":{"a":2,"b":3}}' \
        | python3 docs/examples/python_worker.py
"""

import ctypes
import json
import os
import signal
import sys
import traceback
import uuid

PROTOCOL_VERSION = 1

# Exit codes (the same as the C# SDK's WorkerHost).
EXIT_OK = 0
EXIT_PROTOCOL_ERROR = 2
EXIT_PARENT_GONE = 70

# stdout carries protocol lines only. Keep the real stdout for them and send everything else that a
# task might print() to stderr, which the runner captures as the invocation's log.
_protocol_out = sys.stdout.buffer
sys.stdout = sys.stderr
_protocol_in = sys.stdin.buffer


def die_with_parent():
    """Ask the kernel to SIGKILL this process when the runner dies (even while it is paused by SIGSTOP).

    Returns False when the runner is already gone. Linux only; elsewhere it does nothing.
    (Alternative without code: run the worker as `setpriv --pdeathsig KILL python3 worker.py`.)
    """
    if not sys.platform.startswith("linux"):
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return True
    try:
        expected = int(os.environ.get("RUNNER_PARENT_PID", "0"))
    except ValueError:
        expected = 0
    # The runner may have died between fork and prctl; then this process was re-parented already.
    return expected <= 0 or os.getppid() == expected


def send(message):
    """Write one protocol message: compact UTF-8 JSON on one line, then flush."""
    line = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    _protocol_out.write(line.encode("utf-8") + b"\n")
    _protocol_out.flush()


def receive():
    """Read the next message from the runner; None when stdin is closed."""
    line = _protocol_in.readline()
    if not line:
        return None
    message = json.loads(line.decode("utf-8"))
    if not isinstance(message, dict) or "type" not in message:
        raise ProtocolError("the runner sent a line that is not a protocol message")
    return message


def log(text):
    """A log line for this invocation. stderr is the task log; the 'log' message is the structured alternative."""
    print(text, file=sys.stderr, flush=True)


class ProtocolError(Exception):
    pass


class TaskFailed(Exception):
    """Raise from a task to fail it with a chosen error type."""

    def __init__(self, message, error_type="TaskError", details=None, retryable=False):
        super().__init__(message)
        self.error_type = error_type
        self.details = details
        self.retryable = retryable


class Context:
    """What a task sees: its invocation and a way to start and await sub-invocations."""

    def __init__(self, invocation):
        self.invocation_id = invocation["invocationId"]
        self.task_name = invocation["taskName"]
        self.arguments = invocation.get("arguments")
        self.attempt = invocation.get("attempt", 1)
        self.parent_invocation_id = invocation.get("parentInvocationId")
        self.trace_parent = invocation.get("traceParent")

    def number(self, name):
        args = self.arguments if isinstance(self.arguments, dict) else {}
        value = args.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TaskFailed(f"argument '{name}' must be a number", "InvalidArguments")
        return value

    def invoke(self, task_name, arguments=None):
        """Start a sub-invocation now (it runs in its own process); returns its id. The worker chooses the id."""
        invocation_id = str(uuid.uuid4())
        message = {"type": "invoke", "invocationId": invocation_id, "taskName": task_name}
        if arguments is not None:
            message["arguments"] = arguments
        send(message)
        return invocation_id

    def wait_all(self, invocation_ids):
        """Wait until all are final and return their results in order; raise if one did not succeed.

        After the 'wait' line the runner pauses this process (SIGSTOP) and gives its slot to other work.
        When everything is final it writes the 'resume' line to stdin and continues the process (SIGCONT),
        so the read below simply returns once the results are there.
        """
        send({"type": "wait", "invocationIds": list(invocation_ids)})
        reply = receive()
        if reply is None:
            raise ProtocolError("stdin closed while waiting for a resume")
        if reply.get("type") != "resume":
            raise ProtocolError(f"expected a resume message, got '{reply.get('type')}'")
        by_id = {r["invocationId"].lower(): r for r in reply.get("results", [])}
        results = []
        for invocation_id in invocation_ids:
            outcome = by_id.get(invocation_id.lower())
            if outcome is None:
                raise ProtocolError(f"the resume message has no outcome for {invocation_id}")
            if outcome.get("status") != "Succeeded":
                error = outcome.get("error") or {}
                raise TaskFailed(
                    f"sub-invocation {invocation_id} ended {outcome.get('status')}: "
                    f"{error.get('type', '?')}: {error.get('message', '')}",
                    "DependencyFailed",
                    error.get("details"),
                )
            results.append(outcome.get("result"))
        return results


# ---------------------------------------------------------------------------------------------- tasks

def py_echo(ctx):
    log(f"py-echo: returning the arguments of {ctx.invocation_id}")
    send({"type": "log", "level": "info", "message": "py-echo says hello through a log message"})
    send({"type": "progress", "fraction": 1.0, "message": "done"})
    return ctx.arguments


def py_add(ctx):
    return ctx.number("a") + ctx.number("b")


def py_fib(ctx):
    n = ctx.number("n")
    if n < 2:
        return n
    a = ctx.invoke("py-fib", {"n": n - 1})
    b = ctx.invoke("py-fib", {"n": n - 2})
    x, y = ctx.wait_all([a, b])
    return x + y


TASKS = {
    "py-echo": py_echo,
    "py-add": py_add,
    "py-fib": py_fib,
}


# ------------------------------------------------------------------------------------------ main loop

def error_message(error_type, message, details=None, retryable=False):
    error = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = details
    return {"type": "error", "error": error, "retryable": retryable}


def main():
    if not die_with_parent():
        return EXIT_PARENT_GONE

    # 1. hello first: the protocol version this worker speaks.
    send({"type": "hello", "protocol": PROTOCOL_VERSION, "pid": os.getpid()})

    # 2. exactly one invocation.
    try:
        invocation = receive()
    except (ValueError, ProtocolError) as ex:
        send(error_message("ProtocolViolation", f"the runner sent a line that is not a protocol message: {ex}"))
        return EXIT_PROTOCOL_ERROR
    if invocation is None:
        return EXIT_OK  # stdin closed before any work was handed out
    if invocation.get("type") != "invocation":
        send(error_message("ProtocolViolation", f"expected an 'invocation' message first, got '{invocation.get('type')}'"))
        return EXIT_PROTOCOL_ERROR
    if invocation.get("protocol", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        send(error_message("ProtocolViolation",
                           f"protocol version {invocation.get('protocol')} is not supported; "
                           f"this worker speaks {PROTOCOL_VERSION}"))
        return EXIT_PROTOCOL_ERROR

    task = TASKS.get(invocation.get("taskName"))
    if task is None:
        send(error_message("UnknownTask",
                           f"unknown task '{invocation.get('taskName')}'; this worker knows: {', '.join(sorted(TASKS))}"))
        return EXIT_OK

    # 3. run it; 4. exactly one result or error; 5. exit.
    try:
        result = task(Context(invocation))
    except TaskFailed as ex:
        send(error_message(ex.error_type, str(ex), ex.details, ex.retryable))
        return EXIT_OK
    except ProtocolError as ex:
        send(error_message("ProtocolViolation", str(ex)))
        return EXIT_PROTOCOL_ERROR
    except Exception as ex:  # noqa: BLE001 - any other failure of the task is a TaskError
        send(error_message("TaskError", f"{type(ex).__name__}: {ex}", traceback.format_exc()))
        return EXIT_OK

    message = {"type": "result"}
    if result is not None:
        message["result"] = result
    send(message)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
