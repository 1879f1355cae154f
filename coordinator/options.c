/* The command line of ltri-worker's service mode (--redis). The engine's
 * flags mean what they mean in the one-shot mode (worker/main.c); the rest
 * are the service's. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/service.h"
#include "core/log.h"
#include "worker/attention_flags.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ltri-worker --redis redis://HOST:PORT --model DIR [options]\n"
            "\n"
            "Serves jobs from a Redis stream until SIGTERM (docs/JOBS.md). Under mpirun every rank runs\n"
            "the engine and rank 0 talks to Redis.\n"
            "\n"
            "  --redis URL                redis://[:password@]host[:port][/db]\n"
            "  --model DIR                Hugging Face model directory\n"
            "  --backend NAME             cpu, cuda or auto (default auto)\n"
            "  --device N                 CUDA device (default: the node-local MPI rank)\n"
            "  --chunk-size N             prefill chunk in tokens (default 512)\n"
            "  --max-context N            the most tokens one job may hold (default: max_position_embeddings)\n"
            "  --max-new-tokens N         for jobs that do not say (default 128)\n"
            "  --max-batch N              jobs decoded together (default 4; each holds a KV cache)\n"
            "  --max-tokens-in-flight N   admit a job only while running jobs' prompt + max_new_tokens\n"
            "                             stay within N (default 0: no limit beyond --max-batch)\n"
            "  --stream NAME              the job stream (default ltri:jobs; dead letters: NAME:dead)\n"
            "  --consumer NAME            this service's name in the consumer group (default host-pid)\n"
            "  --claim-idle-ms N          take over jobs of a coordinator silent this long (default 30000)\n"
            "  --max-attempts N           starts of a job before it is dead-lettered (default 3)\n"
            "  --result-ttl S             job keys expire S seconds after the answer (default 604800; 0 never)\n"
            "  --drain-seconds S          on SIGTERM let running jobs finish up to S s, then requeue them\n"
            "                             (default 0: requeue at once)\n"
            "  --redis-retry-seconds S    give up when Redis stays unreachable this long (default 300)\n"
            "  --max-prompt-bytes N       largest prompt + question (default 67108864)\n"
            "  --quiet                    only warnings and errors on stderr\n"
            "  --help                     this text\n"
            "\n");
    attn_flags_usage(f);
}

static int parse_long(const char *flag, const char *s, long min, long max, long *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        fprintf(stderr, "ltri-worker: %s needs an integer in %ld .. %ld, got '%s'\n", flag, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seconds(const char *flag, const char *s, double *out) {
    char *end = NULL;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 0 && v < 1e7)) {
        fprintf(stderr, "ltri-worker: %s needs a number of seconds >= 0, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int coord_service_parse_args(int argc, char **argv, coord_service_options *o) {
    memset(o, 0, sizeof(*o));
    o->backend = "auto";
    o->device = -1;
    o->chunk_size = 512;
    o->max_new_tokens = 128;
    o->max_batch = 4;
    o->drain_s = 0;
    o->max_prompt_bytes = 64u << 20;
    o->queue.stream = "ltri:jobs";
    o->queue.claim_idle_ms = 30000;
    o->queue.max_attempts = 3;
    o->queue.result_ttl_s = 604800;
    o->queue.retry_s = 300;
    enum { OPT_REDIS = 256, OPT_MODEL, OPT_BACKEND, OPT_DEVICE, OPT_CHUNK, OPT_MAX_CONTEXT, OPT_MAX_NEW, OPT_BATCH,
           OPT_IN_FLIGHT, OPT_STREAM, OPT_CONSUMER, OPT_CLAIM, OPT_ATTEMPTS, OPT_TTL, OPT_DRAIN, OPT_RETRY,
           OPT_PROMPT_BYTES, OPT_QUIET, OPT_HELP, OPT_ATTN };
    static const struct option base[] = {
        {"redis", required_argument, 0, OPT_REDIS},
        {"model", required_argument, 0, OPT_MODEL},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"device", required_argument, 0, OPT_DEVICE},
        {"chunk-size", required_argument, 0, OPT_CHUNK},
        {"max-context", required_argument, 0, OPT_MAX_CONTEXT},
        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW},
        {"max-batch", required_argument, 0, OPT_BATCH},
        {"max-tokens-in-flight", required_argument, 0, OPT_IN_FLIGHT},
        {"stream", required_argument, 0, OPT_STREAM},
        {"consumer", required_argument, 0, OPT_CONSUMER},
        {"claim-idle-ms", required_argument, 0, OPT_CLAIM},
        {"max-attempts", required_argument, 0, OPT_ATTEMPTS},
        {"result-ttl", required_argument, 0, OPT_TTL},
        {"drain-seconds", required_argument, 0, OPT_DRAIN},
        {"redis-retry-seconds", required_argument, 0, OPT_RETRY},
        {"max-prompt-bytes", required_argument, 0, OPT_PROMPT_BYTES},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
    };
    /* --attn and one --name-with-dashes per attention parameter, as ltri-worker */
    attn_flag_names attn_names;
    struct option longopts[48 + ATTN_FLAGS_GETOPT + 1];
    if (attn_flags_longopts(longopts, (int)(sizeof(longopts) / sizeof(longopts[0])), base,
                            (int)(sizeof(base) / sizeof(base[0])), &attn_names, OPT_ATTN))
        ltri_fatal("ltri-worker: the option table is too small"); /* a build-time size: our bug */
    attn_flag_set flags = {0};
    ltri_error err;
    long v = 0;
    opterr = 0;
    optind = 1;
    int c, idx = -1;
    while ((c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        int rc = 0;
        switch (c) {
        case OPT_REDIS: o->queue.url = optarg; break;
        case OPT_MODEL: o->model_dir = optarg; break;
        case OPT_BACKEND: o->backend = optarg; break;
        case OPT_DEVICE: rc = parse_long("--device", optarg, 0, 1024, &v), o->device = (int)v; break;
        case OPT_CHUNK: rc = parse_long("--chunk-size", optarg, 1, 1 << 20, &v), o->chunk_size = (int)v; break;
        case OPT_MAX_CONTEXT: rc = parse_long("--max-context", optarg, 1, 1 << 30, &v), o->max_context = (int)v; break;
        case OPT_MAX_NEW:
            rc = parse_long("--max-new-tokens", optarg, 0, 1 << 30, &v), o->max_new_tokens = (int)v;
            break;
        case OPT_BATCH: rc = parse_long("--max-batch", optarg, 1, 1024, &v), o->max_batch = (int)v; break;
        case OPT_IN_FLIGHT:
            rc = parse_long("--max-tokens-in-flight", optarg, 0, 1L << 40, &o->max_tokens_in_flight);
            break;
        case OPT_STREAM: o->queue.stream = optarg; break;
        case OPT_CONSUMER: o->queue.consumer = optarg; break;
        case OPT_CLAIM:
            rc = parse_long("--claim-idle-ms", optarg, 100, 1L << 30, &v), o->queue.claim_idle_ms = (int)v;
            break;
        case OPT_ATTEMPTS:
            rc = parse_long("--max-attempts", optarg, 1, 1000, &v), o->queue.max_attempts = (int)v;
            break;
        case OPT_TTL: rc = parse_long("--result-ttl", optarg, 0, 1L << 30, &v), o->queue.result_ttl_s = (int)v; break;
        case OPT_DRAIN: rc = parse_seconds("--drain-seconds", optarg, &o->drain_s); break;
        case OPT_RETRY: rc = parse_seconds("--redis-retry-seconds", optarg, &o->queue.retry_s); break;
        case OPT_PROMPT_BYTES:
            rc = parse_long("--max-prompt-bytes", optarg, 1, 1L << 40, &v), o->max_prompt_bytes = (size_t)v;
            break;
        case OPT_QUIET: o->quiet = 1; break;
        case OPT_HELP: usage(stdout); return 1;
        case OPT_ATTN:
            if (attn_flags_take(&flags, longopts[idx].name, optarg, &err)) {
                fprintf(stderr, "ltri-worker: %s\n", err.msg);
                return -1;
            }
            break;
        default:
            fprintf(stderr, "ltri-worker: unknown or incomplete option '%s' (in --redis mode)\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
        if (rc) return -1;
        idx = -1;
    }
    if (optind < argc) {
        fprintf(stderr, "ltri-worker: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->queue.url || !o->model_dir) {
        fprintf(stderr, "ltri-worker: --redis URL and --model DIR are required in service mode\n");
        return -1;
    }
    coord_redis url_check;
    if (coord_redis_url_parse(&url_check, o->queue.url, &err)) {
        fprintf(stderr, "ltri-worker: --redis: %s\n", err.msg);
        return -1;
    }
    if (!o->queue.stream[0] || strlen(o->queue.stream) > 120) {
        fprintf(stderr, "ltri-worker: --stream needs a name of 1 to 120 characters\n");
        return -1;
    }
    if (o->max_batch > o->chunk_size) {
        fprintf(stderr, "ltri-worker: --max-batch %d exceeds --chunk-size %d (one decode step is one chunk)\n",
                o->max_batch, o->chunk_size);
        return -1;
    }
    if (attn_flags_apply(&flags, -1, &o->attn, &err)) {
        fprintf(stderr, "ltri-worker: %s\n", err.msg);
        return -1;
    }
    return 0;
}
