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

#ifdef __cplusplus
}
#endif

#endif
