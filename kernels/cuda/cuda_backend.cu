/* The CUDA backend: creation, memory, and the table of operations.
 *
 * Weights, GEMM inputs and the KV cache are bf16; the residual stream and every
 * accumulation are fp32 (kernels/backend.h). All work of a backend is ordered
 * on one non-blocking stream, so the operations never synchronise with each
 * other or with other backends; copy_from and synchronize wait for the stream.
 *
 * Creation can fail cleanly (no device, a device this binary has no code for,
 * out of memory): it returns NULL and a message. After creation, a failing CUDA
 * call is fatal (cuda_check.h), except for alloc, which returns NULL and fills
 * err so that a job that does not fit fails alone.
 *
 * Two environment variables, read here once, pick kernels for testing:
 *   LTRI_CUDA_ATTENTION=auto|prefill|decode|prefill_fp32|decode_fp32  (see attention.cu)
 *   LTRI_CUDA_MATMUL=auto|gemmex|cublaslt    (gemmex: cublasGemmEx only; cublaslt: no
 *                                            decode GEMV kernel, matmul_gemv.cu)
 *   LTRI_CUDA_DECODE_WAVES=2|1|3|4           (waves of blocks the split-K decode attention
 *                                            aims at, attention_decode.cu; for tuning) */
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_internal.h"

#define CUDA_WORKSPACE_BYTES ((size_t)32 << 20) /* cuBLASLt's recommendation for Hopper */

int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver or no device: not an error for the caller */
        return 0;
    }
    return n;
}

/* ---- memory ---- */

static void *cuda_alloc(ltri_backend *be, size_t bytes, ltri_error *err) {
    cuda_impl *impl = cuda_enter(be);
    void *ptr = NULL;
    /* A zero-byte request still gets a distinct, freeable pointer. */
    cudaError_t status = cudaMalloc(&ptr, bytes ? bytes : 1);
    if (status != cudaSuccess) {
        (void)cudaGetLastError(); /* an out-of-memory error leaves the context usable */
        size_t free_bytes = 0, total_bytes = 0;
        if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) (void)cudaGetLastError();
        ltri_fail(err, "cuda: cannot allocate %zu bytes (%.1f MiB) on device %d (%.1f MiB free): %s", bytes,
                  (double)bytes / 1048576.0, impl->device, (double)free_bytes / 1048576.0,
                  cudaGetErrorString(status));
        return NULL;
    }
    return ptr;
}

static void cuda_free(ltri_backend *be, void *ptr) {
    cuda_enter(be);
    if (ptr) CUDA_CHECK(cudaFree(ptr));
}

static void *cuda_alloc_host(ltri_backend *be, size_t bytes, ltri_error *err) {
    cuda_enter(be);
    void *p = NULL;
    cudaError_t rc = cudaMallocHost(&p, bytes ? bytes : 1);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        ltri_fail(err, "cuda backend: cannot pin %zu bytes of host memory: %s", bytes, cudaGetErrorString(rc));
        return NULL;
    }
    return p;
}

static void cuda_free_host(ltri_backend *be, void *p) {
    cuda_enter(be);
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

static void cuda_copy_to(ltri_backend *be, void *dst, const void *src_host, size_t bytes) {
    cuda_impl *impl = cuda_enter(be);
    if (bytes == 0) return;
    /* From pageable memory, cudaMemcpyAsync returns once the source is staged,
     * so the caller may reuse it. From pinned memory the copy is truly
     * asynchronous: wait for it, since the API promises the buffer back. */
    cudaPointerAttributes attributes;
    CUDA_CHECK(cudaPointerGetAttributes(&attributes, src_host));
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, impl->stream));
    if (attributes.type == cudaMemoryTypeHost) CUDA_CHECK(cudaStreamSynchronize(impl->stream));
}

static void cuda_copy_to_async(ltri_backend *be, void *dst, const void *src_host, size_t bytes) {
    cuda_impl *impl = cuda_enter(be);
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, impl->stream));
}

static void cuda_copy_from(ltri_backend *be, void *dst_host, const void *src, size_t bytes) {
    cuda_impl *impl = cuda_enter(be);
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, impl->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl->stream));
}

static void cuda_copy(ltri_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *impl = cuda_enter(be);
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl->stream));
}

static void cuda_synchronize(ltri_backend *be) {
    cuda_impl *impl = cuda_enter(be);
    CUDA_CHECK(cudaStreamSynchronize(impl->lanes[1]));
    CUDA_CHECK(cudaStreamSynchronize(impl->lanes[0]));
}

/* The current lane's stream for every operation, cuBLAS included. */
static void cuda_use_lane(cuda_impl *impl, int lane) {
    impl->lane = lane;
    impl->stream = impl->lanes[lane];
    CUBLAS_CHECK(cublasSetStream(impl->blas, impl->stream));
}

static void cuda_lane_begin(ltri_backend *be) {
    cuda_impl *impl = cuda_enter(be);
    if (impl->lane != 0) ltri_fatal("cuda: lane_begin inside a lane");
    CUDA_CHECK(cudaEventRecord(impl->lane_events[0], impl->lanes[0]));
    CUDA_CHECK(cudaStreamWaitEvent(impl->lanes[1], impl->lane_events[0], 0));
    cuda_use_lane(impl, 1);
}

static void cuda_lane_end(ltri_backend *be) {
    cuda_impl *impl = cuda_enter(be);
    if (impl->lane != 1) ltri_fatal("cuda: lane_end outside a lane");
    CUDA_CHECK(cudaEventRecord(impl->lane_events[1], impl->lanes[1]));
    cuda_use_lane(impl, 0);
}

static void cuda_lane_join(ltri_backend *be) {
    cuda_impl *impl = cuda_enter(be);
    if (impl->lane != 0) ltri_fatal("cuda: lane_join inside a lane");
    CUDA_CHECK(cudaStreamWaitEvent(impl->lanes[0], impl->lane_events[1], 0));
}

void *cuda_scratch_reserve(cuda_impl *impl, cuda_scratch *scratch, size_t bytes, const char *what) {
    if (bytes <= scratch->bytes) return scratch->ptr;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(impl->stream, &capture));
    if (capture != cudaStreamCaptureStatusNone)
        ltri_fatal("cuda: the %s scratch must grow to %zu bytes during a CUDA graph capture; run the largest call "
                   "of that shape once before capturing",
                   what, bytes);
    const size_t mib = (size_t)1 << 20;
    bytes = (bytes + mib - 1) / mib * mib;
    CUDA_CHECK(cudaStreamSynchronize(impl->stream));
    CUDA_CHECK(cudaFree(scratch->ptr));
    scratch->ptr = NULL;
    scratch->bytes = 0;
    CUDA_CHECK(cudaMalloc(&scratch->ptr, bytes));
    scratch->bytes = bytes;
    impl->scratch_epoch++;
    LOG_DEBUG("cuda: %s scratch is now %.1f MiB", what, (double)bytes / (double)mib);
    return scratch->ptr;
}

/* ---- lifetime ---- */

/* Releases whatever part of the backend exists; used by destroy and by a
 * create that failed half-way (members still NULL are skipped). */
static void cuda_release(ltri_backend *be) {
    if (!be) return;
    cuda_impl *impl = (cuda_impl *)be->impl;
    if (impl) {
        if (cudaSetDevice(impl->device) == cudaSuccess) {
            for (int i = 0; i < 2; i++)
                if (impl->lanes[i]) CUDA_CHECK(cudaStreamSynchronize(impl->lanes[i]));
            cuda_matmul_plans_destroy(impl);
            if (impl->blas) CUBLAS_CHECK(cublasDestroy(impl->blas));
            if (impl->lt) CUBLAS_CHECK(cublasLtDestroy(impl->lt));
            if (impl->workspace) CUDA_CHECK(cudaFree(impl->workspace));
            for (int i = 0; i < 2; i++)
                if (impl->decode_scratch[i].ptr) CUDA_CHECK(cudaFree(impl->decode_scratch[i].ptr));
            if (impl->topk_scratch.ptr) CUDA_CHECK(cudaFree(impl->topk_scratch.ptr));
            if (impl->score_scratch.ptr) CUDA_CHECK(cudaFree(impl->score_scratch.ptr));
            for (int i = 0; i < 2; i++) {
                if (impl->lane_events[i]) CUDA_CHECK(cudaEventDestroy(impl->lane_events[i]));
                if (impl->lanes[i]) CUDA_CHECK(cudaStreamDestroy(impl->lanes[i]));
            }
        } else {
            (void)cudaGetLastError();
        }
        free(impl);
    }
    free(be);
}

static void cuda_destroy(ltri_backend *be) { cuda_release(be); }

/* Reads an environment variable that must be one of `choices` (NULL-ended);
 * returns its index, 0 when unset, -1 + err when it is something else. */
static int env_choice(const char *name, const char *const *choices, ltri_error *err) {
    const char *value = getenv(name);
    if (!value || !*value) return 0;
    char expected[128] = "";
    for (int i = 0; choices[i]; i++) {
        if (strcmp(value, choices[i]) == 0) return i;
        snprintf(expected + strlen(expected), sizeof(expected) - strlen(expected), "%s%s", i ? ", " : "", choices[i]);
    }
    return ltri_fail(err, "%s=%s: expected one of %s", name, value, expected);
}

/* A CUDA call during creation: on failure, say which and give up cleanly. */
#define CREATE_CHECK(call)                                                                                   \
    do {                                                                                                     \
        cudaError_t create_status_ = (call);                                                                 \
        if (create_status_ != cudaSuccess) {                                                                 \
            (void)cudaGetLastError();                                                                        \
            ltri_fail(err, "cuda device %d: %s failed: %s", device, #call, cudaGetErrorString(create_status_)); \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)

#define CREATE_CHECK_CUBLAS(call)                                                                            \
    do {                                                                                                     \
        cublasStatus_t create_status_ = (call);                                                              \
        if (create_status_ != CUBLAS_STATUS_SUCCESS) {                                                       \
            ltri_fail(err, "cuda device %d: %s failed: %s", device, #call, cublasGetStatusName(create_status_)); \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)

ltri_backend *cuda_backend_create(int device, ltri_error *err) {
    /* in the order of cuda_attention_path */
    static const char *const attention_choices[] = {"auto", "prefill", "decode", "prefill_fp32", "decode_fp32",
                                                         NULL};
    static const char *const matmul_choices[] = {"auto", "gemmex", "cublaslt", NULL}; /* cuda_matmul_path */
    const int attention_path = env_choice("LTRI_CUDA_ATTENTION", attention_choices, err);
    if (attention_path < 0) return NULL;
    const int matmul_path = env_choice("LTRI_CUDA_MATMUL", matmul_choices, err);
    if (matmul_path < 0) return NULL;
    static const char *const waves_choices[] = {"2", "1", "3", "4", NULL}; /* the default first */
    const int waves = env_choice("LTRI_CUDA_DECODE_WAVES", waves_choices, err);
    if (waves < 0) return NULL;
    static const char *const graphs_choices[] = {"on", "off", NULL}; /* off: no graph_* (A/B and tests) */
    const int graphs = env_choice("LTRI_CUDA_GRAPHS", graphs_choices, err);
    if (graphs < 0) return NULL;

    const int n_devices = cuda_device_count();
    if (device < 0 || device >= n_devices) {
        ltri_fail(err, "cuda: device %d does not exist (%d visible)", device, n_devices);
        return NULL;
    }

    ltri_backend *be = (ltri_backend *)calloc(1, sizeof(ltri_backend));
    cuda_impl *impl = (cuda_impl *)calloc(1, sizeof(cuda_impl));
    if (!be || !impl) {
        free(be);
        free(impl);
        ltri_fail(err, "cuda: out of host memory");
        return NULL;
    }
    be->impl = impl;
    impl->device = device;
    impl->attention_path = (cuda_attention_path)attention_path;
    impl->matmul_path = (cuda_matmul_path)matmul_path;
    impl->decode_waves = atoi(waves_choices[waves]);

    {
        CREATE_CHECK(cudaSetDevice(device));
        cudaDeviceProp prop;
        CREATE_CHECK(cudaGetDeviceProperties(&prop, device));
        impl->sm_count = prop.multiProcessorCount;
        if (prop.major < 8) {
            ltri_fail(err, "cuda device %d (%s): compute capability %d.%d has no bf16 support (8.0 or newer needed)",
                      device, prop.name, prop.major, prop.minor);
            goto fail;
        }
        for (int i = 0; i < 2; i++) {
            CREATE_CHECK(cudaStreamCreateWithFlags(&impl->lanes[i], cudaStreamNonBlocking));
            CREATE_CHECK(cudaEventCreateWithFlags(&impl->lane_events[i], cudaEventDisableTiming));
        }
        impl->stream = impl->lanes[0];
        CREATE_CHECK_CUBLAS(cublasLtCreate(&impl->lt));
        CREATE_CHECK_CUBLAS(cublasCreate(&impl->blas));
        CREATE_CHECK_CUBLAS(cublasSetStream(impl->blas, impl->stream));
        impl->workspace_bytes = CUDA_WORKSPACE_BYTES;
        CREATE_CHECK(cudaMalloc(&impl->workspace, impl->workspace_bytes));
        CREATE_CHECK_CUBLAS(cublasSetWorkspace(impl->blas, impl->workspace, impl->workspace_bytes));
        /* Also the first launch-side check that this binary has code for the device. */
        if (cuda_attention_prefill_init(err) != 0 || cuda_attention_prefill_tc_init(err) != 0 ||
            cuda_attention_decode_init(err) != 0 ||
            cuda_attention_band_init(err) != 0 || cuda_span_score_init(err) != 0) {
            ltri_fail_prefix(err, "cuda device %d (%s, sm_%d%d): ", device, prop.name, prop.major, prop.minor);
            goto fail;
        }
        LOG_INFO("cuda backend: device %d, %s, %d SMs, %.1f GiB", device, prop.name, prop.multiProcessorCount,
                 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    }

    be->kind = LTRI_BACKEND_CUDA;
    be->name = "cuda";
    be->weight_dtype = LTRI_BF16;
    be->act_dtype = LTRI_BF16;
    be->kv_dtype = LTRI_BF16;
    be->destroy = cuda_destroy;
    be->alloc = cuda_alloc;
    be->free = cuda_free;
    be->copy_to = cuda_copy_to;
    be->copy_to_async = cuda_copy_to_async;
    be->alloc_host = cuda_alloc_host;
    be->free_host = cuda_free_host;
    be->copy_from = cuda_copy_from;
    be->copy = cuda_copy;
    be->synchronize = cuda_synchronize;
    be->lane_begin = cuda_lane_begin;
    be->lane_end = cuda_lane_end;
    be->lane_join = cuda_lane_join;
    be->embedding = cuda_op_embedding;
    be->rmsnorm = cuda_op_rmsnorm;
    be->matmul = cuda_op_matmul;
    be->matmul_group = cuda_op_matmul_group;
    be->matmul_swiglu = cuda_op_matmul_swiglu;
    be->rope = cuda_op_rope;
    be->kv_store = cuda_op_kv_store;
    be->attention = cuda_op_attention;
    be->attention_batch = cuda_op_attention_batch;
    be->kv_store_batch = cuda_op_kv_store_batch;
    be->attention_merge = cuda_op_attention_merge;
    be->swiglu = cuda_op_swiglu;
    be->attention_band = cuda_op_attention_band;
    be->attention_gather = cuda_op_attention_gather;
    be->query_summary = cuda_op_query_summary;
    be->span_vectors = cuda_op_span_vectors;
    be->span_score = cuda_op_span_score;
    be->topk = cuda_op_topk;
    be->span_select = cuda_op_span_select;
    if (graphs == 0) {
        be->graph_begin = cuda_graph_begin;
        be->graph_end = cuda_graph_end;
        be->graph_launch = cuda_graph_launch;
        be->graph_free = cuda_graph_free;
    }
    return be;

fail:
    cuda_release(be);
    return NULL;
}
