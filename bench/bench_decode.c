/* bench_decode: prefill throughput and decode step time of every attention mode
 * against context length, with the bytes each decode step must read and the
 * floor those bytes set at the measured memory bandwidth.
 *
 *   bench_decode --config bench/configs/llama-3.1-8b.json --backend cuda \
 *                --contexts 8192,32768,131072 --modes full,streaming,infllm,ltri
 *
 * Random bf16 weights of the config's shapes (model_open_random), random
 * prompt tokens. Per (mode, context): prefill in chunks, then `steps` decode
 * steps timed one by one (each ends with the logits on the host); the median
 * is reported. Bytes per step = weights + K/V rows read (window + retrieved, as
 * counted by the engine) + index vectors scored. The floor is bytes over the
 * device-to-device copy bandwidth measured at start. Output: a markdown table on
 * stdout, one JSON line per row in --json FILE.
 *
 * --batch B: B sequences, each prefilled with `context` tokens, then decoded
 * together, one token each per step (engine_decode_batch: the GEMMs over all
 * of them); bytes per step count the weights once and every sequence's K/V.
 *
 * --phases (sparse modes, batch 1): after the timed steps, as many more with the device
 * synchronised at each phase boundary of the sparse attention (sparse_phase in
 * worker/attention_sparse.h); prints ms per step and phase on stderr. It also
 * profiles the last PREFILL_PROFILED_CHUNKS prefill chunks the same way (their
 * synchronisations then count in the prefill rate: a few percent).
 *
 * --fill-kv (full attention): instead of a prefill, every sequence's cache is
 * filled with random bf16 values and the sequence set to hold `context`
 * tokens. A decode step's time does not depend on what the cache holds, and
 * a 512K-token prefill of full attention takes minutes (its attention is
 * quadratic); the sparse modes always prefill (their index comes from it).
 * Prefill tok/s then reads "-".
 *
 * --ncu (CUDA): after the timed steps, one more between
 * cudaProfilerStart and cudaProfilerStop, so that `ncu --profile-from-start
 * off` times that decode step's kernels and nothing else (tools/ncu_kernels.py
 * sums them per kernel). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "bench/bench_util.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "worker/attention_flags.h"
#include "worker/engine.h"

#ifdef LTRI_HAVE_CUDA
#include <cuda_profiler_api.h>
#endif

#define PREFILL_PROFILED_CHUNKS 16

/* The rest of a --phases line: ms per call (step or chunk) of each phase. */
static void print_phases(const sparse_state *sp, int calls) {
    for (int ph = 0; ph < SPARSE_N_PHASES; ph++)
        fprintf(stderr, " %s %.2f", sparse_phase_names[ph], 1e3 * sp->phase_sec[ph] / calls);
    fprintf(stderr, "\n");
}

typedef struct {
    const char *config, *backend, *json_path;
    int contexts[16], n_contexts;
    ltri_attn_mode modes[4];
    int n_modes;
    int steps, chunk;
    int phases; /* --phases: after the timed steps, as many profiled ones (sparse modes, batch 1) */
    int batch;  /* --batch B: B sequences of `context` tokens, decoded together (engine_decode_batch) */
    int ncu;    /* --ncu: one more step inside cudaProfilerStart / Stop (CUDA) */
    int fill_kv; /* --fill-kv: full attention's caches filled at random instead of a prefill */
    attn_flag_set flags;
} bench_options;

/* --fill-kv: every sequence's caches hold ctx random rows, as if prefilled. */
static void fill_caches(ltri_engine *e, ltri_rng *rng, int ctx) {
    ltri_backend *be = e->be;
    const size_t rows = 4096, values = rows * (size_t)e->kv_width;
    const size_t row = (size_t)e->kv_width * ltri_dtype_size(be->kv_dtype);
    float *random = malloc(values * sizeof(float));
    void *chunk = malloc(rows * row);
    if (!random || !chunk) ltri_fatal("bench_decode: out of host memory");
    for (size_t i = 0; i < values; i++) random[i] = (float)(ltri_rng_u32(rng) % 2048) / 1024.0f - 1.0f;
    ltri_convert(chunk, be->kv_dtype, random, LTRI_F32, values);
    for (int b = 0; b < e->n_seqs; b++) {
        engine_select(e, b);
        for (int l = 0; l < e->cfg.n_layers; l++)
            for (size_t r = 0; r < (size_t)ctx; r += rows) {
                const size_t n = (size_t)ctx - r < rows ? (size_t)ctx - r : rows;
                be->copy_to(be, (char *)e->layers[l].k_cache + r * row, chunk, n * row);
                be->copy_to(be, (char *)e->layers[l].v_cache + r * row, chunk, n * row);
            }
        e->n_past = ctx;
    }
    engine_select(e, 0);
    be->synchronize(be);
    free(random), free(chunk);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_decode --config CONFIG.json [--backend cuda] [--contexts 8K,32K,128K]\n"
                    "                    [--modes full,streaming,infllm,ltri] [--steps 16] [--chunk-size 512]\n"
                    "                    [--batch B] [--json FILE] [--phases | --ncu] [--fill-kv] [attention flags as for ltri-worker: --n-local N ...]\n");
}

static int parse(int argc, char **argv, bench_options *o) {
    memset(o, 0, sizeof(*o));
    o->backend = "auto";
    o->steps = 16;
    o->batch = 1;
    o->chunk = 512;
    o->n_contexts = bench_parse_list("8K,32K,128K", o->contexts, 16);
    for (int m = 0; m < 4; m++) o->modes[o->n_modes++] = (ltri_attn_mode)m;
    ltri_error err;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int used = attn_flags_parse(&o->flags, a, v, &err);
        if (used < 0) {
            fprintf(stderr, "bench_decode: %s\n", err.msg);
            return -1;
        }
        if (used > 0) {
            i += used - 1;
            continue;
        }
        if (!strcmp(a, "--phases")) {
            o->phases = 1;
            continue;
        }
        if (!strcmp(a, "--fill-kv")) {
            o->fill_kv = 1;
            continue;
        }
        if (!strcmp(a, "--ncu")) {
#ifndef LTRI_HAVE_CUDA
            fprintf(stderr, "bench_decode: --ncu needs a build with the CUDA backend\n");
            return -1;
#endif
            o->ncu = 1;
            continue;
        }
        if (!v) {
            usage();
            return -1;
        }
        if (!strcmp(a, "--config")) o->config = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--json")) o->json_path = v;
        else if (!strcmp(a, "--steps")) o->steps = atoi(v);
        else if (!strcmp(a, "--batch")) o->batch = atoi(v);
        else if (!strcmp(a, "--chunk-size")) o->chunk = atoi(v);
        else if (!strcmp(a, "--contexts")) {
            if ((o->n_contexts = bench_parse_list(v, o->contexts, 16)) < 1) {
                fprintf(stderr, "bench_decode: bad --contexts '%s'\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--modes")) {
            o->n_modes = 0;
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t && o->n_modes < 4; t = strtok_r(NULL, ",", &save)) {
                int m = attn_mode_parse(t);
                if (m < 0) {
                    fprintf(stderr, "bench_decode: unknown mode '%s'\n", t);
                    free(copy);
                    return -1;
                }
                o->modes[o->n_modes++] = (ltri_attn_mode)m;
            }
            free(copy);
        } else {
            usage();
            return -1;
        }
        i++;
    }
    if (!o->config || o->steps < 1 || o->chunk < 1 || o->batch < 1 || o->batch > o->chunk ||
        (o->ncu && o->phases)) {
        usage();
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_options o;
    if (parse(argc, argv, &o)) return 2;
    ltri_log_init(LTRI_LOG_WARN, -1);
    ltri_error err;
    ltri_model m;
    if (model_open_random(&m, o.config, 1, &err)) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    ltri_backend *be = backend_create(o.backend, 0, &err);
    if (!be) {
        fprintf(stderr, "bench_decode: %s\n", err.msg);
        return 1;
    }
    double bw = bench_copy_bandwidth(be);
    FILE *json = o.json_path ? fopen(o.json_path, "w") : NULL;
    const ltri_model_config *c = &m.cfg;
    size_t kv_row = (size_t)c->n_kv_heads * c->head_dim * ltri_dtype_size(be->kv_dtype);
    printf("config %s, backend %s, measured copy bandwidth %.0f GB/s (read + write)\n\n", o.config, be->name,
           bw / 1e9);
    printf("| mode | context | prefill tok/s | decode ms/step (median) | KV read/step | index read/step | bytes/step | "
           "floor ms | x floor | KV read fraction | device tier hit rate |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    fflush(stdout);
    ltri_rng rng;
    ltri_rng_seed(&rng, 7);
    for (int ci = 0; ci < o.n_contexts; ci++) {
        int ctx = o.contexts[ci];
        /* sequence b reads the stream from offset b: distinct sequences, one array */
        const int B = o.batch, n_tokens = ctx + 2 * o.steps + B;
        int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n_tokens);
        for (int i = 0; i < n_tokens; i++) tokens[i] = (int32_t)(ltri_rng_u32(&rng) % (uint32_t)c->vocab_size);
        float *logits = malloc(sizeof(float) * (size_t)c->vocab_size * B);
        int *seq_ids = malloc(sizeof(int) * (size_t)B);
        int32_t *step_tokens = malloc(sizeof(int32_t) * (size_t)B);
        sparse_stats *before = malloc(sizeof(sparse_stats) * (size_t)B);
        for (int b = 0; b < B; b++) seq_ids[b] = b;
        for (int mi = 0; mi < o.n_modes; mi++) {
            engine_options eo = {
                .max_context = ctx + 2 * o.steps + 1, .chunk_size = o.chunk, .max_logit_rows = B, .max_seqs = B};
            if (attn_flags_apply(&o.flags, o.modes[mi], &eo.attn, &err)) {
                fprintf(stderr, "bench_decode: %s\n", err.msg);
                return 2;
            }
            ltri_engine e;
            if (engine_init(&e, be, &m, &eo, &err)) {
                printf("| %s | %d | - | - | - | - | - | - | - | - | out of memory: %s |\n", attn_mode_name(o.modes[mi]),
                       ctx, err.msg);
                fflush(stdout);
                continue;
            }
            double t0 = ltri_now_sec();
            int rc = 0;
            const int profile_prefill = o.phases && e.sparse && B == 1;
            int profiled_chunks = 0;
            const int fill = o.fill_kv && !e.sparse;
            if (fill) fill_caches(&e, &rng, ctx);
            for (int b = 0; b < B && !rc && !fill; b++) {
                engine_select(&e, b);
                for (int done = 0; done < ctx && !rc; done += o.chunk) {
                    int n = ctx - done < o.chunk ? ctx - done : o.chunk;
                    if (profile_prefill && !e.sparse->profile && done >= ctx - PREFILL_PROFILED_CHUNKS * o.chunk)
                        sparse_profile_begin(e.sparse);
                    profiled_chunks += e.sparse && e.sparse->profile;
                    rc = engine_forward(&e, tokens + b + done, n, done + n == ctx ? logits : NULL, 0, &err);
                }
            }
            double prefill = ltri_now_sec() - t0;
            if (profile_prefill && profiled_chunks > 0) {
                e.sparse->profile = 0;
                fprintf(stderr, "%s %d prefill phases, ms per chunk of %d (the last %d chunks):",
                        attn_mode_name(o.modes[mi]), ctx, o.chunk, profiled_chunks);
                print_phases(e.sparse, profiled_chunks);
            }
            for (int b = 0; b < B; b++)
                before[b] = e.seqs[b].sparse ? sparse_stats_get(e.seqs[b].sparse, be) : (sparse_stats){0};
            double *step = malloc(sizeof(double) * (size_t)o.steps);
            for (int s = 0; s < o.steps && !rc; s++) {
                double s0 = ltri_now_sec();
                if (B == 1) {
                    rc = engine_forward(&e, tokens + ctx + s, 1, logits, 0, &err);
                } else {
                    for (int b = 0; b < B; b++) step_tokens[b] = tokens[b + ctx + s];
                    rc = engine_decode_batch(&e, seq_ids, step_tokens, B, logits, &err);
                }
                step[s] = ltri_now_sec() - s0;
            }
            if (rc) {
                fprintf(stderr, "bench_decode: %s\n", err.msg);
                return 1;
            }
            qsort(step, (size_t)o.steps, sizeof(double), bench_cmp_double);
            double med = step[o.steps / 2];
            /* K/V rows read per decode step, over all layers */
            double kv_bytes, index_bytes = 0.0, frac = 1.0, host_tier = 0.0, vec_alloc = 0.0;
            long hits = 0, misses = 0;
            if (e.sparse) { /* summed over the batch's sequences */
                double read = 0.0, full = 0.0;
                for (int b = 0; b < B; b++) {
                    const sparse_state *sp = e.seqs[b].sparse;
                    const sparse_stats now = sparse_stats_get(sp, be);
                    read += (double)(now.decode_keys_read - before[b].decode_keys_read);
                    full += (double)(now.decode_keys_full - before[b].decode_keys_full);
                    for (int l = 0; l < c->n_layers; l++) {
                        const span_index *ix = &sp->layers[l].index;
                        index_bytes += (double)ix->n_local * ix->R * kv_row;
                        const span_store *ss = &sp->layers[l].store;
                        if (ss->tiered) host_tier += 2.0 * ss->n_pages * ss->page_size * (double)kv_row;
                        vec_alloc += (double)ix->cap_local * ix->R * kv_row;
                        hits += ss->fetch_hits;
                        misses += ss->fetch_misses;
                    }
                }
                kv_bytes = read / o.steps * 2.0 * (double)kv_row;
                frac = read / full;
            } else {
                kv_bytes = (double)B * (ctx + o.steps / 2) * c->n_layers * 2.0 * (double)kv_row;
            }
            double bytes = (double)e.weight_bytes + kv_bytes + index_bytes;
            double floor_ms = bw > 0 ? 1e3 * bytes / bw : 0.0; /* bw counts bytes read + written */
            char tier[64] = "-";
            if (hits + misses > 0) snprintf(tier, sizeof(tier), "%.3f", (double)hits / (double)(hits + misses));
            char label[48]; /* the mode, and the batch when > 1 */
            snprintf(label, sizeof(label), B > 1 ? "%s, batch %d" : "%s", attn_mode_name(o.modes[mi]), B);
            const double prefill_rate = fill ? 0.0 : (double)B * ctx / prefill; /* 0: filled, not prefilled */
            char rate[32] = "-";
            if (!fill) snprintf(rate, sizeof(rate), "%.0f", prefill_rate);
            printf("| %s | %d | %s | %.2f | %.2f GB | %.3f GB | %.2f GB | %.2f | %.2f | %.3f | %s |\n", label, ctx,
                   rate, 1e3 * med, kv_bytes / 1e9, index_bytes / 1e9,
                   bytes / 1e9, floor_ms, floor_ms > 0 ? 1e3 * med / floor_ms : 0.0, frac, tier);
            fflush(stdout);
            fprintf(stderr, "%s %d: device memory held %.1f GB (weights %.1f, KV + span store %.1f, index vectors %.1f, "
                            "activations %.1f), host tier %.1f GB\n",
                    attn_mode_name(o.modes[mi]), ctx,
                    (e.weight_bytes + e.kv_bytes + e.act_bytes + vec_alloc) / 1e9, e.weight_bytes / 1e9,
                    e.kv_bytes / 1e9, vec_alloc / 1e9, e.act_bytes / 1e9, host_tier / 1e9);
            if (e.graph_records)
                fprintf(stderr, "%s %d: the step as a graph: %ld recorded, %ld replayed (LTRI_CUDA_GRAPHS=off: none)\n",
                        attn_mode_name(o.modes[mi]), ctx, e.graph_records, e.graph_launches - e.graph_records);
            if (json) {
                json_t *j = json_pack("{s:s,s:i,s:i,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I,s:I}", "mode",
                                      attn_mode_name(o.modes[mi]), "batch", B, "context", ctx, "prefill_tok_per_s",
                                      prefill_rate,
                                      "decode_ms", 1e3 * med, "kv_bytes", kv_bytes, "index_bytes", index_bytes,
                                      "weight_bytes", (double)e.weight_bytes, "floor_ms", floor_ms,
                                      "bandwidth_bytes_per_s", bw, "kv_read_fraction", frac, "tier_hits",
                                      (json_int_t)hits, "tier_misses", (json_int_t)misses);
                char *line = json_dumps(j, JSON_COMPACT);
                fprintf(json, "%s\n", line);
                fflush(json);
                free(line);
                json_decref(j);
            }
            if (o.phases && e.sparse && B == 1) {
                /* more steps, each synchronised at every phase boundary (slower: the split is the point) */
                sparse_state *sp = e.sparse;
                sparse_profile_begin(sp);
                double p0 = ltri_now_sec();
                for (int st = 0; st < o.steps && !rc; st++)
                    rc = engine_forward(&e, tokens + ctx + o.steps + st, 1, logits, 0, &err);
                double wall = ltri_now_sec() - p0;
                sp->profile = 0;
                fprintf(stderr, "%s %d phases, ms per profiled step (%.2f ms wall):", attn_mode_name(o.modes[mi]), ctx,
                        1e3 * wall / o.steps);
                print_phases(sp, o.steps);
            }
#ifdef LTRI_HAVE_CUDA
            if (o.ncu && !rc) { /* the token after the timed steps (max_context leaves room) */
                be->synchronize(be);
                if (cudaProfilerStart() != cudaSuccess) ltri_fatal("bench_decode: cudaProfilerStart failed");
                if (B == 1) {
                    rc = engine_forward(&e, tokens + ctx + o.steps, 1, logits, 0, &err);
                } else {
                    for (int b = 0; b < B; b++) step_tokens[b] = tokens[b + ctx + o.steps];
                    rc = engine_decode_batch(&e, seq_ids, step_tokens, B, logits, &err);
                }
                be->synchronize(be);
                if (cudaProfilerStop() != cudaSuccess) ltri_fatal("bench_decode: cudaProfilerStop failed");
                if (rc) {
                    fprintf(stderr, "bench_decode: %s\n", err.msg);
                    return 1;
                }
            }
#endif
            free(step);
            engine_free(&e);
        }
        free(tokens);
        free(logits);
        free(seq_ids);
        free(step_tokens);
        free(before);
    }
    if (json) fclose(json);
    backend_destroy(be);
    model_close(&m);
    return 0;
}
