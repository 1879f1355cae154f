/* Checks for every CUDA, cuBLAS and NCCL call (STYLE rule 2).
 *
 * A failing call inside an operation leaves the CUDA context in an unknown
 * state, so these end the process through ltri_fatal() (core/log.h), which the
 * worker routes to MPI_Abort: a failing rank brings the job down at once instead
 * of leaving its peers waiting in a collective. The message names the file,
 * the line, the call as written and the library's own error string.
 *
 * Errors that a caller can recover from (an allocation that does not fit, a
 * device that cannot be opened) are not checked with these: they are returned
 * through an ltri_error by the code that makes the call.
 *
 * NCCL_CHECK needs <nccl.h>, included by the file that uses it. */
#ifndef LTRI_KERNELS_CUDA_CUDA_CHECK_H
#define LTRI_KERNELS_CUDA_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

/* core/log.h is a C header without extern "C" guards; these files are C++. */
extern "C" {
#include "core/log.h"
}

#define CUDA_CHECK(call)                                                                                     \
    do {                                                                                                     \
        cudaError_t cuda_check_status_ = (call);                                                             \
        if (cuda_check_status_ != cudaSuccess)                                                               \
            ltri_fatal("%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call,                               \
                       cudaGetErrorString(cuda_check_status_), cudaGetErrorName(cuda_check_status_));        \
    } while (0)

/* After every kernel launch: a bad launch configuration is reported here, at
 * the launch, rather than by whichever call happens to come next. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                                   \
    do {                                                                                                     \
        cublasStatus_t cublas_check_status_ = (call);                                                        \
        if (cublas_check_status_ != CUBLAS_STATUS_SUCCESS)                                                   \
            ltri_fatal("%s:%d: %s failed: %s (%s)", __FILE__, __LINE__, #call,                               \
                       cublasGetStatusName(cublas_check_status_), cublasGetStatusString(cublas_check_status_)); \
    } while (0)

#define NCCL_CHECK(call)                                                                                     \
    do {                                                                                                     \
        ncclResult_t nccl_check_status_ = (call);                                                            \
        if (nccl_check_status_ != ncclSuccess)                                                               \
            ltri_fatal("%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                                    \
                       ncclGetErrorString(nccl_check_status_));                                              \
    } while (0)

#endif
