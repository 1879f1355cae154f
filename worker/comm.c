#include "worker/comm.h"

#include <omp.h>
#include <stdlib.h>

static void abort_all_ranks(int code) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

void comm_init(ltri_comm *c, int *argc, char ***argv) {
    int provided = 0;
    /* Only the main thread makes MPI calls. */
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) {
        LOG_ERROR("MPI_Init_thread failed (code %d)", rc);
        exit(1);
    }
    ltri_set_fatal_handler(abort_all_ranks);
    c->world = MPI_COMM_WORLD;
    MPI_CHECK(MPI_Comm_rank(c->world, &c->rank));
    MPI_CHECK(MPI_Comm_size(c->world, &c->size));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &c->local_rank));
    MPI_CHECK(MPI_Comm_size(local, &c->local_size));
    MPI_CHECK(MPI_Comm_free(&local));
    ltri_log_init(ltri_log_get_level(), c->size > 1 ? c->rank : -1);
    /* Ranks on one node share its cores. Unless OMP_NUM_THREADS says otherwise,
     * each rank's CPU kernels get its share, so N ranks never run N x cores
     * threads (OpenMP barriers degrade badly when oversubscribed). */
    if (!getenv("OMP_NUM_THREADS") && c->local_size > 1) {
        int n = omp_get_num_procs() / c->local_size;
        omp_set_num_threads(n < 1 ? 1 : n);
    }
}

void comm_finalize(ltri_comm *c) {
    (void)c;
    MPI_Finalize();
}
