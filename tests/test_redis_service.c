/* The job service against a real redis-server (label redis).
 *
 *  1. a job round trip with 2 ranks under mpiexec: the answers (three jobs
 *     decoded together) equal the one-shot CLI's, the metrics name 2 ranks;
 *  2. 20 jobs at once from 3 clients (ltri-submit processes) on one service
 *     with a token budget: every job answered exactly once (result_writes 1),
 *     the answers equal the one-shot CLI's, jobs were batched and the budget
 *     held;
 *  3. 32 malformed jobs of different kinds and a seeded fuzz loop, between
 *     good jobs: each bad job fails with its precise message, the good ones
 *     are answered, the service lives on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "service_util.h"

static char dir[64];
static char text[1 << 16];

static void round_trip_two_ranks(redis_fixture *rf, redisContext *c) {
    char cmd[4096], log[128];
    snprintf(log, sizeof(log), "%s/mpi.log", dir);
    snprintf(cmd, sizeof(cmd),
             "%s --oversubscribe -n 2 %s --redis redis://127.0.0.1:%d --model %s --backend cpu --max-context 512 "
             "--consumer mpi </dev/null >%s 2>&1",
             LTRI_MPIEXEC, SVC_WORKER, rf->port, SVC_MODEL, log);
    pid_t mpi = svc_spawn(cmd);
    const char *prompts[3] = {"The passkey is 71432.", "Once upon a time", "Redis streams carry jobs"};
    char ids[3][16], ref[3][4096];
    for (int i = 0; i < 3; i++) {
        snprintf(ids[i], sizeof(ids[i]), "two-%d", i);
        CHECK(svc_reference(dir, prompts[i], 10, ref[i], sizeof(ref[i])) == 0);
        char job[512];
        snprintf(job, sizeof(job), "{\"prompt\": \"%s\", \"max_new_tokens\": 10, \"ignore_eos\": true}", prompts[i]);
        CHECK(svc_xadd(c, ids[i], job) == 0);
    }
    for (int i = 0; i < 3; i++) {
        int st = svc_wait_job(c, ids[i], 120);
        test_slurp(log, text, sizeof(text));
        CHECK_MSG(st == 1, "2 ranks: job %s ended %d, log:\n%s", ids[i], st, text);
        char *out = svc_hget(c, ids[i], "output"), *metrics = svc_hget(c, ids[i], "metrics");
        CHECK_MSG(out && !strcmp(out, ref[i]), "2 ranks: job %s answered '%s', one-shot '%s'", ids[i],
                  out ? out : "(none)", ref[i]);
        CHECK_MSG(metrics && strstr(metrics, "\"ranks\":2"), "2 ranks: metrics %s", metrics ? metrics : "(none)");
        CHECK(svc_hget_long(c, ids[i], "result_writes") == 1);
        free(out);
        free(metrics);
    }
    /* the followers end with rank 0 when mpiexec passes SIGTERM on */
    kill(mpi, SIGTERM);
    int st = svc_wait(mpi, 30);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(st >= 0 && strstr(text, "service stopped"), "2 ranks: mpiexec after SIGTERM: %d, log:\n%s", st, text);
}

/* 3 clients, each a shell running its ltri-submit processes at once. */
static void twenty_jobs(redis_fixture *rf, redisContext *c) {
    char log[128], cmd[8192];
    snprintf(log, sizeof(log), "%s/twenty.log", dir);
    const long budget = 150;
    char extra[128];
    snprintf(extra, sizeof(extra), "--max-batch 4 --max-tokens-in-flight %ld --consumer twenty", budget);
    pid_t worker = svc_start_worker(rf, extra, log);
    enum { N = 20, CLIENTS = 3, MAX_NEW = 16 };
    static char ref[N][4096];
    for (int j = 0; j < N; j++) {
        char prompt[128];
        snprintf(prompt, sizeof(prompt), "Job %d of the twenty asks for a story about number %d.", j, 7 * j);
        CHECK(svc_reference(dir, prompt, MAX_NEW, ref[j], sizeof(ref[j])) == 0);
    }
    pid_t clients[CLIENTS];
    for (int k = 0; k < CLIENTS; k++) {
        int n = snprintf(cmd, sizeof(cmd), "sh -c '");
        for (int j = k; j < N; j += CLIENTS)
            n += snprintf(cmd + n, sizeof(cmd) - (size_t)n,
                          "%s --redis redis://127.0.0.1:%d --id twenty-%d --max-new-tokens %d --ignore-eos --quiet "
                          "--timeout 120 --prompt \"Job %d of the twenty asks for a story about number %d.\" "
                          ">%s/out-%d 2>%s/err-%d; echo $? >%s/rc-%d & ",
                          SVC_SUBMIT, rf->port, j, MAX_NEW, j, 7 * j, dir, j, dir, j, dir, j);
        snprintf(cmd + n, sizeof(cmd) - (size_t)n, "wait'");
        clients[k] = svc_spawn(cmd);
    }
    for (int k = 0; k < CLIENTS; k++) CHECK_MSG(svc_wait(clients[k], 180) == 0, "client %d did not finish", k);
    long min_tokens = 1L << 30;
    int batched = 0, largest = 0;
    for (int j = 0; j < N; j++) {
        char path[128], id[32], rc_text[16];
        snprintf(id, sizeof(id), "twenty-%d", j);
        snprintf(path, sizeof(path), "%s/rc-%d", dir, j);
        test_slurp(path, rc_text, sizeof(rc_text));
        snprintf(path, sizeof(path), "%s/out-%d", dir, j);
        test_slurp(path, text, sizeof(text));
        size_t len = strlen(text);
        if (len && text[len - 1] == '\n') text[len - 1] = '\0';
        char errp[128], errt[4096];
        snprintf(errp, sizeof(errp), "%s/err-%d", dir, j);
        test_slurp(errp, errt, sizeof(errt));
        CHECK_MSG(atoi(rc_text) == 0 && !strcmp(text, ref[j]), "job %d: exit %s, printed '%s', one-shot '%s'; %s", j,
                  rc_text, text, ref[j], errt);
        CHECK_MSG(svc_hget_long(c, id, "result_writes") == 1, "job %d answered %ld times", j,
                  svc_hget_long(c, id, "result_writes"));
        char *m = svc_hget(c, id, "metrics");
        const char *pt = m ? strstr(m, "\"prompt_tokens\":") : NULL, *lb = m ? strstr(m, "\"largest_batch\":") : NULL;
        if (pt && lb) {
            long t = atol(pt + 16) + MAX_NEW;
            int b = atoi(lb + 16);
            if (t < min_tokens) min_tokens = t;
            if (b > largest) largest = b;
            batched += b > 1;
        }
        free(m);
    }
    fprintf(stderr, "20 jobs: %d decoded in batches, largest batch %d, smallest job %ld tokens, budget %ld\n",
            batched, largest, min_tokens, budget);
    CHECK_MSG(batched > 0, "no job was decoded together with another");
    CHECK_MSG(largest <= budget / min_tokens, "a batch of %d jobs exceeds the budget of %ld tokens", largest, budget);
    kill(worker, SIGTERM);
    CHECK(svc_wait(worker, 30) == 0);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(strstr(text, "service stopped: 20 job(s) done, 0 failed"), "log:\n%s", text);
}

typedef struct {
    const char *json, *expect;
} bad_job;

static void malformed_jobs(redis_fixture *rf, redisContext *c) {
    char log[128];
    snprintf(log, sizeof(log), "%s/malformed.log", dir);
    pid_t worker = svc_start_worker(rf, "--max-context 256 --max-prompt-bytes 100000 --consumer malformed", log);
    static char big[150001];
    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "{\"prompt\": \"", 12);
    memcpy(big + sizeof(big) - 3, "\"}", 2);
    static char long_prompt[8000];
    int n = snprintf(long_prompt, sizeof(long_prompt), "{\"prompt\": \"");
    for (int i = 0; i < 300; i++) n += snprintf(long_prompt + n, sizeof(long_prompt) - (size_t)n, "word%d ", i);
    snprintf(long_prompt + n, sizeof(long_prompt) - (size_t)n, "\"}");
    const bad_job bad[] = {
        {"{\"prompt\": \"hi\"", "not valid JSON"},
        {"[1, 2]", "must be a JSON object"},
        {"{\"prompt\": \"hi\", \"max_new_token\": 4}", "unknown field 'max_new_token'"},
        {"{\"prompt\": 5}", "field 'prompt' must be a string, got an integer"},
        {"{\"question\": \"q\"}", "exactly one of 'prompt' and 'prompt_file'"},
        {"{\"prompt\": \"a\", \"prompt_file\": \"/x\"}", "exactly one of 'prompt' and 'prompt_file'"},
        {"{\"prompt_file\": \"rel.txt\"}", "must be an absolute path"},
        {"{\"prompt_file\": \"/nonexistent/p.txt\"}", "cannot open '/nonexistent/p.txt'"},
        {"{\"prompt_file\": \"/tmp\"}", "is not a regular file"},
        {"{\"prompt\": \"x\", \"context\": \"abc\"}", "not supported yet"},
        {"{\"prompt\": \"x\", \"max_new_tokens\": -1}", "'max_new_tokens' is -1"},
        {"{\"prompt\": \"x\", \"max_new_tokens\": \"5\"}", "'max_new_tokens' must be an integer, got a string"},
        {"{\"prompt\": \"x\", \"max_new_tokens\": 2.5}", "'max_new_tokens' must be an integer, got a number"},
        {"{\"prompt\": \"x\", \"temperature\": -1}", "'temperature' is -1"},
        {"{\"prompt\": \"x\", \"top_p\": 0}", "'top_p' is 0"},
        {"{\"prompt\": \"x\", \"top_k\": true}", "'top_k' must be an integer, got true"},
        {"{\"prompt\": \"x\", \"seed\": -3}", "'seed' is -3"},
        {"{\"prompt\": \"x\", \"stop\": \"x\"}", "'stop' must be an array"},
        {"{\"prompt\": \"x\", \"stop\": [\"<|no_such_token|>\"]}", "is not a token of this model's tokenizer"},
        {"{\"prompt\": \"x\", \"ignore_eos\": \"yes\"}", "'ignore_eos' must be true or false"},
        {"{\"prompt\": \"x\", \"attn\": 3}", "'attn' must be an object"},
        {"{\"prompt\": \"x\", \"attn\": {\"mode\": \"sparse\"}}", "'attn.mode' is 'sparse'"},
        {"{\"prompt\": \"x\", \"attn\": {\"mode\": \"ltri\", \"n_local\": 64}}", "but this service runs 'mode=full'"},
        {"{\"prompt\": \"x\", \"attn\": {\"n_locals\": 4}}", "unknown attention parameter 'n_locals'"},
        {"{\"prompt\": \"x\", \"attn\": {\"n_local\": \"big\"}}", "'attn.n_local' must be a number"},
        {"{\"prompt\": \"x\", \"max_new_tokens\": 5000}", "exceeds the context limit of 256 tokens"},
        {long_prompt, "exceeds the context limit of 256 tokens"},
        {"{\"prompt\": \"a\", \"prompt\": \"b\"}", "not valid JSON"},
        {"{\"prompt\": \"\", \"no_bos\": true}", "the prompt is empty"},
        {big, "the service takes at most 100000"},
        {NULL, "no 'job' field"},          /* an entry without a job */
        {"{\"prompt\": \"x\"}", "'id' must be"}, /* an entry with a bad id */
    };
    int n_bad = (int)(sizeof(bad) / sizeof(bad[0]));
    char ids[64][32];
    for (int i = 0; i < n_bad; i++) {
        snprintf(ids[i], sizeof(ids[i]), "bad-%d", i);
        redisReply *r;
        if (!bad[i].json) r = redisCommand(c, "XADD ltri:jobs * id %s note nothing", ids[i]);
        else if (strstr(bad[i].expect, "'id'"))
            r = redisCommand(c, "XADD ltri:jobs * id %s job %s", "bad id!", bad[i].json);
        else r = redisCommand(c, "XADD ltri:jobs * id %s job %s", ids[i], bad[i].json);
        CHECK(r && r->type == REDIS_REPLY_STRING);
        if (r && r->type == REDIS_REPLY_STRING && strstr(bad[i].expect, "'id'")) /* answered under its entry id */
            snprintf(ids[i], sizeof(ids[i]), "%s", r->str);
        if (r) freeReplyObject(r);
        if (i % 4 == 0) { /* good jobs in between */
            char id[32];
            snprintf(id, sizeof(id), "good-%d", i);
            CHECK(svc_xadd(c, id, "{\"prompt\": \"a good job\", \"max_new_tokens\": 3}") == 0);
        }
    }
    for (int i = 0; i < n_bad; i++) {
        int st = svc_wait_job(c, ids[i], 60);
        char *e = svc_hget(c, ids[i], "error");
        CHECK_MSG(st == 0 && e && strstr(e, bad[i].expect), "bad job %d: status %d, error '%s', expected '%s'", i, st,
                  e ? e : "(none)", bad[i].expect);
        CHECK(svc_hget_long(c, ids[i], "result_writes") == 1);
        free(e);
        if (i % 4 == 0) {
            char id[32];
            snprintf(id, sizeof(id), "good-%d", i);
            CHECK_MSG(svc_wait_job(c, id, 60) == 1, "good job %s between bad ones was not answered", id);
        }
    }

    /* fuzz: mutations of a good job; each is answered, done or failed with a message */
    uint64_t seed = test_seed(20240611);
    ltri_rng rng;
    ltri_rng_seed(&rng, seed);
    const char *base = "{\"prompt\": \"fuzz base\", \"question\": \" why?\", \"max_new_tokens\": 3, "
                       "\"temperature\": 0.5, \"top_p\": 0.9, \"seed\": 7, \"stop\": [\"13\"], "
                       "\"attn\": {\"mode\": \"full\"}}";
    const char *alphabet = "{}[]\":,.-+0123456789eEtrufalsn \\";
    enum { FUZZ = 40 };
    char fuzz_ids[FUZZ][32];
    for (int k = 0; k < FUZZ; k++) {
        char doc[512];
        snprintf(doc, sizeof(doc), "%s", base);
        int edits = 1 + (int)(ltri_rng_u32(&rng) % 3);
        for (int e = 0; e < edits; e++) {
            size_t len = strlen(doc), at = ltri_rng_u32(&rng) % len;
            char ch = alphabet[ltri_rng_u32(&rng) % strlen(alphabet)];
            switch (ltri_rng_u32(&rng) % 3) {
            case 0: doc[at] = ch; break;                                     /* replace */
            case 1: memmove(doc + at, doc + at + 1, len - at); break;        /* delete */
            default:                                                         /* insert */
                if (len + 2 < sizeof(doc)) memmove(doc + at + 1, doc + at, len - at + 1), doc[at] = ch;
            }
        }
        snprintf(fuzz_ids[k], sizeof(fuzz_ids[k]), "fuzz-%d", k);
        redisReply *r = redisCommand(c, "XADD ltri:jobs * id %s job %b", fuzz_ids[k], doc, strlen(doc));
        CHECK(r && r->type == REDIS_REPLY_STRING);
        if (r) freeReplyObject(r);
    }
    int fuzz_failed = 0;
    for (int k = 0; k < FUZZ; k++) {
        int st = svc_wait_job(c, fuzz_ids[k], 60);
        char *e = svc_hget(c, fuzz_ids[k], "error");
        CHECK_MSG(st == 1 || (st == 0 && e && strlen(e) > 5), "fuzz job %d (seed %llu): status %d, error '%s'", k,
                  (unsigned long long)seed, st, e ? e : "(none)");
        fuzz_failed += st == 0;
        free(e);
    }
    fprintf(stderr, "fuzz: %d of %d mutated jobs failed with a message, the rest were answered\n", fuzz_failed, FUZZ);
    CHECK(svc_xadd(c, "good-last", "{\"prompt\": \"still alive?\", \"max_new_tokens\": 2}") == 0);
    CHECK_MSG(svc_wait_job(c, "good-last", 60) == 1, "the service did not survive the bad jobs");
    kill(worker, SIGTERM);
    int st = svc_wait(worker, 30);
    test_slurp(log, text, sizeof(text));
    CHECK_MSG(st == 0, "service after the bad jobs: exit %d, log:\n%s", st, text);
}

int main(void) {
    redis_fixture_require();
    snprintf(dir, sizeof(dir), "/tmp/ltri-test-service-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    static redis_fixture rf; /* stopped at exit: it must outlive main */
    if (redis_fixture_start(&rf, 0)) return 1;
    redisContext *c = redis_fixture_connect(&rf);
    if (!c) return 1;

    round_trip_two_ranks(&rf, c);
    twenty_jobs(&rf, c);
    malformed_jobs(&rf, c);

    redisFree(c);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_finish("test_redis_service");
}
