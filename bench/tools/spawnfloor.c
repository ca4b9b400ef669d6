/*
 * spawnfloor: what the machine itself can do, without .NET on the parent side.
 *
 *   spawnfloor N PARALLEL CMD [ARGS...]
 *
 * Starts CMD N times with posix_spawn (vfork+exec), stdin and stdout on pipes, the way the runner does.
 * Each start is timed from just before posix_spawn until the first '\n' arrives on the child's stdout
 * ("spawn -> first reply"); then stdin is closed (a worker that gets no invocation exits at once), stdout is
 * drained and the child reaped ("cycle": spawn -> hello -> exit -> reaped, what one fresh process costs a
 * one-at-a-time caller). PARALLEL loops run at once (fork()ed copies of this program), so the total
 * rate is the machine's process-start floor for CMD with PARALLEL concurrent starters.
 *
 * Prints one JSON object: {"n":..,"parallel":..,"p50_ms":..,"p99_ms":..,"min_ms":..,"max_ms":..,"rate_per_s":..,
 *                        "cycle_p50_ms":..,"cycle_p99_ms":..}
 * Built by bench/run.sh with cc; the bench runs it when present.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int one(char **cmd, double *elapsed, double *cycle)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    pid_t pid;
    double start = now_ms();
    int rc = posix_spawn(&pid, cmd[0], &fa, NULL, cmd, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(in[1]);
        close(out[0]);
        return -1;
    }
    char buf[512];
    int got = 0, seen = 0;
    while (!seen) {
        int k = read(out[0], buf, sizeof buf);
        if (k <= 0)
            break;
        got += k;
        seen = memchr(buf, '\n', k) != NULL;
    }
    *elapsed = now_ms() - start;
    close(in[1]);
    while (read(out[0], buf, sizeof buf) > 0) {
    }
    close(out[0]);
    int status;
    waitpid(pid, &status, 0);
    *cycle = now_ms() - start;
    return seen ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s N PARALLEL CMD [ARGS...]\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), par = atoi(argv[2]);
    if (n < 1 || par < 1)
        return 2;
    double *times = mmap(NULL, sizeof(double) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double *cycles = mmap(NULL, sizeof(double) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int *failed = mmap(NULL, sizeof(int) * par, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double t0 = now_ms();
    for (int p = 0; p < par; p++) {
        if (fork() == 0) {
            for (int i = p; i < n; i += par)
                if (one(argv + 3, &times[i], &cycles[i]) != 0)
                    failed[p]++;
            _exit(0);
        }
    }
    for (int p = 0; p < par; p++)
        wait(NULL);
    double total = now_ms() - t0;
    int fails = 0;
    for (int p = 0; p < par; p++)
        fails += failed[p];
    qsort(times, n, sizeof(double), cmp);
    qsort(cycles, n, sizeof(double), cmp);
    printf("{\"n\":%d,\"parallel\":%d,\"failed\":%d,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"min_ms\":%.4f,\"max_ms\":%.4f,\"rate_per_s\":%.1f,"
           "\"cycle_p50_ms\":%.4f,\"cycle_p99_ms\":%.4f}\n",
           n, par, fails, times[n / 2], times[(int)(n * 0.99)], times[0], times[n - 1], n / total * 1e3,
           cycles[n / 2], cycles[(int)(n * 0.99)]);
    return fails ? 1 : 0;
}
