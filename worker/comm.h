/* The process's place among the MPI ranks. MPI carries control (and, on the CPU
 * backend, data); rank 0 is also the coordinator. The node-local rank picks the
 * GPU, as in nccl-tests. Every MPI call goes through MPI_CHECK. */
#ifndef LTRI_WORKER_COMM_H
#define LTRI_WORKER_COMM_H

#include <mpi.h>

#include "core/log.h"

#define MPI_CHECK(call)                                                                                      \
    do {                                                                                                     \
        int mpi_rc_ = (call);                                                                                \
        if (mpi_rc_ != MPI_SUCCESS) {                                                                        \
            char mpi_msg_[MPI_MAX_ERROR_STRING];                                                             \
            int mpi_len_ = 0;                                                                                \
            MPI_Error_string(mpi_rc_, mpi_msg_, &mpi_len_);                                                  \
            ltri_fatal("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, mpi_msg_);                         \
        }                                                                                                    \
    } while (0)

typedef struct {
    int rank, size;             /* in MPI_COMM_WORLD */
    int local_rank, local_size; /* on this node */
    MPI_Comm world;
} ltri_comm;

/* MPI_Init_thread, ranks, the fatal handler (MPI_Abort so that one failing rank
 * ends the job instead of leaving the others waiting), and logging's rank tag. */
void comm_init(ltri_comm *c, int *argc, char ***argv);
void comm_finalize(ltri_comm *c);

#endif
