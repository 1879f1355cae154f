/* The CPU backend: memory is host memory and every operation is the plain-C
 * reference in this folder (one file per operation, the same split as
 * kernels/cuda/). Everything is fp32, so this backend is also the yardstick
 * that the CUDA backend is tested against. */
#include "kernels/cpu/cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "kernels/cpu/cpu_ops.h"

static void *cpu_alloc(ltri_backend *be, size_t bytes, ltri_error *err) {
    (void)be;
    /* 64-byte alignment keeps SIMD loads on cache-line boundaries. */
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        ltri_fail(err, "cpu backend: out of host memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static void cpu_free(ltri_backend *be, void *p) {
    (void)be;
    free(p);
}

static void cpu_copy(ltri_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void cpu_synchronize(ltri_backend *be) { (void)be; }
static void cpu_lane(ltri_backend *be) { (void)be; } /* one lane: everything runs in order */

static void cpu_destroy(ltri_backend *be) { free(be); }

ltri_backend *cpu_backend_create(ltri_error *err) {
    ltri_backend *be = calloc(1, sizeof(*be));
    if (!be) {
        ltri_fail(err, "cpu backend: out of host memory");
        return NULL;
    }
    be->kind = LTRI_BACKEND_CPU;
    be->name = "cpu";
    be->weight_dtype = LTRI_F32;
    be->act_dtype = LTRI_F32;
    be->kv_dtype = LTRI_F32;
    be->destroy = cpu_destroy;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->copy_to = cpu_copy;
    be->copy_to_async = cpu_copy;
    be->copy_from = cpu_copy;
    be->copy = cpu_copy;
    be->alloc_host = cpu_alloc;
    be->free_host = cpu_free;
    be->synchronize = cpu_synchronize;
    be->lane_begin = cpu_lane;
    be->lane_end = cpu_lane;
    be->lane_join = cpu_lane;
    be->embedding = cpu_embedding;
    be->rmsnorm = cpu_rmsnorm;
    be->matmul = cpu_matmul;
    be->matmul_group = backend_matmul_group_each;
    be->matmul_swiglu = backend_matmul_swiglu_unfused;
    be->rope = cpu_rope;
    be->kv_store = cpu_kv_store;
    be->attention = cpu_attention;
    be->attention_batch = cpu_attention_batch;
    be->kv_store_batch = cpu_kv_store_batch;
    be->attention_merge = cpu_attention_merge;
    be->attention_band = cpu_attention_band;
    be->attention_gather = cpu_attention_gather;
    be->query_summary = cpu_query_summary;
    be->span_vectors = cpu_span_vectors;
    be->span_score = cpu_span_score;
    be->topk = cpu_topk;
    be->span_select = cpu_span_select;
    be->swiglu = cpu_swiglu;
    return be;
}
