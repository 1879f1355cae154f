/* ltri-worker: one rank of the ltri engine.
 *
 *   ltri-worker --model DIR (--prompt TEXT | --prompt-file F) [options]
 *
 * One-shot mode: tokenizes the prompt, prefills it in chunks, streams the
 * continuation to stdout, progress to stderr, and ends stderr with one line of
 * metrics as JSON. Under mpirun every rank runs the engine and the span index
 * is sharded across them (worker/attention_sparse.h); rank 0 prints. Exit
 * status: 0 done, 1 the run failed (bad model, prompt too long, a rank
 * failed), 2 bad command line. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timer.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/attention_flags.h"
#include "worker/collectives.h"
#include "worker/comm.h"
#include "worker/context_io.h"
#include "worker/engine.h"
#include "worker/generate.h"
#ifdef LTRI_HAVE_HIREDIS
#include "coordinator/service.h"
#endif

typedef struct {
    const char *model_dir;
    const char *prompt;
    const char *prompt_file;
    const char *backend;
    int device; /* -1: node-local rank */
    int max_new_tokens;
    int chunk_size;
    int max_context; /* 0: the model's max_position_embeddings */
    sampler_options sampling;
    const char *stop_tokens[GENERATE_MAX_STOP];
    int n_stop_tokens;
    int ignore_eos;
    int no_bos;
    int quiet;
    const char *dump_logits;
    const char *context_file, *save_context, *load_context;
    int attn_given; /* attention flags on the command line */
    ltri_attn_params attn;
} worker_options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ltri-worker --model DIR (--prompt TEXT | --prompt-file FILE|-) [options]\n"
            "\n"
            "  --model DIR            Hugging Face model directory (config.json, *.safetensors, tokenizer.json)\n"
            "  --prompt TEXT          the prompt\n"
            "  --prompt-file FILE     read the prompt from FILE ('-' for stdin)\n"
            "  --max-new-tokens N     tokens to generate (default 128)\n"
            "  --backend NAME         cpu, cuda or auto (default auto: cuda when a GPU is visible)\n"
            "  --device N             CUDA device (default: the node-local MPI rank)\n"
            "  --chunk-size N         prefill chunk in tokens (default 512)\n"
            "  --max-context N        the most tokens a sequence may hold (default: max_position_embeddings)\n"
            "  --temperature T        0 = greedy (default 0)\n"
            "  --top-p P              nucleus sampling mass (default 1.0 = off)\n"
            "  --top-k K              keep the K most likely tokens (default 0 = off)\n"
            "  --seed S               sampling seed (default 0)\n"
            "  --stop-token TOKEN     also stop after TOKEN (its text, e.g. '<|eot_id|>', or its id); repeatable\n"
            "  --ignore-eos           do not stop at the model's end-of-sequence tokens\n"
            "  --no-bos               do not add the tokenizer's beginning-of-sequence token\n"
            "  --quiet                only errors on stderr (the metrics line is still printed)\n"
            "  --dump-logits FILE     write each generated step's logits (fp32, vocab_size each) to FILE\n"
            "  --context-file FILE    a document prefilled before the prompt (what --save-context saves)\n"
            "  --save-context DIR     save the prefilled context (after --context-file / --load-context) to DIR\n"
            "  --load-context DIR     start from a saved context (its attention settings; any rank count);\n"
            "                         the prompt continues it\n"
            "  --redis URL            serve jobs from Redis instead (docs/JOBS.md; --redis URL --help: its options)\n"
            "  --help                 this text\n"
            "\n");
    attn_flags_usage(f);
}

static int parse_int(const char *flag, const char *s, int min, int *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > 1000000000L) {
        fprintf(stderr, "ltri-worker: %s needs an integer >= %d, got '%s'\n", flag, min, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float *out) {
    char *end = NULL;
    float v = strtof(s, &end);
    if (!*s || *end) {
        fprintf(stderr, "ltri-worker: %s needs a number, got '%s'\n", flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *flag, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || *s == '-' || errno == ERANGE) {
        fprintf(stderr, "ltri-worker: %s needs an integer >= 0, got '%s'\n", flag, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(int argc, char **argv, worker_options *o) {
    memset(o, 0, sizeof(*o));
    o->backend = "auto";
    o->device = -1;
    o->max_new_tokens = 128;
    o->chunk_size = 512;
    o->sampling.top_p = 1.0f;
    attn_params_default(&o->attn, LTRI_ATTN_FULL);
    enum { OPT_MODEL = 256, OPT_PROMPT, OPT_PROMPT_FILE, OPT_MAX_NEW, OPT_BACKEND, OPT_DEVICE, OPT_CHUNK,
           OPT_MAX_CONTEXT, OPT_TEMP, OPT_TOP_P, OPT_TOP_K, OPT_SEED, OPT_STOP, OPT_IGNORE_EOS, OPT_NO_BOS,
           OPT_QUIET, OPT_HELP, OPT_ATTN, OPT_DUMP_LOGITS, OPT_CONTEXT_FILE, OPT_SAVE_CONTEXT, OPT_LOAD_CONTEXT };
    /* --attn, --n-sink etc. (attention_flags.h): applied once the mode, whose
     * defaults they override, is known. */
    static attn_flag_names attn_names;
    static struct option longopts[48 + ATTN_FLAGS_GETOPT + 1];
    static const struct option base[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"prompt", required_argument, 0, OPT_PROMPT},
        {"prompt-file", required_argument, 0, OPT_PROMPT_FILE},
        {"max-new-tokens", required_argument, 0, OPT_MAX_NEW},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"device", required_argument, 0, OPT_DEVICE},
        {"chunk-size", required_argument, 0, OPT_CHUNK},
        {"max-context", required_argument, 0, OPT_MAX_CONTEXT},
        {"temperature", required_argument, 0, OPT_TEMP},
        {"top-p", required_argument, 0, OPT_TOP_P},
        {"top-k", required_argument, 0, OPT_TOP_K},
        {"seed", required_argument, 0, OPT_SEED},
        {"stop-token", required_argument, 0, OPT_STOP},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"no-bos", no_argument, 0, OPT_NO_BOS},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {"dump-logits", required_argument, 0, OPT_DUMP_LOGITS},
        {"context-file", required_argument, 0, OPT_CONTEXT_FILE},
        {"save-context", required_argument, 0, OPT_SAVE_CONTEXT},
        {"load-context", required_argument, 0, OPT_LOAD_CONTEXT},
    };
    if (attn_flags_longopts(longopts, (int)(sizeof(longopts) / sizeof(longopts[0])), base,
                            (int)(sizeof(base) / sizeof(base[0])), &attn_names, OPT_ATTN))
        ltri_fatal("ltri-worker: the option table is too small"); /* a build-time size: our bug */
    attn_flag_set flags = {0};
    ltri_error err;
    opterr = 0;
    int c, idx = -1;
    while ((c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
        int rc = 0;
        switch (c) {
        case OPT_MODEL: o->model_dir = optarg; break;
        case OPT_PROMPT: o->prompt = optarg; break;
        case OPT_PROMPT_FILE: o->prompt_file = optarg; break;
        case OPT_MAX_NEW: rc = parse_int("--max-new-tokens", optarg, 0, &o->max_new_tokens); break;
        case OPT_BACKEND: o->backend = optarg; break;
        case OPT_DEVICE: rc = parse_int("--device", optarg, 0, &o->device); break;
        case OPT_CHUNK: rc = parse_int("--chunk-size", optarg, 1, &o->chunk_size); break;
        case OPT_MAX_CONTEXT: rc = parse_int("--max-context", optarg, 1, &o->max_context); break;
        case OPT_TEMP: rc = parse_float("--temperature", optarg, &o->sampling.temperature); break;
        case OPT_TOP_P: rc = parse_float("--top-p", optarg, &o->sampling.top_p); break;
        case OPT_TOP_K: rc = parse_int("--top-k", optarg, 0, &o->sampling.top_k); break;
        case OPT_SEED: rc = parse_u64("--seed", optarg, &o->sampling.seed); break;
        case OPT_STOP:
            if (o->n_stop_tokens == GENERATE_MAX_STOP) {
                fprintf(stderr, "ltri-worker: at most %d --stop-token\n", GENERATE_MAX_STOP);
                return -1;
            }
            o->stop_tokens[o->n_stop_tokens++] = optarg;
            break;
        case OPT_IGNORE_EOS: o->ignore_eos = 1; break;
        case OPT_NO_BOS: o->no_bos = 1; break;
        case OPT_QUIET: o->quiet = 1; break;
        case OPT_DUMP_LOGITS: o->dump_logits = optarg; break;
        case OPT_CONTEXT_FILE: o->context_file = optarg; break;
        case OPT_SAVE_CONTEXT: o->save_context = optarg; break;
        case OPT_LOAD_CONTEXT: o->load_context = optarg; break;
        case OPT_HELP: usage(stdout); return 1;
        case OPT_ATTN:
            o->attn_given = 1;
            if (attn_flags_take(&flags, longopts[idx].name, optarg, &err)) {
                fprintf(stderr, "ltri-worker: %s\n", err.msg);
                return -1;
            }
            break;
        default:
            fprintf(stderr, "ltri-worker: unknown or incomplete option '%s'\n", argv[optind - 1]);
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
    if (!o->model_dir) {
        fprintf(stderr, "ltri-worker: --model DIR is required\n");
        usage(stderr);
        return -1;
    }
    if (!!o->prompt + !!o->prompt_file > 1 ||
        (!o->prompt && !o->prompt_file && !o->context_file && !o->load_context)) {
        fprintf(stderr, "ltri-worker: give exactly one of --prompt and --prompt-file\n");
        return -1;
    }
    if (o->context_file && o->load_context) {
        fprintf(stderr, "ltri-worker: --context-file and --load-context both give the context; use one\n");
        return -1;
    }
    if (attn_flags_apply(&flags, -1, &o->attn, &err)) {
        fprintf(stderr, "ltri-worker: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* Reads a whole file (or stdin for "-") into a NUL-terminated buffer. */
static char *read_prompt_file(const char *path, size_t *len, ltri_error *err) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        ltri_fail(err, "cannot open prompt file '%s'", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf || failed) {
        free(buf);
        ltri_fail(err, "cannot read prompt file '%s'", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* --------------------------------------------------------- streaming output */

typedef struct {
    const ltri_tokenizer *tok;
    int quiet;
    int chunk_size;
    double last_report;
} run_state;

static void print_token(void *user, int32_t id) {
    run_state *s = user;
    if (tokenizer_is_special(s->tok, id)) return;
    int len = 0;
    const char *bytes = tokenizer_token_bytes(s->tok, id, &len);
    if (bytes && len > 0) fwrite(bytes, 1, (size_t)len, stdout);
    fflush(stdout);
}

/* Progress for prompts longer than one chunk: a line at least every second and
 * one at the end, so long prefills never look hung. */
static void report_prefill(void *user, int done, int total, double seconds) {
    run_state *s = user;
    if (s->quiet || total <= s->chunk_size) return;
    if (done < total && seconds - s->last_report < 1.0) return;
    s->last_report = seconds;
    LOG_INFO("prefill %d/%d tokens (%.0f%%), %.0f tok/s", done, total, 100.0 * done / total,
             seconds > 0 ? done / seconds : 0.0);
}

static int resolve_stop_tokens(const worker_options *o, const ltri_model *m, generate_options *g,
                               ltri_error *err) {
    g->n_stop = 0;
    if (!o->ignore_eos)
        for (int i = 0; i < m->cfg.n_eos && g->n_stop < GENERATE_MAX_STOP; i++)
            g->stop_ids[g->n_stop++] = m->cfg.eos_token_ids[i];
    for (int i = 0; i < o->n_stop_tokens; i++) {
        int32_t id = tokenizer_token_id(m->tokenizer, o->stop_tokens[i]);
        if (id < 0) {
            char *end = NULL;
            long v = strtol(o->stop_tokens[i], &end, 10);
            if (*o->stop_tokens[i] && !*end && v >= 0 && v < m->cfg.vocab_size) id = (int32_t)v;
        }
        if (id < 0) return ltri_fail(err, "--stop-token '%s' is not a token of this tokenizer", o->stop_tokens[i]);
        if (g->n_stop == GENERATE_MAX_STOP) return ltri_fail(err, "too many stop tokens");
        g->stop_ids[g->n_stop++] = id;
    }
    return 0;
}

static void print_metrics(const worker_options *o, const ltri_backend *be, const ltri_engine *e,
                          const generate_result *r) {
    json_t *j = json_object();
    char attn[512];
    ltri_attn_params full;
    attn_params_default(&full, LTRI_ATTN_FULL);
    attn_params_describe(e->sparse ? &e->sparse->p : &full, attn, sizeof(attn));
    json_object_set_new(j, "attn", json_string(attn));
    json_object_set_new(j, "backend", json_string(be->name));
    json_object_set_new(j, "prompt_tokens", json_integer(r->n_prompt));
    json_object_set_new(j, "generated_tokens", json_integer(r->n_tokens));
    json_object_set_new(j, "stop", json_string(r->stop == GENERATE_STOP_TOKEN ? "stop_token" : "length"));
    json_object_set_new(j, "chunk_size", json_integer(o->chunk_size));
    json_object_set_new(j, "prefill_seconds", json_real(r->prefill_seconds));
    json_object_set_new(j, "prefill_tok_per_s", json_real(generate_prefill_tok_per_s(r)));
    json_object_set_new(j, "ttft_ms", json_real(1e3 * r->ttft_seconds));
    json_object_set_new(j, "ms_per_output_token", json_real(generate_ms_per_output_token(r)));
    if (e->sparse) {
        const sparse_stats stats = sparse_stats_get(e->sparse, e->be);
        const sparse_stats *st = &stats;
        json_object_set_new(j, "spans_created", json_integer(st->spans_created));
        json_object_set_new(j, "mean_span_len",
                            json_real(st->spans_created ? (double)st->span_tokens / st->spans_created : 0.0));
        json_object_set_new(j, "spans_retrieved_per_call",
                            json_real(st->calls ? (double)st->spans_retrieved / st->calls : 0.0));
        json_object_set_new(j, "kv_read_fraction", json_real(sparse_read_fraction(st, 0)));
        json_object_set_new(j, "kv_read_fraction_decode", json_real(sparse_read_fraction(st, 1)));
    }
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    fprintf(stderr, "metrics: %s\n", s ? s : "{}");
    free(s);
    json_decref(j);
}

/* Every rank runs the same engine on the same tokens. Rank 0 reads and
 * tokenizes the prompt (stdin reaches rank 0 only) and broadcasts the ids; its
 * choice of each generated token is broadcast too, so the ranks can never
 * drift apart on a near tie. A step that fails on any rank fails on all: the
 * ranks agree on every fallible step before the next collective. */
typedef struct {
    const ltri_comm *comm;
    run_state *print;
    FILE *dump;        /* --dump-logits: rank 0 writes each step's logits */
    int fault_rank, fault_step, fault_hang, step; /* LTRI_FAULT_INJECT, for the failure tests */
} rank_state;

static void agree_token(void *user, int32_t *id, const float *logits, int vocab) {
    rank_state *r = user;
    if (r->dump && logits) fwrite(logits, sizeof(float), (size_t)vocab, r->dump);
    if (r->comm->size > 1) MPI_CHECK(MPI_Bcast(id, 1, MPI_INT32_T, 0, r->comm->world));
    if (++r->step == r->fault_step && r->comm->rank == r->fault_rank) {
        LOG_ERROR("LTRI_FAULT_INJECT: rank %d %s at step %d", r->comm->rank, r->fault_hang ? "hangs" : "crashes",
                  r->step);
        fflush(stderr);
        if (r->fault_hang)
            for (;;) sleep(1);
        abort();
    }
}

static void rank0_token(void *user, int32_t id) {
    rank_state *r = user;
    if (r->comm->rank == 0) print_token(r->print, id);
}

static void rank0_prefill(void *user, int done, int total, double seconds) {
    rank_state *r = user;
    if (r->comm->rank == 0) report_prefill(r->print, done, total, seconds);
}

/* 0 when every rank succeeded; else 1 on every rank. */
static int all_ok(const ltri_comm *comm, int rc) {
    int bad = rc != 0, any = bad;
    if (comm->size > 1) MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm->world));
    return any;
}

static int run(const worker_options *o, const ltri_comm *comm) {
    ltri_error err = {{0}};
    ltri_model model;
    ltri_backend *be = NULL;
    ltri_engine engine = {0};
    ltri_collectives coll = {0};
    int32_t *ids = NULL;
    char *file_text = NULL;
    generate_result res = {0};
    int rc = 1, n_ids = 0, rank0 = comm->rank == 0;
    rank_state rs = {.comm = comm, .fault_rank = -1};

    int opened = model_open(&model, o->model_dir, 1, &err) == 0;
    if (all_ok(comm, !opened)) {
        if (!opened) LOG_ERROR("%s", err.msg);
        if (opened) model_close(&model);
        return 1;
    }
    int limit = o->max_context ? o->max_context : model.cfg.max_position_embeddings;
    /* A saved context brings its attention settings; flags may only repeat them. */
    ltri_attn_params attn = o->attn;
    int n_loaded = 0;
    if (o->load_context) {
        ltri_attn_params saved;
        int ok = context_peek(o->load_context, &saved, &n_loaded, NULL, &err) == 0;
        char a[512], b[512];
        if (ok) {
            attn_params_describe(&saved, a, sizeof(a));
            attn_params_describe(&o->attn, b, sizeof(b));
            if (o->attn_given && strcmp(a, b) != 0) {
                ltri_fail(&err, "%s was saved with attention '%s'; the flags ask for '%s'", o->load_context, a, b);
                ok = 0;
            }
            attn = saved;
        }
        if (all_ok(comm, !ok)) {
            if (rank0) LOG_ERROR("%s", err.msg);
            goto out;
        }
    }
    /* the context document and the prompt, tokenized on rank 0 only */
    int n_ctx = 0;
    if (rank0) {
        n_ids = 0;
        if (o->context_file &&
            ((file_text = read_prompt_file(o->context_file, &(size_t){0}, &err)) == NULL ||
             tokenizer_encode(model.tokenizer, file_text, strlen(file_text), !o->no_bos, &ids, &n_ctx, &err))) {
            n_ids = -1;
        }
        if (n_ids == 0 && (o->prompt || o->prompt_file)) {
            const char *text = o->prompt;
            size_t text_len = o->prompt ? strlen(o->prompt) : 0;
            char *prompt_text = NULL;
            int32_t *pids = NULL;
            int n_p = 0;
            /* after a context the prompt continues it: no second BOS */
            int bos = !o->no_bos && !o->context_file && !o->load_context;
            if (o->prompt_file && !(text = prompt_text = read_prompt_file(o->prompt_file, &text_len, &err))) n_ids = -1;
            else if (tokenizer_encode(model.tokenizer, text, text_len, bos, &pids, &n_p, &err)) n_ids = -1;
            if (n_ids == 0) {
                int32_t *all = realloc(ids, sizeof(int32_t) * (size_t)(n_ctx + n_p + 1));
                if (all) {
                    memcpy(all + n_ctx, pids, sizeof(int32_t) * (size_t)n_p);
                    ids = all;
                    n_ids = n_ctx + n_p;
                }
            }
            free(prompt_text);
            free(pids);
        } else if (n_ids == 0) {
            n_ids = n_ctx;
        }
        if (n_ids == 0 && n_ctx == 0 && !o->load_context) n_ids = -1, ltri_fail(&err, "the prompt is empty (0 tokens)");
        else if (n_ids >= 0 && n_loaded + n_ids + (o->max_new_tokens > 0 ? o->max_new_tokens - 1 : 0) > limit) {
            ltri_fail(&err,
                      "prompt of %d tokens + %d new tokens exceeds the context limit of %d tokens (raise "
                      "--max-context)",
                      n_loaded + n_ids, o->max_new_tokens, limit);
            n_ids = -1;
        }
    }
    int counts[2] = {n_ids, n_ctx};
    if (comm->size > 1) MPI_CHECK(MPI_Bcast(counts, 2, MPI_INT, 0, comm->world));
    n_ids = counts[0], n_ctx = counts[1];
    if (n_ids < 0) {
        if (rank0) LOG_ERROR("%s", err.msg);
        goto out;
    }
    if (!rank0 && !(ids = malloc(sizeof(int32_t) * (size_t)(n_ids + 1)))) ltri_fatal("out of memory");
    if (comm->size > 1 && n_ids > 0) MPI_CHECK(MPI_Bcast(ids, n_ids, MPI_INT32_T, 0, comm->world));
    int need = n_loaded + n_ids + (o->max_new_tokens > 0 ? o->max_new_tokens - 1 : 0);

    int device = o->device >= 0 ? o->device : comm->local_rank;
    int step_rc = !(be = backend_create(o->backend, device, &err));
    if (all_ok(comm, step_rc)) goto fail;
    step_rc = collectives_init(&coll, comm, be, 0, &err);
    if (all_ok(comm, step_rc)) goto fail;
    engine_options eo = {
        .max_context = need, .chunk_size = o->chunk_size, .max_logit_rows = 1, .attn = attn, .coll = &coll};
    step_rc = engine_init(&engine, be, &model, &eo, &err);
    if (all_ok(comm, step_rc)) goto fail;
    if (o->load_context && all_ok(comm, context_load(&engine, &model, &coll, o->load_context, &err))) goto fail;

    run_state state = {.tok = model.tokenizer, .quiet = o->quiet, .chunk_size = o->chunk_size};
    rs.print = &state;
    const char *fault = getenv("LTRI_FAULT_INJECT"); /* "RANK:STEP:crash|hang" */
    if (fault) {
        char kind[16] = "";
        if (sscanf(fault, "%d:%d:%15s", &rs.fault_rank, &rs.fault_step, kind) == 3) rs.fault_hang = !strcmp(kind, "hang");
    }
    if (rank0 && o->dump_logits && !(rs.dump = fopen(o->dump_logits, "wb"))) {
        ltri_fail(&err, "cannot write --dump-logits file '%s'", o->dump_logits);
        step_rc = 1;
    }
    generate_options g = {.max_new_tokens = o->max_new_tokens, .sampling = o->sampling, .on_token = rank0_token,
                          .on_prefill = rank0_prefill, .agree = agree_token, .user = &rs};
    if (!step_rc) step_rc = resolve_stop_tokens(o, &model, &g, &err);
    if (all_ok(comm, step_rc)) goto fail;
    if (n_ctx > 0) { /* the context document, then (maybe) its save */
        if (generate_prefill(&engine, ids, n_ctx, &g, NULL, &err)) goto fail;
    }
    if (o->save_context && context_save(&engine, &model, &coll, o->save_context, &err)) goto fail;
    if (n_ids - n_ctx == 0) { /* nothing more: a save-only run */
        if (o->max_new_tokens > 0 && rank0) LOG_WARN("no prompt after the context: nothing generated");
        rc = 0;
        goto out;
    }
    if (!o->quiet && rank0)
        LOG_INFO("prompt: %d tokens after %d of context; generating up to %d on %d rank(s)", n_ids - n_ctx,
                 n_loaded + n_ctx, o->max_new_tokens, comm->size);
    /* generate() fails only on input every rank shares, so all ranks fail alike */
    if (generate(&engine, ids + n_ctx, n_ids - n_ctx, &g, &res, &err)) goto fail;
    if (rank0) {
        fputc('\n', stdout);
        fflush(stdout);
        print_metrics(o, be, &engine, &res);
    }
    rc = 0;
    goto out;
fail:
    if (err.msg[0]) LOG_ERROR("%s", err.msg);
out:
    if (rs.dump) fclose(rs.dump);
    generate_result_free(&res);
    engine_free(&engine);
    collectives_free(&coll);
    backend_destroy(be);
    free(ids);
    free(file_text);
    model_close(&model);
    return rc;
}

/* --redis URL: the job service (coordinator/service.h), which has options of its own. */
static int wants_service(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--redis") == 0 || strncmp(argv[i], "--redis=", 8) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    if (wants_service(argc, argv)) {
#ifdef LTRI_HAVE_HIREDIS
        return coord_service_main(argc, argv);
#else
        fprintf(stderr, "ltri-worker: --redis: built without hiredis (install libhiredis-dev and rebuild)\n");
        return 2;
#endif
    }
    worker_options o;
    int prc = parse_args(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    ltri_log_init(o.quiet ? LTRI_LOG_WARN : LTRI_LOG_INFO, -1);
    ltri_comm comm;
    comm_init(&comm, &argc, &argv);
    int rc = run(&o, &comm);
    comm_finalize(&comm);
    return rc;
}
