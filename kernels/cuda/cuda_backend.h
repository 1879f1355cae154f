/* The CUDA backend: bf16 weights and KV cache, fp32 accumulation, cuBLASLt for
 * GEMMs. C linkage so that host C code can create it. */
#ifndef LTRI_KERNELS_CUDA_BACKEND_H
#define LTRI_KERNELS_CUDA_BACKEND_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NULL + err when the device cannot be used. */
ltri_backend *cuda_backend_create(int device, ltri_error *err);

/* Visible CUDA devices; 0 when there is no driver or no GPU (never an error). */
int cuda_device_count(void);

/* NCCL between the ranks of a job, on the backend's stream (kernels/cuda/nccl_comm.cu). */
#define CUDA_NCCL_ID_BYTES 128
int cuda_nccl_unique_id(void *id, ltri_error *err);
void *cuda_nccl_init(ltri_backend *be, const void *id, int rank, int size, ltri_error *err);
/* All-gather of `bytes` from every rank (device memory), waited for with a
 * timeout: a peer that died or hangs ends this process with a message naming
 * this rank, instead of leaving it in the collective. */
void cuda_nccl_allgather(ltri_backend *be, void *comm, const void *send, void *recv, size_t bytes, double timeout_s);
void cuda_nccl_destroy(void *comm);

#ifdef __cplusplus
}
#endif

#endif
