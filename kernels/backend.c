/* Backend selection and the host-side conversion helpers shared by all backends. */
#include "kernels/backend.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef LTRI_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

int backend_cuda_device_count(void) {
#ifdef LTRI_HAVE_CUDA
    return cuda_device_count();
#else
    return 0;
#endif
}

ltri_backend *backend_create(const char *name, int device, ltri_error *err) {
    if (!name || strcmp(name, "auto") == 0) name = backend_cuda_device_count() > 0 ? "cuda" : "cpu";
    if (strcmp(name, "cpu") == 0) return cpu_backend_create(err);
    if (strcmp(name, "cuda") == 0) {
#ifdef LTRI_HAVE_CUDA
        if (cuda_device_count() == 0) {
            ltri_fail(err, "backend cuda: no CUDA device is visible (use --backend cpu)");
            return NULL;
        }
        return cuda_backend_create(device, err);
#else
        ltri_fail(err, "backend cuda: this build has no CUDA backend (configure with -DLTRI_CUDA=ON)");
        return NULL;
#endif
    }
    ltri_fail(err, "unknown backend '%s' (expected cpu, cuda or auto)", name);
    return NULL;
}

int backend_nccl_unique_id(void *id, ltri_error *err) {
#ifdef LTRI_HAVE_CUDA
    return cuda_nccl_unique_id(id, err);
#else
    (void)id;
    return ltri_fail(err, "this build has no CUDA/NCCL");
#endif
}

void *backend_nccl_init(ltri_backend *be, const void *id, int rank, int size, ltri_error *err) {
#ifdef LTRI_HAVE_CUDA
    if (be->kind == LTRI_BACKEND_CUDA) return cuda_nccl_init(be, id, rank, size, err);
#endif
    (void)id, (void)rank, (void)size;
    ltri_fail(err, "NCCL needs the cuda backend (backend %s)", be->name);
    return NULL;
}

void backend_nccl_allgather(ltri_backend *be, void *comm, const void *send, void *recv, size_t bytes,
                            double timeout_s) {
#ifdef LTRI_HAVE_CUDA
    cuda_nccl_allgather(be, comm, send, recv, bytes, timeout_s);
#else
    (void)be, (void)comm, (void)send, (void)recv, (void)bytes, (void)timeout_s;
    ltri_fatal("backend_nccl_allgather: no NCCL in this build");
#endif
}

void backend_nccl_destroy(void *comm) {
#ifdef LTRI_HAVE_CUDA
    cuda_nccl_destroy(comm);
#else
    (void)comm;
#endif
}

void backend_destroy(ltri_backend *be) {
    if (be) be->destroy(be);
}

void backend_matmul_group_each(ltri_backend *be, const ltri_matmul_out *outs, int n_outs, const void *x,
                               int n_tokens, int n_in) {
    for (int i = 0; i < n_outs; i++)
        be->matmul(be, outs[i].y, x, outs[i].w, outs[i].bias, n_tokens, outs[i].n_out, n_in, outs[i].accumulate);
}

void backend_matmul_swiglu_unfused(ltri_backend *be, void *out, float *gate, float *up, const void *x,
                                   const void *w_gate, const void *w_up, const void *b_gate, const void *b_up,
                                   int n_tokens, int n_hidden, int n_in) {
    be->matmul(be, gate, x, w_gate, b_gate, n_tokens, n_hidden, n_in, 0);
    be->matmul(be, up, x, w_up, b_up, n_tokens, n_hidden, n_in, 0);
    be->swiglu(be, out, gate, up, (size_t)n_tokens * n_hidden);
}

/* Conversions go through a bounded host staging buffer so that uploading an
 * 8B-parameter model never needs a second full copy in host memory. */
#define STAGING_ELEMS ((size_t)1 << 22)

void backend_upload_convert(ltri_backend *be, void *dst, ltri_dtype dst_dtype, const void *src_host,
                            ltri_dtype src_dtype, size_t n) {
    if (dst_dtype == src_dtype) {
        be->copy_to(be, dst, src_host, n * ltri_dtype_size(dst_dtype));
        return;
    }
    size_t dsz = ltri_dtype_size(dst_dtype), ssz = ltri_dtype_size(src_dtype);
    size_t chunk = n < STAGING_ELEMS ? n : STAGING_ELEMS;
    void *stage = malloc(chunk * dsz);
    if (!stage) {
        LOG_ERROR("backend_upload_convert: out of host memory (%zu bytes)", chunk * dsz);
        abort();
    }
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        ltri_convert(stage, dst_dtype, (const char *)src_host + i * ssz, src_dtype, m);
        /* copy_to may be asynchronous but consumes the host buffer before returning */
        be->copy_to(be, (char *)dst + i * dsz, stage, m * dsz);
    }
    free(stage);
}

void backend_download_f32(ltri_backend *be, float *dst_host, const void *src, ltri_dtype src_dtype, size_t n) {
    if (src_dtype == LTRI_F32) {
        be->copy_from(be, dst_host, src, n * 4);
        return;
    }
    size_t ssz = ltri_dtype_size(src_dtype);
    void *stage = malloc(n * ssz);
    if (!stage) {
        LOG_ERROR("backend_download_f32: out of host memory (%zu bytes)", n * ssz);
        abort();
    }
    be->copy_from(be, stage, src, n * ssz);
    ltri_convert(dst_host, LTRI_F32, stage, src_dtype, n);
    free(stage);
}
