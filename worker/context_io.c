#include "worker/context_io.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checksum.h"
#include "core/log.h"

#define CONTEXT_FORMAT "ltri-context"
#define CONTEXT_VERSION 1

/* ------------------------------------------------------------ files */

typedef struct {
    FILE *f;
    char path[4200], tmp[4210];
    uint64_t bytes;
    uint32_t crc;
} out_file;

static int out_open(out_file *o, const char *dir, const char *name, ltri_error *err) {
    memset(o, 0, sizeof(*o));
    snprintf(o->path, sizeof(o->path), "%s/%s", dir, name);
    snprintf(o->tmp, sizeof(o->tmp), "%s.tmp", o->path);
    if (!(o->f = fopen(o->tmp, "wb"))) return ltri_fail(err, "%s: cannot write: %s", o->tmp, strerror(errno));
    return 0;
}

static int out_write(out_file *o, const void *p, size_t n, ltri_error *err) {
    if (n && fwrite(p, 1, n, o->f) != n) return ltri_fail(err, "%s: write failed: %s", o->tmp, strerror(errno));
    o->crc = ltri_crc32(o->crc, p, n);
    o->bytes += n;
    return 0;
}

/* Flushed, synced, then renamed: the final name never holds a partial file. */
static int out_close(out_file *o, ltri_error *err) {
    int bad = fflush(o->f) != 0 || fsync(fileno(o->f)) != 0;
    bad |= fclose(o->f) != 0;
    o->f = NULL;
    if (bad || rename(o->tmp, o->path) != 0)
        return ltri_fail(err, "%s: cannot finish writing: %s", o->path, strerror(errno));
    return 0;
}

/* CRC-32 and size of a whole file. */
static int file_crc(const char *path, uint64_t *bytes, uint32_t *crc, ltri_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ltri_fail(err, "%s: missing (%s)", path, strerror(errno));
    static unsigned char buf[1 << 20];
    size_t n;
    *bytes = 0;
    *crc = 0;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        *crc = ltri_crc32(*crc, buf, n);
        *bytes += n;
    }
    int bad = ferror(f);
    fclose(f);
    return bad ? ltri_fail(err, "%s: read error", path) : 0;
}

static int model_file_crc(const ltri_model *m, const char *name, uint32_t *crc) {
    char path[4200];
    uint64_t bytes;
    snprintf(path, sizeof(path), "%s/%s", m->dir, name);
    *crc = 0;
    return file_crc(path, &bytes, crc, NULL);
}

static int read_exact(FILE *f, const char *path, void *p, size_t n, ltri_error *err) {
    if (n && fread(p, 1, n, f) != n) return ltri_fail(err, "%s: truncated", path);
    return 0;
}

/* ------------------------------------------------------------ rows */

static size_t row_bytes(const ltri_engine *e, ltri_dtype t) { return (size_t)e->kv_width * ltri_dtype_size(t); }

/* Positions [pos0, pos0 + n) of the engine's current cache (slot pos % capacity). */
static void read_cache(ltri_engine *e, int layer, int pos0, int n, char *k, char *v) {
    ltri_backend *be = e->be;
    size_t row = row_bytes(e, be->kv_dtype);
    const engine_layer *L = &e->layers[layer];
    for (int done = 0, run; done < n; done += run) {
        int slot = (pos0 + done) % e->cache_capacity;
        run = n - done < e->cache_capacity - slot ? n - done : e->cache_capacity - slot;
        be->copy_from(be, k + done * row, (const char *)L->k_cache + slot * row, (size_t)run * row);
        be->copy_from(be, v + done * row, (const char *)L->v_cache + slot * row, (size_t)run * row);
    }
}

/* Writes rows of positions [pos0, pos0 + n) (type t, host) through kv_store
 * into the cache (store == NULL) or a span store's staging ring, a chunk at a
 * time through the engine's fp32 k/v buffers. */
static void write_rows(ltri_engine *e, int layer, span_store *store, int pos0, int n, const char *k, const char *v,
                       ltri_dtype t) {
    ltri_backend *be = e->be;
    size_t row = row_bytes(e, t);
    int chunk = e->opt.chunk_size;
    for (int done = 0; done < n; done += chunk) {
        int m = n - done < chunk ? n - done : chunk;
        backend_upload_convert(be, e->k, LTRI_F32, k + done * row, t, (size_t)m * e->kv_width);
        backend_upload_convert(be, e->v, LTRI_F32, v + done * row, t, (size_t)m * e->kv_width);
        if (store)
            span_store_stage(store, e->k, e->v, pos0 + done, m);
        else
            be->kv_store(be, e->layers[layer].k_cache, e->layers[layer].v_cache, e->k, e->v, pos0 + done, m,
                         e->kv_width, e->cache_capacity);
    }
}

/* ------------------------------------------------------------ attention parameters */

static json_t *attn_to_json(const ltri_attn_params *p) {
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string(attn_mode_name(p->mode)));
    const int vals[] = {p->n_sink,   p->n_local,  p->budget,  p->max_spans,  p->block_size,
                        p->n_repr,   p->span_min, p->span_max, 0,            0,
                        p->band,     p->repr_min, p->repr_max, p->persist,   p->persist_budget,
                        p->vote_heads, p->vote_k, p->vote_min, p->page_size, p->device_pages};
    for (int i = 0; attn_param_names[i]; i++) {
        const char *n = attn_param_names[i];
        if (!strcmp(n, "theta")) json_object_set_new(j, n, json_real(p->theta));
        else if (!strcmp(n, "select")) json_object_set_new(j, n, json_string(p->select == SEGMENT_NMS ? "nms" : "dp"));
        else json_object_set_new(j, n, json_integer(vals[i]));
    }
    return j;
}

static int attn_from_json(const json_t *j, ltri_attn_params *p, ltri_error *err) {
    const char *mode = json_string_value(json_object_get(j, "mode"));
    int m = mode ? attn_mode_parse(mode) : -1;
    if (m < 0) return ltri_fail(err, "manifest: bad attention mode");
    attn_params_default(p, (ltri_attn_mode)m);
    for (int i = 0; attn_param_names[i]; i++) {
        const json_t *v = json_object_get(j, attn_param_names[i]);
        char buf[64];
        if (json_is_integer(v)) snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v)) snprintf(buf, sizeof(buf), "%.9g", json_real_value(v));
        else if (json_is_string(v)) snprintf(buf, sizeof(buf), "%s", json_string_value(v));
        else return ltri_fail(err, "manifest: attention parameter %s missing", attn_param_names[i]);
        if (attn_params_set(p, attn_param_names[i], buf, err)) return ltri_fail_prefix(err, "manifest: ");
    }
    return 0;
}

/* ------------------------------------------------------------ save */

static int save_shard(ltri_engine *e, int rank, const char *dir, uint64_t *bytes, uint32_t *crc, ltri_error *err) {
    char name[64];
    snprintf(name, sizeof(name), "shard-%d.bin", rank);
    out_file o;
    if (out_open(&o, dir, name, err)) return -1;
    sparse_state *s = e->sparse;
    int rc = 0;
    for (int l = 0; s && l < s->n_layers && !rc; l++) {
        sparse_layer *L = &s->layers[l];
        span_index *ix = &L->index;
        for (int id = 0; ix->be && id < ix->n_spans && !rc; id++) {
            const span_info *sp = &ix->spans[id];
            if (sp->owner != rank) continue;
            size_t rb = row_bytes(e, e->be->kv_dtype);
            size_t vb = (size_t)ix->R * ix->width * ltri_dtype_size(e->be->kv_dtype);
            char *buf = malloc(2 * sp->len * rb + vb);
            span_store_read(&L->store, sp->store_row, sp->len, buf, buf + sp->len * rb);
            span_index_read_vectors(ix, id, buf + 2 * sp->len * rb);
            rc = out_write(&o, buf, 2 * sp->len * rb + vb, err);
            free(buf);
        }
    }
    if (rc) {
        fclose(o.f);
        return -1;
    }
    *bytes = o.bytes;
    *crc = o.crc;
    return out_close(&o, err);
}

static int save_common(ltri_engine *e, const char *dir, uint64_t *bytes, uint32_t *crc, ltri_error *err) {
    out_file o;
    if (out_open(&o, dir, "common.bin", err)) return -1;
    sparse_state *s = e->sparse;
    size_t rb = row_bytes(e, e->be->kv_dtype);
    int n_past = e->n_past, rc = 0;
    char *k = malloc((size_t)(n_past + 1) * rb), *v = malloc((size_t)(n_past + 1) * rb);
    for (int l = 0; l < e->cfg.n_layers && !rc && k && v; l++) {
        if (!s) { /* single-rank full attention: the whole cache */
            read_cache(e, l, 0, n_past, k, v);
            rc = out_write(&o, k, n_past * rb, err) || out_write(&o, v, n_past * rb, err);
            continue;
        }
        sparse_layer *L = &s->layers[l];
        int fv = n_past > s->p.n_local ? n_past - s->p.n_local : 0;
        read_cache(e, l, fv, n_past - fv, k, v);
        rc = out_write(&o, k, (n_past - fv) * rb, err) || out_write(&o, v, (n_past - fv) * rb, err);
        span_store_read_staging(&L->store, L->seg_from, n_past - L->seg_from, k, v);
        rc = rc || out_write(&o, k, (n_past - L->seg_from) * rb, err) ||
             out_write(&o, v, (n_past - L->seg_from) * rb, err);
        if (!rc && L->sink_row >= 0) {
            span_store_read(&L->store, L->sink_row, s->p.n_sink, k, v);
            rc = out_write(&o, k, s->p.n_sink * rb, err) || out_write(&o, v, s->p.n_sink * rb, err);
        }
        float *row = L->band_history ? malloc(sizeof(float) * (size_t)s->p.band) : NULL;
        for (int pos = L->seg_from; row && pos < n_past && !rc; pos++) {
            e->be->copy_from(e->be, row, L->band_history + (size_t)(pos % s->staging_rows) * s->p.band,
                             sizeof(float) * (size_t)s->p.band);
            rc = out_write(&o, row, sizeof(float) * (size_t)s->p.band, err);
        }
        free(row);
    }
    if (!k || !v) rc = ltri_fail(err, "out of host memory");
    free(k), free(v);
    if (rc) {
        fclose(o.f);
        return -1;
    }
    *bytes = o.bytes;
    *crc = o.crc;
    return out_close(&o, err);
}

static json_t *layers_to_json(const ltri_engine *e) {
    json_t *layers = json_array();
    const sparse_state *s = e->sparse;
    for (int l = 0; s && l < s->n_layers; l++) {
        const sparse_layer *L = &s->layers[l];
        json_t *spans = json_array(), *persist = json_array();
        for (int id = 0; L->index.be && id < L->index.n_spans; id++) {
            const span_info *sp = &L->index.spans[id];
            json_array_append_new(spans, json_pack("[i,i,i,f,f,i]", sp->start, sp->len, sp->owner, (double)sp->score,
                                                   (double)sp->confidence, sp->n_reps));
        }
        int32_t ids[L->retrieval.cap], left[L->retrieval.cap];
        const int n_persist = retrieval_state_read(&L->retrieval, ids, left);
        for (int i = 0; i < n_persist; i++) json_array_append_new(persist, json_pack("[i,i]", ids[i], left[i]));
        json_array_append_new(layers, json_pack("{s:i,s:b,s:o,s:o}", "seg_from", L->seg_from, "sinks",
                                                L->sink_row >= 0, "spans", spans, "persist", persist));
    }
    return layers;
}

int context_save(ltri_engine *e, const ltri_model *m, ltri_collectives *coll, const char *dir, ltri_error *err) {
    int rank = coll ? coll->rank : 0, size = coll ? coll->size : 1, ok = 1;
    char manifest[4200];
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", dir);
    if (rank == 0) {
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            ltri_fail(err, "%s: cannot create: %s", dir, strerror(errno));
            ok = 0;
        } else if (unlink(manifest) != 0 && errno != ENOENT) { /* an old manifest must not vouch for new files */
            ltri_fail(err, "%s: cannot replace: %s", manifest, strerror(errno));
            ok = 0;
        }
    }
    if (size > 1) MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, coll->comm));
    if (!ok) return rank == 0 ? -1 : ltri_fail(err, "rank 0 could not prepare %s", dir);

    uint64_t mine[4] = {0, 0, 0, 0}; /* shard bytes, crc, common bytes, crc; [0] = ~0 on failure */
    uint32_t crc = 0;
    int rc = save_shard(e, rank, dir, &mine[0], &crc, err);
    mine[1] = crc;
    if (!rc && rank == 0) {
        rc = save_common(e, dir, &mine[2], &crc, err);
        mine[3] = crc;
    }
    if (rc) mine[0] = UINT64_MAX;
    uint64_t *all = calloc((size_t)size * 4, sizeof(uint64_t));
    if (coll)
        collectives_allgather_host(coll, mine, all, sizeof(mine));
    else
        memcpy(all, mine, sizeof(mine));
    for (int r = 0; r < size; r++)
        if (all[(size_t)r * 4] == UINT64_MAX) {
            if (!rc) ltri_fail(err, "rank %d could not write its shard", r);
            rc = -1;
        }
    if (!rc && rank == 0) {
        json_t *files = json_array();
        json_array_append_new(files, json_pack("{s:s,s:I,s:I}", "name", "common.bin", "bytes", (json_int_t)all[2],
                                               "crc32", (json_int_t)all[3]));
        for (int r = 0; r < size; r++) {
            char name[64];
            snprintf(name, sizeof(name), "shard-%d.bin", r);
            json_array_append_new(files, json_pack("{s:s,s:I,s:I}", "name", name, "bytes",
                                                   (json_int_t)all[(size_t)r * 4], "crc32",
                                                   (json_int_t)all[(size_t)r * 4 + 1]));
        }
        uint32_t cfg_crc = 0, tok_crc = 0;
        model_file_crc(m, "config.json", &cfg_crc);
        model_file_crc(m, "tokenizer.json", &tok_crc);
        json_t *j = json_pack("{s:s,s:i,s:I,s:I,s:s,s:i,s:i,s:i,s:s,s:i,s:i,s:b,s:o,s:o,s:o}", "format",
                              CONTEXT_FORMAT, "version", CONTEXT_VERSION, "config_crc32", (json_int_t)cfg_crc,
                              "tokenizer_crc32", (json_int_t)tok_crc, "arch", m->cfg.arch_name, "n_layers",
                              m->cfg.n_layers, "kv_width", e->kv_width, "n_tokens", e->n_past, "kv_dtype",
                              ltri_dtype_name(e->be->kv_dtype), "ranks", size, "band",
                              e->sparse && e->sparse->layers[0].band_history ? e->sparse->p.band : 0, "plain",
                              e->sparse == NULL, "attn", attn_to_json(e->sparse ? &e->sparse->p : &e->opt.attn), "files",
                              files, "layers", layers_to_json(e));
        out_file o;
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        rc = out_open(&o, dir, "manifest.json", err) || out_write(&o, text, strlen(text), err) ||
             out_close(&o, err);
        free(text);
    }
    free(all);
    int bad = rc != 0, any = bad;
    if (size > 1) MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, coll->comm));
    if (any && !bad) return ltri_fail(err, "saving %s failed on another rank", dir);
    if (!any && rank == 0) LOG_INFO("saved %d tokens to %s (%d rank(s))", e->n_past, dir, size);
    return any ? -1 : 0;
}

/* ------------------------------------------------------------ load */

static json_t *read_manifest(const char *dir, ltri_error *err) {
    char path[4200];
    snprintf(path, sizeof(path), "%s/manifest.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        if (access(path, F_OK) != 0)
            ltri_fail(err, "%s: no manifest.json (not a saved context, or its save did not finish)", dir);
        else
            ltri_fail(err, "%s: %s (line %d)", path, je.text, je.line);
        return NULL;
    }
    const char *fmt = json_string_value(json_object_get(j, "format"));
    if (!fmt || strcmp(fmt, CONTEXT_FORMAT) || json_integer_value(json_object_get(j, "version")) != CONTEXT_VERSION) {
        ltri_fail(err, "%s: not an %s version %d manifest", path, CONTEXT_FORMAT, CONTEXT_VERSION);
        json_decref(j);
        return NULL;
    }
    return j;
}

int context_peek(const char *dir, ltri_attn_params *attn, int *n_tokens, int *ranks, ltri_error *err) {
    json_t *j = read_manifest(dir, err);
    if (!j) return -1;
    int rc = attn_from_json(json_object_get(j, "attn"), attn, err);
    if (n_tokens) *n_tokens = (int)json_integer_value(json_object_get(j, "n_tokens"));
    if (ranks) *ranks = (int)json_integer_value(json_object_get(j, "ranks"));
    json_decref(j);
    return rc;
}

/* Every file the manifest lists: present, of its size, of its CRC. */
static int verify_files(const char *dir, const json_t *files, ltri_error *err) {
    size_t i;
    const json_t *f;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!name || strchr(name, '/')) return ltri_fail(err, "%s: manifest: bad file name", dir);
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        uint64_t bytes;
        uint32_t crc;
        if (file_crc(path, &bytes, &crc, err)) return -1;
        if (bytes != (uint64_t)json_integer_value(json_object_get(f, "bytes")))
            return ltri_fail(err, "%s: %llu bytes, the manifest says %lld (truncated or replaced)", path,
                             (unsigned long long)bytes, (long long)json_integer_value(json_object_get(f, "bytes")));
        if (crc != (uint32_t)json_integer_value(json_object_get(f, "crc32")))
            return ltri_fail(err, "%s: checksum mismatch (the file is corrupted)", path);
    }
    return 0;
}

typedef struct {
    ltri_engine *e;
    const char *dir;
    int rank, saved_ranks;
    ltri_dtype t;          /* element type of the files */
    size_t rb;             /* row bytes in the files */
    FILE **shards;
    FILE *common;
    char common_path[4200];
} loader;

static void loader_close(loader *ld) {
    for (int r = 0; ld->shards && r < ld->saved_ranks; r++)
        if (ld->shards[r]) fclose(ld->shards[r]);
    free(ld->shards);
    if (ld->common) fclose(ld->common);
}

static FILE *shard_file(loader *ld, int r, ltri_error *err) {
    if (!ld->shards[r]) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/shard-%d.bin", ld->dir, r);
        if (!(ld->shards[r] = fopen(path, "rb"))) ltri_fail(err, "%s: cannot open", path);
    }
    return ld->shards[r];
}

/* Loads one layer of a saved context into the engine's sparse state (any of
 * the sparse modes, or full attention over several ranks). */
static int load_sparse_layer(loader *ld, int l, const json_t *jl, int n_past, int saved_plain, long *shard_off,
                             const json_t *all_layers, ltri_error *err) {
    ltri_engine *e = ld->e;
    sparse_state *s = e->sparse;
    sparse_layer *L = &s->layers[l];
    const ltri_attn_params *p = &s->p;
    size_t rb = ld->rb;
    int fv = n_past > p->n_local ? n_past - p->n_local : 0;
    int rc = 0;
    char *k = malloc((size_t)(n_past + 1) * rb), *v = malloc((size_t)(n_past + 1) * rb);
    if (!k || !v) {
        free(k), free(v);
        return ltri_fail(err, "out of host memory");
    }
    if (saved_plain) {
        /* full attention saved on one rank: rebuild the sharded form as the
         * uninterrupted run would have it (blocks of block_size up to the last
         * multiple that has left the window) */
        rc = read_exact(ld->common, ld->common_path, k, n_past * rb, err) ||
             read_exact(ld->common, ld->common_path, v, n_past * rb, err);
        int evicted = n_past - p->n_local;
        int seg_from = evicted >= p->block_size ? evicted / p->block_size * p->block_size : 0;
        if (!rc) {
            write_rows(e, l, NULL, fv, n_past - fv, k + fv * rb, v + fv * rb, ld->t);
            write_rows(e, l, &L->store, seg_from, n_past - seg_from, k + seg_from * rb, v + seg_from * rb, ld->t);
        }
        char *zeros = calloc(1, (size_t)L->index.R * e->kv_width * 4);
        for (int start = 0; !rc && start < seg_from; start += p->block_size) {
            span_info sp = {start, p->block_size, 0, -1, -1, 0.0f, 0.0f, 0};
            int owner = sparse_place(s, l, L->index.n_spans, sp.len);
            if (span_index_add_saved(&L->index, &L->store, &sp, owner, s->rank, k + start * rb, v + start * rb, zeros,
                                     ld->t, err) < 0)
                rc = -1;
        }
        free(zeros);
        L->seg_from = seg_from;
        free(k), free(v);
        return rc;
    }
    /* common: window, staging, sinks, band */
    int seg_from = (int)json_integer_value(json_object_get(jl, "seg_from"));
    if (seg_from < 0 || seg_from > n_past || n_past - seg_from > s->staging_rows) {
        free(k), free(v);
        return ltri_fail(err, "%s: layer %d: pending tokens do not fit this engine", ld->common_path, l);
    }
    rc = read_exact(ld->common, ld->common_path, k, (n_past - fv) * rb, err) ||
         read_exact(ld->common, ld->common_path, v, (n_past - fv) * rb, err);
    if (!rc) write_rows(e, l, NULL, fv, n_past - fv, k, v, ld->t);
    rc = rc || read_exact(ld->common, ld->common_path, k, (n_past - seg_from) * rb, err) ||
         read_exact(ld->common, ld->common_path, v, (n_past - seg_from) * rb, err);
    if (!rc) write_rows(e, l, &L->store, seg_from, n_past - seg_from, k, v, ld->t);
    L->seg_from = seg_from;
    if (!rc && json_is_true(json_object_get(jl, "sinks"))) {
        rc = read_exact(ld->common, ld->common_path, k, p->n_sink * rb, err) ||
             read_exact(ld->common, ld->common_path, v, p->n_sink * rb, err);
        if (!rc && (L->sink_row = span_store_append_rows(&L->store, k, v, ld->t, p->n_sink, err)) < 0) rc = -1;
    }
    float *row = L->band_history ? malloc(sizeof(float) * (size_t)p->band) : NULL;
    for (int pos = seg_from; !rc && row && pos < n_past; pos++) {
        rc = read_exact(ld->common, ld->common_path, row, sizeof(float) * (size_t)p->band, err);
        if (!rc)
            e->be->copy_to(e->be, L->band_history + (size_t)(pos % s->staging_rows) * p->band, row,
                           sizeof(float) * (size_t)p->band);
    }
    free(row);
    free(k), free(v);
    /* spans: placed again for this job's ranks; each rank reads its own */
    const json_t *spans = json_object_get(jl, "spans");
    size_t vec_bytes = L->index.be ? (size_t)L->index.R * e->kv_width * ltri_dtype_size(ld->t) : 0;
    size_t i;
    const json_t *js;
    json_array_foreach(spans, i, js) {
        if (rc) break;
        span_info sp = {(int)json_integer_value(json_array_get(js, 0)), (int)json_integer_value(json_array_get(js, 1)),
                        0, -1, -1, (float)json_number_value(json_array_get(js, 3)),
                        (float)json_number_value(json_array_get(js, 4)), (int)json_integer_value(json_array_get(js, 5))};
        int saved_owner = (int)json_integer_value(json_array_get(js, 2));
        if (saved_owner < 0 || saved_owner >= ld->saved_ranks || sp.len < 1 || sp.start < 0 ||
            sp.start + sp.len > n_past) {
            rc = ltri_fail(err, "%s/manifest.json: layer %d: span %zu is out of range", ld->dir, l, i);
            break;
        }
        size_t bytes = 2 * (size_t)sp.len * rb + vec_bytes;
        long off = shard_off[saved_owner];
        shard_off[saved_owner] += (long)bytes;
        int owner = sparse_place(s, l, L->index.n_spans, sp.len);
        if (owner != s->rank) {
            span_index_add_saved(&L->index, &L->store, &sp, owner, s->rank, NULL, NULL, NULL, ld->t, err);
            continue;
        }
        FILE *f = shard_file(ld, saved_owner, err);
        char *buf = f ? malloc(bytes) : NULL;
        if (!buf || fseek(f, off, SEEK_SET) != 0 || read_exact(f, "shard", buf, bytes, err) ||
            span_index_add_saved(&L->index, &L->store, &sp, owner, s->rank, buf, buf + sp.len * rb,
                                 buf + 2 * sp.len * rb, ld->t, err) < 0)
            rc = rc ? rc : ltri_fail_prefix(err, "layer %d span %zu: ", l, i);
        free(buf);
    }
    const json_t *persist = json_object_get(jl, "persist");
    int32_t ids[L->retrieval.cap], left[L->retrieval.cap];
    int n_persist = 0;
    json_array_foreach(persist, i, js) {
        const json_int_t id = json_integer_value(json_array_get(js, 0));
        if (n_persist == L->retrieval.cap) break;
        if (id < 0 || id >= L->index.n_spans) continue; /* the selection reads the span's metadata */
        ids[n_persist] = (int32_t)id;
        left[n_persist++] = (int32_t)json_integer_value(json_array_get(js, 1));
    }
    retrieval_state_write(&L->retrieval, ids, left, n_persist);
    (void)all_layers;
    return rc;
}

/* Loads one layer of full attention into the single-rank plain cache. */
static int load_plain_layer(loader *ld, int l, const json_t *jl, int n_past, int saved_plain, long *shard_off,
                            ltri_error *err) {
    ltri_engine *e = ld->e;
    size_t rb = ld->rb;
    char *k = malloc((size_t)(n_past + 1) * rb), *v = malloc((size_t)(n_past + 1) * rb);
    int rc = !k || !v ? ltri_fail(err, "out of host memory") : 0;
    if (!rc && saved_plain) {
        rc = read_exact(ld->common, ld->common_path, k, n_past * rb, err) ||
             read_exact(ld->common, ld->common_path, v, n_past * rb, err);
    } else if (!rc) {
        /* sharded full attention: blocks from the shards, the rest from staging */
        int seg_from = (int)json_integer_value(json_object_get(jl, "seg_from"));
        int fv = (int)json_integer_value(json_object_get(jl, "first_visible"));
        char *scratch = malloc((size_t)(n_past - fv + 1) * rb);
        /* the window part of common precedes the staging part; the staging covers [seg_from, n_past) */
        rc = !scratch || read_exact(ld->common, ld->common_path, scratch, (n_past - fv) * rb, err) ||
             read_exact(ld->common, ld->common_path, scratch, (n_past - fv) * rb, err) ||
             read_exact(ld->common, ld->common_path, k + seg_from * rb, (n_past - seg_from) * rb, err) ||
             read_exact(ld->common, ld->common_path, v + seg_from * rb, (n_past - seg_from) * rb, err);
        free(scratch);
        size_t i;
        const json_t *js;
        json_array_foreach(json_object_get(jl, "spans"), i, js) {
            if (rc) break;
            int start = (int)json_integer_value(json_array_get(js, 0)), len = (int)json_integer_value(json_array_get(js, 1));
            int owner = (int)json_integer_value(json_array_get(js, 2));
            if (owner < 0 || owner >= ld->saved_ranks || start < 0 || len < 1 || start + len > seg_from) {
                rc = ltri_fail(err, "%s/manifest.json: layer %d: block %zu is out of range", ld->dir, l, i);
                break;
            }
            size_t bytes = 2 * (size_t)len * rb + (size_t)e->kv_width * ltri_dtype_size(ld->t);
            FILE *f = shard_file(ld, owner, err);
            rc = !f || fseek(f, shard_off[owner], SEEK_SET) != 0 || read_exact(f, "shard", k + start * rb, len * rb, err) ||
                 read_exact(f, "shard", v + start * rb, len * rb, err);
            shard_off[owner] += (long)bytes;
        }
    }
    if (!rc) write_rows(e, l, NULL, 0, n_past, k, v, ld->t);
    free(k), free(v);
    return rc;
}

int context_load(ltri_engine *e, const ltri_model *m, ltri_collectives *coll, const char *dir, ltri_error *err) {
    json_t *j = read_manifest(dir, err);
    if (!j) return -1;
    loader ld = {.e = e, .dir = dir, .rank = coll ? coll->rank : 0};
    int rc = -1;
    uint32_t cfg_crc = 0, tok_crc = 0;
    model_file_crc(m, "config.json", &cfg_crc);
    model_file_crc(m, "tokenizer.json", &tok_crc);
    int n_past = (int)json_integer_value(json_object_get(j, "n_tokens"));
    int saved_plain = json_is_true(json_object_get(j, "plain"));
    ld.saved_ranks = (int)json_integer_value(json_object_get(j, "ranks"));
    const char *dt = json_string_value(json_object_get(j, "kv_dtype"));
    ld.t = dt && !strcmp(dt, "BF16") ? LTRI_BF16 : dt && !strcmp(dt, "F16") ? LTRI_F16 : LTRI_F32;
    ld.rb = (size_t)e->kv_width * ltri_dtype_size(ld.t);
    ltri_attn_params saved, mine = e->sparse ? e->sparse->p : e->opt.attn;
    if ((uint32_t)json_integer_value(json_object_get(j, "config_crc32")) != cfg_crc) {
        ltri_fail(err, "%s was saved with another model (its config.json differs from %s/config.json)", dir, m->dir);
        goto done;
    }
    if ((uint32_t)json_integer_value(json_object_get(j, "tokenizer_crc32")) != tok_crc) {
        ltri_fail(err, "%s was saved with another tokenizer (tokenizer.json differs)", dir);
        goto done;
    }
    if (json_integer_value(json_object_get(j, "n_layers")) != e->cfg.n_layers ||
        json_integer_value(json_object_get(j, "kv_width")) != e->kv_width) {
        ltri_fail(err, "%s: saved for %lld layers of width %lld, this model has %d of %d", dir,
                  (long long)json_integer_value(json_object_get(j, "n_layers")),
                  (long long)json_integer_value(json_object_get(j, "kv_width")), e->cfg.n_layers, e->kv_width);
        goto done;
    }
    if (attn_from_json(json_object_get(j, "attn"), &saved, err)) goto done;
    char a[512], b[512];
    attn_params_describe(&saved, a, sizeof(a));
    attn_params_describe(&mine, b, sizeof(b));
    if (saved.mode != mine.mode || (saved.mode != LTRI_ATTN_FULL && strcmp(a, b) != 0) ||
        (saved.mode == LTRI_ATTN_FULL && e->sparse &&
         (saved.n_local != mine.n_local || saved.block_size != mine.block_size) && !saved_plain)) {
        ltri_fail(err, "%s was saved with attention '%s'; this run has '%s'", dir, a, b);
        goto done;
    }
    if (e->n_past != 0 || n_past < 0 || n_past > e->opt.max_context) {
        ltri_fail(err, "%s holds %d tokens; the engine holds %d of at most %d", dir, n_past, e->n_past,
                  e->opt.max_context);
        goto done;
    }
    if (ld.saved_ranks < 1 || verify_files(dir, json_object_get(j, "files"), err)) goto done;
    snprintf(ld.common_path, sizeof(ld.common_path), "%s/common.bin", dir);
    ld.shards = calloc((size_t)ld.saved_ranks, sizeof(FILE *));
    long *shard_off = calloc((size_t)ld.saved_ranks, sizeof(long));
    if (!ld.shards || !shard_off || !(ld.common = fopen(ld.common_path, "rb"))) {
        free(shard_off);
        ltri_fail(err, "%s: cannot open", ld.common_path);
        goto done;
    }
    const json_t *layers = json_object_get(j, "layers");
    rc = 0;
    for (int l = 0; l < e->cfg.n_layers && !rc; l++) {
        json_t *jl = json_array_get(layers, (size_t)l);
        if (!saved_plain && !jl) {
            rc = ltri_fail(err, "%s/manifest.json: layer %d missing", dir, l);
            break;
        }
        if (e->sparse) {
            rc = load_sparse_layer(&ld, l, jl, n_past, saved_plain, shard_off, layers, err);
        } else {
            json_t *aug = NULL;
            if (!saved_plain) { /* the window's first position, for skipping it */
                aug = json_copy(jl);
                json_object_set_new(aug, "first_visible",
                                    json_integer(n_past > saved.n_local ? n_past - saved.n_local : 0));
            }
            rc = load_plain_layer(&ld, l, aug, n_past, saved_plain, shard_off, err);
            json_decref(aug);
        }
    }
    free(shard_off);
    if (!rc) e->n_past = n_past;
done:
    loader_close(&ld);
    json_decref(j);
    if (rc) {
        engine_reset(e);
        return ltri_fail_prefix(err, "loading %s: ", dir);
    }
    LOG_INFO("loaded %d tokens from %s (saved on %d rank(s))", n_past, dir, ld.saved_ranks);
    return 0;
}
