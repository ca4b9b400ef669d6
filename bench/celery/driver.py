"""Drives one Celery configuration for the bench (issue 14, item 3) and prints its figures as one JSON line.

  /usr/bin/python3 bench/celery/driver.py --broker amqp://guest:guest@127.0.0.1:5752/VHOST \
      --backend redis://127.0.0.1:6399/0 --mode defaults|acks_late|fresh --concurrency 2 \
      --n 2000 --warmup 300 --runs 5 [--latency-n 200] [--pid-dir DIR]

It starts one Celery worker (prefork pool, --concurrency slots; `fresh` adds --max-tasks-per-child=1) in a session of
its own, waits until it answers, runs --warmup tasks, then --runs times: publishes --n `echo` tasks as fast as it can
and waits for every result. Throughput = n / (first publish -> last result). With --latency-n, each run also times
that many tasks one at a time (publish -> result) and reports the p50. The worker is stopped (SIGTERM to its process
group, SIGKILL after 20 s) when the driver ends, also on SIGTERM/SIGINT; its pid is kept in --pid-dir meanwhile so
bench/run.sh's exit trap can stop it if the driver itself is killed.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = {"text": "hi"}  # the bench's echo arguments
CLK = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"[celery {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tree_cpu_ms(pid):
    """CPU of a process, its reaped children and its live children (one level: the prefork pool), in ms."""
    def stat(p):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return [int(x) for x in fields[11:15]]  # utime stime cutime cstime
        except (FileNotFoundError, ProcessLookupError):
            return [0, 0, 0, 0]
    total = sum(stat(pid))
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                total += sum(stat(child)[:2])
    except FileNotFoundError:
        pass
    return total * 1000.0 / CLK


def percentile(values, p):
    s = sorted(values)
    if not s:
        return None
    rank = p / 100 * (len(s) - 1)
    lo, hi = int(rank), min(int(rank) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


class Worker:
    def __init__(self, options, env):
        command = [sys.executable, "-m", "celery", "-A", "benchapp", "worker", "--pool", "prefork",
                   "--concurrency", str(options.concurrency), "--loglevel", "WARNING",
                   "--hostname", f"bench-{options.mode}@%h"]
        if options.mode == "fresh":
            command += ["--max-tasks-per-child", "1"]
        self.log_path = os.path.join(options.pid_dir, f"worker-{options.mode}-{os.getpid()}.log")
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=HERE, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.pid_file = os.path.join(options.pid_dir, f"{self.process.pid}.pid")
        with open(self.pid_file, "w") as f:
            f.write(str(self.process.pid))
        self.command = command
        log(f"worker pid {self.process.pid}: {' '.join(command)}")

    def stop(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                log(f"worker {self.process.pid} ignored SIGTERM for 20 s: SIGKILL")
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.log_file.close()
        try:
            os.remove(self.pid_file)
        except FileNotFoundError:
            pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--mode", choices=["defaults", "acks_late", "fresh"], required=True)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-n", type=int, default=0)
    # How the results are collected: AsyncResult.get() one after the other (they arrive meanwhile; default), or
    # ResultSet.join_native() (measured slower here: a wave of 4 took ~0.5 s).
    parser.add_argument("--collect", choices=["get", "join_native"], default="get")
    parser.add_argument("--pid-dir", default=os.environ.get("BENCH_CELERY_DIR", "/tmp/bench-celery"))
    options = parser.parse_args()
    os.makedirs(options.pid_dir, exist_ok=True)

    env = dict(os.environ)
    env["BENCH_CELERY_BROKER"] = options.broker
    env["BENCH_CELERY_BACKEND"] = options.backend
    env["BENCH_CELERY_MODE"] = "defaults" if options.mode == "defaults" else "acks_late"
    env["PYTHONPATH"] = HERE
    os.environ.update(env)
    sys.path.insert(0, HERE)

    # Stop the worker on SIGTERM/SIGINT too (finally below runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from celery import __version__ as celery_version
    from celery.result import ResultSet
    import benchapp

    echo = benchapp.echo
    worker = Worker(options, env)
    result = {"mode": options.mode, "celery": celery_version, "concurrency": options.concurrency, "n": options.n,
              "warmup": options.warmup, "collect": options.collect, "backend": options.backend.split(":")[0], "worker_command": worker.command[2:],
              "throughput": [], "latency_p50_ms": [], "latency_p99_ms": [], "runs": []}
    try:
        started = time.perf_counter()
        echo.delay(ARGS).get(timeout=120)
        result["seconds_until_first_result"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        # Warm-up in waves of 2 x slots, as the bench warms up RunnerService.
        wave = 2 * options.concurrency
        for done in range(0, options.warmup, wave):
            for pending in [echo.delay(ARGS) for _ in range(min(wave, options.warmup - done))]:
                pending.get(timeout=120)
        result["warmup_seconds"] = round(time.perf_counter() - started, 2)
        time.sleep(1)
        log(f"{options.mode}: worker answering; warm-up of {options.warmup} took {result['warmup_seconds']} s")

        for run in range(options.runs):
            cpu_worker = tree_cpu_ms(worker.process.pid)
            cpu_client = time.process_time()
            load = open("/proc/loadavg").read().split()[0]
            t0 = time.perf_counter()
            pending = [echo.delay(ARGS) for _ in range(options.n)]
            published = time.perf_counter()
            if options.collect == "join_native":
                values = ResultSet(pending).join_native(timeout=max(600, options.n), propagate=True)
            else:
                values = [p.get(timeout=600) for p in pending]
            elapsed = time.perf_counter() - t0
            wrong = sum(1 for v in values if v != ARGS)
            if wrong:
                raise RuntimeError(f"{wrong} of {options.n} results differ from the arguments")
            per_second = options.n / elapsed
            run_details = {
                "per_second": round(per_second, 2),
                "seconds": round(elapsed, 3),
                "publish_seconds": round(published - t0, 3),
                "cpu_ms_per_task_worker": round((tree_cpu_ms(worker.process.pid) - cpu_worker) / options.n, 3),
                "cpu_ms_per_task_client": round((time.process_time() - cpu_client) * 1000 / options.n, 3),
                "loadavg_before": load,
            }
            if options.latency_n > 0:
                samples = []
                for _ in range(options.latency_n):
                    t = time.perf_counter()
                    echo.delay(ARGS).get(timeout=60)
                    samples.append((time.perf_counter() - t) * 1000)
                result["latency_p50_ms"].append(round(percentile(samples, 50), 3))
                result["latency_p99_ms"].append(round(percentile(samples, 99), 3))
                run_details["latency_p50_ms"] = result["latency_p50_ms"][-1]
            result["throughput"].append(round(per_second, 2))
            result["runs"].append(run_details)
            log(f"{options.mode} run {run + 1}: {per_second:.1f}/s ({elapsed:.2f} s for {options.n})"
                + (f", one at a time p50 {result['latency_p50_ms'][-1]:.2f} ms" if options.latency_n else ""))
    finally:
        worker.stop()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
