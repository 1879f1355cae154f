/* NCCL for the ranks of one job: the communicator is made from a unique id that
 * rank 0 creates and MPI broadcasts (the nccl-tests bootstrap), and collectives
 * run on the backend's stream. Waiting polls the stream and NCCL's asynchronous
 * error state with a deadline, so a dead or stuck peer turns into a fatal error
 * on every surviving rank (which MPI_Aborts the job) rather than a hang. */
#include <nccl.h>
#include <sched.h>
#include <time.h>

#include "kernels/cuda/cuda_internal.h"

typedef struct {
    ncclComm_t comm;
    int rank, size;
} nccl_state;

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cuda_nccl_unique_id(void *id, ltri_error *err) {
    static_assert(sizeof(ncclUniqueId) == CUDA_NCCL_ID_BYTES, "ncclUniqueId size");
    ncclResult_t rc = ncclGetUniqueId((ncclUniqueId *)id);
    if (rc != ncclSuccess) return ltri_fail(err, "ncclGetUniqueId: %s", ncclGetErrorString(rc));
    return 0;
}

void *cuda_nccl_init(ltri_backend *be, const void *id, int rank, int size, ltri_error *err) {
    cuda_enter(be);
    nccl_state *s = (nccl_state *)calloc(1, sizeof(nccl_state));
    if (!s) {
        ltri_fail(err, "nccl: out of host memory");
        return NULL;
    }
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof(uid));
    ncclResult_t rc = ncclCommInitRank(&s->comm, size, uid, rank);
    if (rc != ncclSuccess) {
        ltri_fail(err, "rank %d: ncclCommInitRank (%d ranks): %s", rank, size, ncclGetErrorString(rc));
        free(s);
        return NULL;
    }
    s->rank = rank;
    s->size = size;
    return s;
}

void cuda_nccl_allgather(ltri_backend *be, void *comm, const void *send, void *recv, size_t bytes, double timeout_s) {
    cuda_impl *impl = cuda_enter(be);
    nccl_state *s = (nccl_state *)comm;
    NCCL_CHECK(ncclAllGather(send, recv, bytes, ncclChar, s->comm, impl->stream));
    double deadline = now_sec() + timeout_s;
    for (;;) {
        cudaError_t q = cudaStreamQuery(impl->stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) ltri_fatal("rank %d: all-gather: %s", s->rank, cudaGetErrorString(q));
        ncclResult_t async = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(s->comm, &async));
        if (async != ncclSuccess) {
            ncclCommAbort(s->comm);
            ltri_fatal("rank %d: NCCL all-gather failed: %s", s->rank, ncclGetErrorString(async));
        }
        if (now_sec() > deadline) {
            ncclCommAbort(s->comm);
            ltri_fatal("rank %d: NCCL all-gather of %zu bytes did not finish in %.0f s: a peer rank is gone or stuck",
                       s->rank, bytes, timeout_s);
        }
        sched_yield();
    }
}

void cuda_nccl_destroy(void *comm) {
    nccl_state *s = (nccl_state *)comm;
    if (!s) return;
    ncclCommDestroy(s->comm);
    free(s);
}
