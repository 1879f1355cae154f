/* Collectives between the ranks of a job, for the distributed span index.
 *
 * Device tensors (the partial attentions) move with NCCL on the CUDA backend
 * and with MPI on the CPU backend (whose "device" memory is host memory); small
 * host data (retrieval candidates) always moves with MPI. Every collective runs
 * under a deadline: a watchdog thread ends the process with a message naming
 * the rank when one waits longer than `timeout_s` (a peer that crashed or
 * hangs), and mpirun then ends the job, so a failure never becomes a hang.
 * With one rank every call is a copy. */
#ifndef LTRI_WORKER_COLLECTIVES_H
#define LTRI_WORKER_COLLECTIVES_H

#include <stddef.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "worker/comm.h"

typedef struct ltri_collectives {
    int rank, size;
    ltri_backend *be; /* not owned */
    MPI_Comm comm;
    void *nccl;       /* NCCL communicator (cuda backend, size > 1) */
    double timeout_s;
    struct collectives_watchdog *watchdog;
} ltri_collectives;

/* timeout_s <= 0: 600 s (LTRI_COLLECTIVE_TIMEOUT overrides). */
int collectives_init(ltri_collectives *c, const ltri_comm *comm, ltri_backend *be, double timeout_s,
                     ltri_error *err);
void collectives_free(ltri_collectives *c);

/* recv[r * bytes ..] = rank r's send, for backend memory. */
void collectives_allgather(ltri_collectives *c, const void *send, void *recv, size_t bytes);
/* The same for host memory. */
void collectives_allgather_host(ltri_collectives *c, const void *send, void *recv, size_t bytes);

#endif
