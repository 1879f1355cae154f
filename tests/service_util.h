/* Helpers of the job-service tests: start and stop ltri-worker --redis and
 * ltri-submit as processes, read a job's hash, wait for a job's answer, and
 * the one-shot answer a job must equal. Every wait is bounded. */
#ifndef LTRI_TESTS_SERVICE_UTIL_H
#define LTRI_TESTS_SERVICE_UTIL_H

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis_fixture.h"
#include "test_util.h"

#define SVC_WORKER LTRI_BINARY_DIR "/ltri-worker"
#define SVC_SUBMIT LTRI_BINARY_DIR "/ltri-submit"
#define SVC_MODEL LTRI_TEST_DATA "/models/llama3-gqa-bf16"

static inline double svc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs `sh -c "exec CMD"` in the background; the pid is CMD's own. */
static inline pid_t svc_spawn(const char *cmd) {
    char line[8200]; /* "exec " + the longest command the tests build */
    snprintf(line, sizeof(line), "exec %s", cmd);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", line, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The exit status of pid within timeout_s: its exit code, 128 + signal when
 * killed, -1 when it is still running (then it is killed). */
static inline int svc_wait(pid_t pid, double timeout_s) {
    double t0 = svc_now();
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        if (r < 0) return -2;
        if (svc_now() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        redis_fixture_sleep_ms(20);
    }
}

/* ltri-worker --redis on the test model, CPU backend; log to log_path. */
static inline pid_t svc_start_worker(const redis_fixture *f, const char *extra, const char *log_path) {
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "%s --redis redis://127.0.0.1:%d --model %s --backend cpu --max-context 2048 %s </dev/null "
             ">>%s 2>&1",
             SVC_WORKER, f->port, SVC_MODEL, extra ? extra : "", log_path);
    return svc_spawn(cmd);
}

/* A field of a job's hash (malloc'ed; NULL when missing). */
static inline char *svc_hget(redisContext *c, const char *job_id, const char *field) {
    redisReply *r = redisCommand(c, "HGET ltri:job:%s %s", job_id, field);
    char *v = NULL;
    if (r && r->type == REDIS_REPLY_STRING) {
        v = malloc(r->len + 1);
        memcpy(v, r->str, r->len);
        v[r->len] = '\0';
    }
    if (r) freeReplyObject(r);
    return v;
}

static inline long svc_hget_long(redisContext *c, const char *job_id, const char *field) {
    char *v = svc_hget(c, job_id, field);
    long x = v ? atol(v) : -1;
    free(v);
    return x;
}

/* Waits until the job is done or failed; returns 1 for done, 0 failed, -1
 * when it did not end within timeout_s. */
static inline int svc_wait_job(redisContext *c, const char *job_id, double timeout_s) {
    double t0 = svc_now();
    while (svc_now() - t0 < timeout_s) {
        char *st = svc_hget(c, job_id, "status");
        int done = st && !strcmp(st, "done"), failed = st && !strcmp(st, "failed");
        free(st);
        if (done || failed) return done;
        redis_fixture_sleep_ms(20);
    }
    return -1;
}

/* Waits until the job's token stream holds at least n tokens (1) or timeout (0). */
static inline int svc_wait_tokens(redisContext *c, const char *job_id, int n, double timeout_s) {
    double t0 = svc_now();
    while (svc_now() - t0 < timeout_s) {
        redisReply *r = redisCommand(c, "XLEN ltri:job:%s:tokens", job_id);
        long len = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 0;
        if (r) freeReplyObject(r);
        if (len >= n + 2) return 1; /* start and prefill entries, then tokens */
        redis_fixture_sleep_ms(5);
    }
    return 0;
}

/* Submits a job document as a client would, without ltri-submit. */
static inline int svc_xadd(redisContext *c, const char *job_id, const char *json) {
    redisReply *r = redisCommand(c, "XADD ltri:jobs * id %s job %s", job_id, json);
    int ok = r && r->type == REDIS_REPLY_STRING;
    if (r) freeReplyObject(r);
    return ok ? 0 : -1;
}

/* The one-shot answer (greedy, EOS ignored) the service must give too: the
 * continuation ltri-worker prints, without its final newline. */
static inline int svc_reference(const char *dir, const char *prompt_arg, int max_new, char *out, size_t cap) {
    char cmd[4096], path[256];
    snprintf(path, sizeof(path), "%s/reference.out", dir);
    snprintf(cmd, sizeof(cmd),
             "%s --model %s --backend cpu --quiet --ignore-eos --max-new-tokens %d --prompt '%s' >%s 2>/dev/null",
             SVC_WORKER, SVC_MODEL, max_new, prompt_arg, path);
    if (system(cmd) != 0) return -1;
    test_slurp(path, out, cap);
    size_t n = strlen(out);
    if (n > 0 && out[n - 1] == '\n') out[n - 1] = '\0';
    return 0;
}

#endif
