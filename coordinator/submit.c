/* ltri-submit: submits a job to the service and follows it.
 *
 *   ltri-submit [--redis URL] (--prompt TEXT | --prompt-file F | --server-file PATH | --job FILE) [options]
 *   ltri-submit [--redis URL] --follow ID
 *
 * The job goes to the stream with its hash in one MULTI/EXEC; then the job's
 * token stream is followed (XREAD BLOCK) with a progress bar on stderr, and
 * the stored answer (the hash's output, which a restarted attempt cannot
 * garble) is printed on stdout. Exit status: 0 done, 1 the job failed or
 * could not be followed, 2 bad command line. docs/JOBS.md has the keys. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/queue.h"
#include "coordinator/redis_conn.h"
#include "core/timer.h"
#include "worker/attention_params.h"

typedef struct {
    const char *url, *stream, *id, *follow;
    json_t *job; /* the document being built */
    int no_wait, stream_tokens, quiet;
    double timeout_s;
    int max_new_tokens; /* for the progress bar; -1: not known */
} submit_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ltri-submit [--redis URL] (--prompt TEXT | --prompt-file FILE | --server-file PATH | --job FILE)\n"
            "                   [options]\n"
            "       ltri-submit [--redis URL] --follow ID\n"
            "\n"
            "  --redis URL            redis://host:port (default $LTRI_REDIS, else " COORD_REDIS_DEFAULT_URL ")\n"
            "  --stream NAME          the service's job stream (default " COORD_DEFAULT_STREAM ")\n"
            "  --prompt TEXT          the prompt\n"
            "  --prompt-file FILE     read the prompt here and send its text ('-': stdin)\n"
            "  --server-file PATH     the service reads the prompt from PATH (absolute, on its machine)\n"
            "  --job FILE             a job document (JSON, docs/JOBS.md); the flags below override it\n"
            "  --question TEXT        appended to the prompt\n"
            "  --max-new-tokens N  --temperature T  --top-p P  --top-k K  --seed S\n"
            "  --stop TOKEN           stop after TOKEN (text or id); repeatable\n"
            "  --ignore-eos  --no-bos\n"
            "  --attn MODE  --n-local N ...  attention settings (they must match the service's)\n"
            "  --id ID                the job id (default: random)\n"
            "  --no-wait              print the job id and exit\n"
            "  --follow ID            follow a submitted job instead\n"
            "  --stream-tokens        print tokens as they come instead of the stored answer at the end\n"
            "  --timeout S            give up following after S seconds (default 0: wait)\n"
            "  --quiet                no progress on stderr\n");
}

/* ------------------------------------------------------------ the job */

static int read_file(const char *path, char **out) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = !buf || ferror(f) || n + 1 > cap;
    if (f != stdin) fclose(f);
    if (bad) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

static int set_number(json_t *job, const char *key, const char *flag, const char *s, int integer) {
    char *end = NULL;
    errno = 0;
    if (integer) {
        long long v = strtoll(s, &end, 10);
        if (!*s || *end || errno) return fprintf(stderr, "ltri-submit: %s needs an integer, got '%s'\n", flag, s), -1;
        json_object_set_new(job, key, json_integer(v));
    } else {
        double v = strtod(s, &end);
        if (!*s || *end || errno) return fprintf(stderr, "ltri-submit: %s needs a number, got '%s'\n", flag, s), -1;
        json_object_set_new(job, key, json_real(v));
    }
    return 0;
}

/* --attn MODE and --<parameter> VALUE go into the "attn" object. */
static int set_attn(json_t *job, const char *name, const char *value) {
    json_t *attn = json_object_get(job, "attn");
    if (!attn) {
        attn = json_object();
        json_object_set_new(job, "attn", attn);
    }
    if (!strcmp(name, "mode") || !strcmp(name, "select")) {
        json_object_set_new(attn, name, json_string(value));
        return 0;
    }
    char *end = NULL;
    long long i = strtoll(value, &end, 10);
    if (*value && !*end) return json_object_set_new(attn, name, json_integer(i)), 0;
    double d = strtod(value, &end);
    if (*value && !*end) return json_object_set_new(attn, name, json_real(d)), 0;
    fprintf(stderr, "ltri-submit: --%s needs a number, got '%s'\n", name, value);
    return -1;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(int argc, char **argv, submit_options *o) {
    memset(o, 0, sizeof(*o));
    o->url = getenv("LTRI_REDIS") ? getenv("LTRI_REDIS") : COORD_REDIS_DEFAULT_URL;
    o->stream = COORD_DEFAULT_STREAM;
    o->max_new_tokens = -1;
    o->job = json_object();
    enum { O_REDIS = 256, O_STREAM, O_PROMPT, O_PROMPT_FILE, O_SERVER_FILE, O_JOB, O_QUESTION, O_MAX_NEW, O_TEMP,
           O_TOP_P, O_TOP_K, O_SEED, O_STOP, O_IGNORE_EOS, O_NO_BOS, O_ID, O_NO_WAIT, O_FOLLOW, O_STREAM_TOKENS,
           O_TIMEOUT, O_QUIET, O_HELP, O_ATTN };
    enum { N_BASE = 23, MAX_PARAMS = 32 };
    static const struct option base[N_BASE] = {
        {"redis", 1, 0, O_REDIS},         {"stream", 1, 0, O_STREAM},         {"prompt", 1, 0, O_PROMPT},
        {"prompt-file", 1, 0, O_PROMPT_FILE}, {"server-file", 1, 0, O_SERVER_FILE}, {"job", 1, 0, O_JOB},
        {"question", 1, 0, O_QUESTION},   {"max-new-tokens", 1, 0, O_MAX_NEW}, {"temperature", 1, 0, O_TEMP},
        {"top-p", 1, 0, O_TOP_P},         {"top-k", 1, 0, O_TOP_K},           {"seed", 1, 0, O_SEED},
        {"stop", 1, 0, O_STOP},           {"ignore-eos", 0, 0, O_IGNORE_EOS}, {"no-bos", 0, 0, O_NO_BOS},
        {"id", 1, 0, O_ID},               {"no-wait", 0, 0, O_NO_WAIT},       {"follow", 1, 0, O_FOLLOW},
        {"stream-tokens", 0, 0, O_STREAM_TOKENS}, {"timeout", 1, 0, O_TIMEOUT}, {"quiet", 0, 0, O_QUIET},
        {"help", 0, 0, O_HELP},           {"attn", 1, 0, O_ATTN},
    };
    char param_flags[MAX_PARAMS][32];
    struct option longopts[N_BASE + MAX_PARAMS + 1];
    memcpy(longopts, base, sizeof(base));
    int n_params = 0;
    for (; attn_param_names[n_params] && n_params < MAX_PARAMS; n_params++) {
        snprintf(param_flags[n_params], sizeof(param_flags[0]), "%s", attn_param_names[n_params]);
        for (char *ch = param_flags[n_params]; *ch; ch++)
            if (*ch == '_') *ch = '-';
        longopts[N_BASE + n_params] = (struct option){param_flags[n_params], 1, 0, O_ATTN};
    }
    longopts[N_BASE + n_params] = (struct option){0, 0, 0, 0};
    json_t *file_job = NULL, *stop = NULL;
    opterr = 0;
    int c, idx = -1, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        char *text = NULL;
        switch (c) {
        case O_REDIS: o->url = optarg; break;
        case O_STREAM: o->stream = optarg; break;
        case O_PROMPT: json_object_set_new(o->job, "prompt", json_string(optarg)); break;
        case O_PROMPT_FILE:
            if (read_file(optarg, &text)) {
                fprintf(stderr, "ltri-submit: cannot read '%s': %s\n", optarg, strerror(errno));
                rc = -1;
            } else {
                json_t *v = json_string(text); /* NULL unless valid UTF-8 */
                if (v) json_object_set_new(o->job, "prompt", v);
                else fprintf(stderr, "ltri-submit: '%s' is not UTF-8 text\n", optarg), rc = -1;
            }
            free(text);
            break;
        case O_SERVER_FILE: json_object_set_new(o->job, "prompt_file", json_string(optarg)); break;
        case O_JOB: {
            json_error_t je;
            if (!(file_job = json_load_file(optarg, JSON_REJECT_DUPLICATES, &je)) || !json_is_object(file_job)) {
                fprintf(stderr, "ltri-submit: %s: %s\n", optarg, file_job ? "not a JSON object" : je.text);
                rc = -1;
            }
            break;
        }
        case O_QUESTION: json_object_set_new(o->job, "question", json_string(optarg)); break;
        case O_MAX_NEW: rc = set_number(o->job, "max_new_tokens", "--max-new-tokens", optarg, 1); break;
        case O_TEMP: rc = set_number(o->job, "temperature", "--temperature", optarg, 0); break;
        case O_TOP_P: rc = set_number(o->job, "top_p", "--top-p", optarg, 0); break;
        case O_TOP_K: rc = set_number(o->job, "top_k", "--top-k", optarg, 1); break;
        case O_SEED: rc = set_number(o->job, "seed", "--seed", optarg, 1); break;
        case O_STOP:
            if (!stop) stop = json_array();
            json_array_append_new(stop, json_string(optarg));
            break;
        case O_IGNORE_EOS: json_object_set_new(o->job, "ignore_eos", json_true()); break;
        case O_NO_BOS: json_object_set_new(o->job, "no_bos", json_true()); break;
        case O_ID: o->id = optarg; break;
        case O_NO_WAIT: o->no_wait = 1; break;
        case O_FOLLOW: o->follow = optarg; break;
        case O_STREAM_TOKENS: o->stream_tokens = 1; break;
        case O_TIMEOUT: {
            char *end = NULL;
            o->timeout_s = strtod(optarg, &end);
            if (!*optarg || *end || !(o->timeout_s >= 0)) {
                fprintf(stderr, "ltri-submit: --timeout needs seconds >= 0, got '%s'\n", optarg);
                rc = -1;
            }
            break;
        }
        case O_QUIET: o->quiet = 1; break;
        case O_HELP: usage(stdout); rc = 1; break;
        case O_ATTN: {
            char name[40];
            snprintf(name, sizeof(name), "%s", strcmp(longopts[idx].name, "attn") ? longopts[idx].name : "mode");
            for (char *ch = name; *ch; ch++)
                if (*ch == '-') *ch = '_';
            rc = set_attn(o->job, name, optarg);
            break;
        }
        default:
            fprintf(stderr, "ltri-submit: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            rc = -1;
        }
        idx = -1;
    }
    if (stop) json_object_set_new(o->job, "stop", stop);
    if (file_job) { /* the flags win over the file */
        json_object_update(file_job, o->job);
        json_decref(o->job);
        o->job = file_job;
    }
    if (rc) return rc;
    if (optind < argc) {
        fprintf(stderr, "ltri-submit: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->follow && !json_object_get(o->job, "prompt") && !json_object_get(o->job, "prompt_file")) {
        fprintf(stderr, "ltri-submit: give --prompt, --prompt-file, --server-file or --job (or --follow ID)\n");
        return -1;
    }
    const char *id = o->follow ? o->follow : o->id;
    size_t id_len = id ? strlen(id) : 1;
    if (id && (id_len == 0 || id_len > COORD_ID_MAX || strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                "0123456789_.-") != id_len)) {
        fprintf(stderr, "ltri-submit: a job id is 1 to %d characters of [A-Za-z0-9_.-], got '%s'\n", COORD_ID_MAX, id);
        return -1;
    }
    const json_t *mnt = json_object_get(o->job, "max_new_tokens");
    if (json_is_integer(mnt)) o->max_new_tokens = (int)json_integer_value(mnt);
    return 0;
}

/* ------------------------------------------------------------ Redis */

static int connect_retrying(coord_redis *r, double give_up_s, ltri_error *err) {
    double t0 = ltri_now_sec(), wait = 0.1;
    for (;;) {
        if (coord_redis_connect(r, 2.0, err) == 0) return 0;
        if (ltri_now_sec() - t0 + wait > give_up_s) return -1;
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
        wait = wait * 2 > 2.0 ? 2.0 : wait * 2;
    }
}

static void random_id(char *buf, size_t cap) {
    unsigned char b[8] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(b, 1, sizeof(b), f) != sizeof(b)) { /* unlikely: time and pid then */
        unsigned long long x = (unsigned long long)time(NULL) * 2654435761ULL ^ (unsigned long long)getpid();
        memcpy(b, &x, sizeof(b));
    }
    if (f) fclose(f);
    snprintf(buf, cap, "%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
}

static int submit(coord_redis *r, const submit_options *o, const char *id, ltri_error *err) {
    char ms[32];
    coord_job_keys keys;
    coord_job_keys_of(&keys, id);
    char *json = json_dumps(o->job, JSON_COMPACT);
    if (!json) return ltri_fail(err, "cannot encode the job");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(ms, sizeof(ms), "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    coord_args a;
    int rc = 0;
    if (o->id) { /* a chosen id must be new: an answered one would be answered again */
        coord_args_init(&a);
        coord_args_add(&a, "EXISTS");
        coord_args_add(&a, keys.hash);
        redisReply *rep = coord_redis_cmd(r, &a, err);
        if (!rep) rc = -1;
        else if (rep->type == REDIS_REPLY_INTEGER && rep->integer > 0)
            rc = ltri_fail(err, "job id '%s' exists already", id);
        if (rep) freeReplyObject(rep);
    }
    if (rc == 0) {
        coord_args_init(&a);
        coord_args_add(&a, "MULTI");
        rc = coord_redis_append(r, &a, err);
    }
    if (rc == 0) {
        coord_args_init(&a);
        coord_args_add(&a, "HSET");
        coord_args_add(&a, keys.hash);
        coord_args_add(&a, "status");
        coord_args_add(&a, "queued");
        coord_args_add(&a, "submitted_ms");
        coord_args_add(&a, ms);
        coord_args_add(&a, "stream");
        coord_args_add(&a, o->stream);
        coord_args_add(&a, "job");
        coord_args_add(&a, json);
        rc = coord_redis_append(r, &a, err);
    }
    if (rc == 0) {
        coord_args_init(&a);
        coord_args_add(&a, "XADD");
        coord_args_add(&a, o->stream);
        coord_args_add(&a, "*");
        coord_args_add(&a, "id");
        coord_args_add(&a, id);
        coord_args_add(&a, "job");
        coord_args_add(&a, json);
        rc = coord_redis_append(r, &a, err);
    }
    if (rc == 0) {
        coord_args_init(&a);
        coord_args_add(&a, "EXEC");
        rc = coord_redis_append(r, &a, err);
    }
    if (rc == 0) rc = coord_redis_flush(r, 4, err);
    free(json);
    return rc;
}

/* ------------------------------------------------------------ following */

typedef struct {
    int tty, quiet, stream_tokens, max_new;
    int prefill_done, prefill_total, n_tokens, attempt, printed_tokens;
} progress;

static void draw(progress *p) {
    if (p->quiet || !p->tty) return;
    int width = 30, filled = 0;
    char what[96];
    if (p->attempt == 0) {
        snprintf(what, sizeof(what), "queued");
    } else if (p->n_tokens == 0 && p->prefill_total == 0) {
        snprintf(what, sizeof(what), "started (attempt %d)", p->attempt);
    } else if (p->n_tokens == 0) {
        filled = (int)((long)width * p->prefill_done / p->prefill_total);
        snprintf(what, sizeof(what), "prefill %d/%d tokens", p->prefill_done, p->prefill_total);
    } else if (p->max_new > 0) {
        filled = (int)((long)width * p->n_tokens / p->max_new);
        snprintf(what, sizeof(what), "generated %d/%d tokens", p->n_tokens, p->max_new);
    } else {
        snprintf(what, sizeof(what), "generated %d tokens", p->n_tokens);
    }
    if (filled > width) filled = width;
    fprintf(stderr, "\r[%.*s%.*s] %-40s", filled, "##############################", width - filled,
            "..............................", what);
    fflush(stderr);
}

static void take_entry(progress *p, const redisReply *fields, int *ended) {
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        size_t kl = 0, vl = 0;
        const char *k = coord_reply_str(fields, i, &kl), *v = coord_reply_str(fields, i + 1, &vl);
        if (!k || !v) continue;
        if (!strcmp(k, "start")) {
            p->attempt = atoi(v);
            if (p->attempt > 1 && !p->quiet)
                fprintf(stderr, "%sltri-submit: the job restarted (attempt %d)%s\n", p->tty ? "\n" : "", p->attempt,
                        p->printed_tokens ? "; the text above is from an earlier attempt" : "");
            p->n_tokens = p->prefill_done = p->prefill_total = 0;
        } else if (!strcmp(k, "prefill")) {
            p->prefill_done = atoi(v);
        } else if (!strcmp(k, "total")) {
            p->prefill_total = atoi(v);
        } else if (!strcmp(k, "tok")) {
            p->n_tokens++;
        } else if (!strcmp(k, "text") && p->stream_tokens && vl > 0) {
            fwrite(v, 1, vl, stdout);
            fflush(stdout);
            p->printed_tokens = 1;
        } else if (!strcmp(k, "end")) {
            *ended = 1;
        }
    }
}

/* Follows the job until its end; returns its final status in status. */
static int follow(coord_redis *r, const submit_options *o, const char *id, char *status, size_t cap,
                  ltri_error *err) {
    char last[64] = "0-0";
    coord_job_keys keys;
    coord_job_keys_of(&keys, id);
    progress p = {.tty = isatty(2), .quiet = o->quiet, .stream_tokens = o->stream_tokens, .max_new = o->max_new_tokens};
    double t0 = ltri_now_sec();
    int ended = 0;
    status[0] = '\0';
    while (!ended) {
        if (o->timeout_s > 0 && ltri_now_sec() - t0 > o->timeout_s)
            return ltri_fail(err, "timed out after %.0f s; follow it with: ltri-submit --follow %s", o->timeout_s, id);
        if (!r->ctx && connect_retrying(r, 60.0, err)) return ltri_fail_prefix(err, "following job %s: ", id);
        coord_args a;
        coord_args_init(&a);
        coord_args_add(&a, "XREAD");
        coord_args_add(&a, "COUNT");
        coord_args_add(&a, "256");
        coord_args_add(&a, "BLOCK");
        coord_args_add(&a, "1000");
        coord_args_add(&a, "STREAMS");
        coord_args_add(&a, keys.tokens);
        coord_args_add(&a, last);
        redisReply *rep = coord_redis_cmd(r, &a, err);
        if (!rep && r->ctx) return -1; /* an error reply: trying again cannot help */
        if (!rep) continue;              /* connection lost: reconnect above (bounded) */
        int got = 0;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->elements == 2) {
            const redisReply *list = rep->element[0]->element[1];
            for (size_t i = 0; i < list->elements; i++) {
                const redisReply *e = list->element[i];
                size_t len = 0;
                const char *eid = coord_reply_str(e, 0, &len);
                if (eid && len < sizeof(last)) memcpy(last, eid, len), last[len] = '\0';
                if (e->elements == 2 && e->element[1]->type == REDIS_REPLY_ARRAY) take_entry(&p, e->element[1], &ended);
                got = 1;
            }
        }
        freeReplyObject(rep);
        draw(&p);
        if (got && !ended) continue;
        /* no news, or the end: the hash has the truth (the token stream may have expired) */
        coord_args_init(&a);
        coord_args_add(&a, "HGET");
        coord_args_add(&a, keys.hash);
        coord_args_add(&a, "status");
        if (!(rep = coord_redis_cmd(r, &a, err))) {
            if (r->ctx) return -1;
            continue;
        }
        if (rep->type == REDIS_REPLY_NIL) {
            freeReplyObject(rep);
            return ltri_fail(err, "no job '%s' (%s does not exist; expired?)", id, keys.hash);
        }
        snprintf(status, cap, "%.*s", (int)rep->len, rep->str ? rep->str : "");
        freeReplyObject(rep);
        ended = !strcmp(status, "done") || !strcmp(status, "failed");
    }
    if (p.tty && !p.quiet) fputc('\n', stderr);
    return 0;
}

static int print_answer(coord_redis *r, const submit_options *o, const char *id, ltri_error *err) {
    coord_job_keys keys;
    coord_job_keys_of(&keys, id);
    coord_args a;
    coord_args_init(&a);
    coord_args_add(&a, "HMGET");
    coord_args_add(&a, keys.hash);
    coord_args_add(&a, "status");
    coord_args_add(&a, "output");
    coord_args_add(&a, "error");
    redisReply *rep = coord_redis_cmd(r, &a, err);
    if (!rep) return -1;
    size_t out_len = 0, err_len = 0;
    const char *status = coord_reply_str(rep, 0, NULL), *out = coord_reply_str(rep, 1, &out_len);
    const char *error = coord_reply_str(rep, 2, &err_len);
    int rc = 0;
    if (status && !strcmp(status, "done")) {
        if (!o->stream_tokens && out) fwrite(out, 1, out_len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        rc = ltri_fail(err, "job %s %s: %.*s", id, status ? status : "vanished", (int)err_len, error ? error : "");
    }
    freeReplyObject(rep);
    return rc;
}

int main(int argc, char **argv) {
    submit_options o;
    int prc = parse_args(argc, argv, &o);
    if (prc) {
        json_decref(o.job);
        return prc > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    coord_redis r;
    ltri_error err = {{0}};
    if (coord_redis_url_parse(&r, o.url, &err)) {
        fprintf(stderr, "ltri-submit: %s\n", err.msg);
        json_decref(o.job);
        return 2;
    }
    char id[COORD_ID_MAX + 1], status[32];
    int rc = 1;
    if (connect_retrying(&r, 5.0, &err)) goto out;
    if (o.follow) {
        snprintf(id, sizeof(id), "%s", o.follow);
    } else {
        if (o.id) snprintf(id, sizeof(id), "%s", o.id);
        else random_id(id, sizeof(id));
        if (submit(&r, &o, id, &err)) goto out;
        if (o.no_wait) {
            printf("%s\n", id);
            rc = 0;
            goto out;
        }
    }
    if (follow(&r, &o, id, status, sizeof(status), &err) || print_answer(&r, &o, id, &err)) goto out;
    rc = 0;
out:
    if (rc) fprintf(stderr, "ltri-submit: %s\n", err.msg);
    coord_redis_close(&r);
    json_decref(o.job);
    return rc;
}
