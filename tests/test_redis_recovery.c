/* Failures around the job service (label redis): nothing lost, nothing
 * answered twice (every job's result_writes is 1).
 *
 *  1. Redis refuses connections: a clear error, bounded retries, exit 1;
 *  2. a coordinator killed (SIGKILL) mid-job: the next one claims the job
 *     once idle, and its answer equals the one-shot CLI's;
 *  3. a job out of attempts goes to the dead-letter stream;
 *  4. SIGTERM mid-job: the job is requeued and the service exits 0; the
 *     next service answers it; with --drain-seconds a running job finishes;
 *  5. redis-server killed and restarted mid-job (appendonly): the job is
 *     answered once Redis is back, the client following it gets the answer,
 *     and the service takes new jobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_util.h"

static char dir[64];
static char text[1 << 16];

#define LONG_PROMPT "A long story begins here"
#define LONG_JOB "{\"prompt\": \"" LONG_PROMPT "\", \"max_new_tokens\": 1000, \"ignore_eos\": true}"
static char reference[1 << 16];

static long pending_count(redisContext *c) {
    redisReply *r = redisCommand(c, "XPENDING ltri:jobs ltri");
    long n = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_INTEGER
                 ? (long)r->element[0]->integer
                 : -1;
    if (r) freeReplyObject(r);
    return n;
}

static void check_answer(redisContext *c, const char *id, int attempts, const char *what) {
    char *out = svc_hget(c, id, "output");
    CHECK_MSG(out && !strcmp(out, reference), "%s: the answer differs from the one-shot run (%zu vs %zu bytes)", what,
              out ? strlen(out) : 0, strlen(reference));
    CHECK_MSG(svc_hget_long(c, id, "result_writes") == 1, "%s: answered %ld times", what,
              svc_hget_long(c, id, "result_writes"));
    if (attempts > 0)
        CHECK_MSG(svc_hget_long(c, id, "attempts") == attempts, "%s: %ld attempts, expected %d", what,
                  svc_hget_long(c, id, "attempts"), attempts);
    free(out);
}

static void refused(void) {
    char log[128], cmd[1024];
    snprintf(log, sizeof(log), "%s/refused.log", dir);
    int port = redis_fixture_free_port();
    snprintf(cmd, sizeof(cmd),
             "%s --redis redis://127.0.0.1:%d --model %s --backend cpu --redis-retry-seconds 1 >%s 2>&1", SVC_WORKER,
             port, SVC_MODEL, log);
    double t0 = svc_now();
    int st = svc_wait(svc_spawn(cmd), 30);
    test_slurp(log, text, sizeof(text));
    char want[64];
    snprintf(want, sizeof(want), "cannot connect to Redis at 127.0.0.1:%d", port);
    CHECK_MSG(st == 1 && strstr(text, want) && strstr(text, "refused") && strstr(text, "no Redis connection for"),
              "no Redis: exit %d after %.1f s, log:\n%s", st, svc_now() - t0, text);
}

static void killed_coordinator(redis_fixture *rf, redisContext *c) {
    char log[128];
    snprintf(log, sizeof(log), "%s/killed.log", dir);
    pid_t a = svc_start_worker(rf, "--consumer first --claim-idle-ms 1000", log);
    CHECK(svc_xadd(c, "killed", LONG_JOB) == 0);
    CHECK_MSG(svc_wait_tokens(c, "killed", 5, 60), "the first coordinator did not start the job");
    kill(a, SIGKILL);
    CHECK(svc_wait(a, 10) == 128 + SIGKILL);
    char *status = svc_hget(c, "killed", "status");
    CHECK_MSG(status && !strcmp(status, "running"), "killed mid-job: status %s", status ? status : "(none)");
    free(status);

    /* the next coordinator, also the one that dead-letters (max 2 attempts) */
    redisReply *r = redisCommand(c, "HSET ltri:job:dead attempts 2 consumer ghost");
    if (r) freeReplyObject(r);
    CHECK(svc_xadd(c, "dead", "{\"prompt\": \"never finishes\", \"max_new_tokens\": 2}") == 0);
    pid_t b = svc_start_worker(rf, "--consumer second --claim-idle-ms 1000 --max-attempts 2", log);
    int st = svc_wait_job(c, "killed", 120);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(st == 1, "the killed coordinator's job was not finished by the next one: %d, log:\n%s", st, text);
    check_answer(c, "killed", 2, "after SIGKILL");
    char *consumer = svc_hget(c, "killed", "consumer");
    CHECK(consumer && !strcmp(consumer, "second"));
    free(consumer);

    CHECK(svc_wait_job(c, "dead", 30) == 0);
    char *e = svc_hget(c, "dead", "error");
    CHECK_MSG(e && strstr(e, "started 2 time(s)"), "dead letter: error '%s'", e ? e : "(none)");
    free(e);
    CHECK(svc_hget_long(c, "dead", "result_writes") == 1);
    r = redisCommand(c, "XRANGE ltri:jobs:dead - +");
    int found = 0;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *f = r->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            found |= !strcmp(f->element[k]->str, "id") && !strcmp(f->element[k + 1]->str, "dead");
    }
    if (r) freeReplyObject(r);
    CHECK_MSG(found, "the job out of attempts is not in ltri:jobs:dead");
    CHECK(pending_count(c) == 0);
    kill(b, SIGTERM);
    CHECK(svc_wait(b, 30) == 0);
}

static void graceful_shutdown(redis_fixture *rf, redisContext *c) {
    char log[128];
    snprintf(log, sizeof(log), "%s/term.log", dir);
    pid_t a = svc_start_worker(rf, "--consumer term1", log);
    CHECK(svc_xadd(c, "term", LONG_JOB) == 0);
    CHECK(svc_wait_tokens(c, "term", 5, 60));
    kill(a, SIGTERM);
    int st = svc_wait(a, 20);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(st == 0 && strstr(text, "job term requeued"), "SIGTERM: exit %d, log:\n%s", st, text);
    char *status = svc_hget(c, "term", "status");
    CHECK_MSG(status && !strcmp(status, "queued"), "requeued job: status %s", status ? status : "(none)");
    free(status);
    redisReply *r = redisCommand(c, "XLEN ltri:jobs");
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r) freeReplyObject(r);
    CHECK(pending_count(c) == 0);

    /* the next service answers it; then a SIGTERM with time to drain lets a job finish */
    pid_t b = svc_start_worker(rf, "--consumer term2 --drain-seconds 60", log);
    CHECK(svc_wait_job(c, "term", 120) == 1);
    check_answer(c, "term", 1, "after a requeue");
    CHECK(svc_xadd(c, "drain", "{\"prompt\": \"drain me\", \"max_new_tokens\": 300, \"ignore_eos\": true}") == 0);
    CHECK(svc_wait_tokens(c, "drain", 3, 60));
    kill(b, SIGTERM);
    st = svc_wait(b, 60);
    char *drained = svc_hget(c, "drain", "status");
    CHECK_MSG(st == 0 && drained && !strcmp(drained, "done"), "drain: exit %d, status %s", st,
              drained ? drained : "(none)");
    free(drained);
    CHECK(svc_hget_long(c, "drain", "result_writes") == 1);
}

static void redis_restart(void) {
    static redis_fixture rf; /* stopped at exit: it must outlive main */
    if (redis_fixture_start(&rf, 1)) {
        CHECK_MSG(0, "cannot start redis-server with appendonly");
        return;
    }
    redisContext *c = redis_fixture_connect(&rf);
    char log[128], cmd[2048], out[128], err[128];
    snprintf(log, sizeof(log), "%s/restart.log", dir);
    snprintf(out, sizeof(out), "%s/restart.out", dir);
    snprintf(err, sizeof(err), "%s/restart.err", dir);
    pid_t w = svc_start_worker(&rf, "--consumer restart", log);
    snprintf(cmd, sizeof(cmd),
             "%s --redis redis://127.0.0.1:%d --id restart --prompt '" LONG_PROMPT "' --max-new-tokens 1000 "
             "--ignore-eos --timeout 120 >%s 2>%s",
             SVC_SUBMIT, rf.port, out, err);
    pid_t client = svc_spawn(cmd);
    CHECK(svc_wait_tokens(c, "restart", 5, 60));
    redisFree(c);
    /* the hard way: no shutdown, the append-only file is what survives */
    kill(rf.pid, SIGKILL);
    waitpid(rf.pid, NULL, 0);
    rf.pid = 0;
    redis_fixture_sleep_ms(1500);
    CHECK(redis_fixture_start_again(&rf) == 0);
    c = redis_fixture_connect(&rf);
    if (!c) {
        CHECK_MSG(0, "Redis did not come back");
        return;
    }
    int st = svc_wait_job(c, "restart", 120);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(st == 1 && strstr(text, "reconnected to Redis"), "after the Redis restart: %d, log:\n%s", st, text);
    check_answer(c, "restart", 1, "across a Redis restart");
    int cst = svc_wait(client, 60);
    test_slurp(out, text, sizeof(text));
    size_t len = strlen(text);
    if (len && text[len - 1] == '\n') text[len - 1] = '\0';
    char etext[4096];
    test_slurp(err, etext, sizeof(etext));
    CHECK_MSG(cst == 0 && !strcmp(text, reference), "the client across the restart: exit %d, stderr:\n%s", cst, etext);
    /* and the service goes on */
    CHECK(svc_xadd(c, "after", "{\"prompt\": \"after the restart\", \"max_new_tokens\": 4}") == 0);
    CHECK(svc_wait_job(c, "after", 60) == 1);
    kill(w, SIGTERM);
    CHECK(svc_wait(w, 30) == 0);
    redisFree(c);
}

int main(void) {
    redis_fixture_require();
    snprintf(dir, sizeof(dir), "/tmp/ltri-test-recovery-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    if (svc_reference(dir, LONG_PROMPT, 1000, reference, sizeof(reference))) {
        fprintf(stderr, "the one-shot reference run failed\n");
        return 1;
    }
    refused();
    static redis_fixture rf;
    if (redis_fixture_start(&rf, 0)) return 1;
    redisContext *c = redis_fixture_connect(&rf);
    if (!c) return 1;
    killed_coordinator(&rf, c);
    graceful_shutdown(&rf, c);
    redisFree(c);
    redis_restart();

    test_remove_dir(dir);
    return test_finish("test_redis_recovery");
}
