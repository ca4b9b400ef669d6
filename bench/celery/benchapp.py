"""The Celery side of the bench (issue 14, item 3): one trivial task, the equivalent of RunnerService's `echo`.

Configured entirely by environment, so the driver (driver.py) and the worker it starts agree:
  BENCH_CELERY_BROKER   amqp:// URL of the bench's RabbitMQ, on a virtual host of its own
  BENCH_CELERY_BACKEND  result backend (redis://127.0.0.1:6399/0 from bench/run.sh, or rpc://)
  BENCH_CELERY_MODE     defaults | acks_late   (acks_late: task_acks_late=True + worker_prefetch_multiplier=1,
                        the delivery guarantee RunnerService gives: a delivery is acknowledged after the run,
                        and a worker holds no more deliveries than it has slots)
The fresh-process configuration is `acks_late` plus the worker flag --max-tasks-per-child=1 (driver.py).
"""
import os

from celery import Celery

app = Celery(
    "benchapp",
    broker=os.environ["BENCH_CELERY_BROKER"],
    backend=os.environ["BENCH_CELERY_BACKEND"],
)

if os.environ.get("BENCH_CELERY_MODE", "defaults") == "acks_late":
    app.conf.task_acks_late = True
    app.conf.worker_prefetch_multiplier = 1

# Not a tuning knob: silences the Celery 5.x deprecation warning about retrying the broker connection at start-up.
app.conf.broker_connection_retry_on_startup = True


@app.task(name="echo")
def echo(arguments):
    """Returns its arguments, as RunnerService's stock `echo` task does."""
    return arguments
