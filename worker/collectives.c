#include "worker/collectives.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timer.h"

struct collectives_watchdog {
    pthread_t thread;
    _Atomic double busy_since; /* 0: no collective in flight */
    _Atomic int stop;
    const char *what;
    int rank;
    double timeout_s;
};

static void *watchdog_main(void *arg) {
    struct collectives_watchdog *w = arg;
    while (!atomic_load(&w->stop)) {
        double since = atomic_load(&w->busy_since);
        if (since > 0 && ltri_now_sec() - since > w->timeout_s) {
            /* MPI may not be called from this thread; ending the process makes
             * mpirun end the job, with this message naming the rank. */
            LOG_ERROR("rank %d: %s waited more than %.0f s: a peer rank is gone or stuck; aborting", w->rank,
                      w->what, w->timeout_s);
            fflush(stderr);
            abort();
        }
        usleep(200000);
    }
    return NULL;
}

static void watch(ltri_collectives *c, const char *what) {
    if (!c->watchdog) return;
    c->watchdog->what = what;
    atomic_store(&c->watchdog->busy_since, ltri_now_sec());
}

static void unwatch(ltri_collectives *c) {
    if (c->watchdog) atomic_store(&c->watchdog->busy_since, 0.0);
}

int collectives_init(ltri_collectives *c, const ltri_comm *comm, ltri_backend *be, double timeout_s,
                     ltri_error *err) {
    memset(c, 0, sizeof(*c));
    c->rank = comm ? comm->rank : 0;
    c->size = comm ? comm->size : 1;
    c->be = be;
    c->comm = comm ? comm->world : MPI_COMM_NULL;
    c->timeout_s = timeout_s > 0 ? timeout_s : 600.0;
    const char *env = getenv("LTRI_COLLECTIVE_TIMEOUT");
    if (env) { /* a typo must not become a deadline of 0 s, which would fail every collective */
        char *end = NULL;
        const double v = strtod(env, &end);
        if (!*env || *end || !(v > 0.0))
            return ltri_fail(err, "LTRI_COLLECTIVE_TIMEOUT='%s': a number of seconds > 0 is needed", env);
        c->timeout_s = v;
    }
    if (c->size == 1) return 0;
    if (be->kind == LTRI_BACKEND_CUDA) {
        unsigned char id[BACKEND_NCCL_ID_BYTES];
        int ok = c->rank != 0 || backend_nccl_unique_id(id, err) == 0;
        /* every rank must learn whether rank 0 got an id, or they would wait forever */
        MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, c->comm));
        if (!ok) return c->rank == 0 ? -1 : ltri_fail(err, "rank 0 could not create the NCCL id");
        MPI_CHECK(MPI_Bcast(id, BACKEND_NCCL_ID_BYTES, MPI_BYTE, 0, c->comm));
        if (!(c->nccl = backend_nccl_init(be, id, c->rank, c->size, err))) return -1;
    }
    c->watchdog = calloc(1, sizeof(*c->watchdog));
    if (!c->watchdog) return ltri_fail(err, "collectives: out of memory");
    c->watchdog->rank = c->rank;
    c->watchdog->timeout_s = c->timeout_s;
    if (pthread_create(&c->watchdog->thread, NULL, watchdog_main, c->watchdog) != 0) {
        free(c->watchdog);
        c->watchdog = NULL;
        return ltri_fail(err, "collectives: cannot start the watchdog thread");
    }
    return 0;
}

void collectives_free(ltri_collectives *c) {
    if (c->watchdog) {
        atomic_store(&c->watchdog->stop, 1);
        pthread_join(c->watchdog->thread, NULL);
        free(c->watchdog);
    }
    if (c->nccl) backend_nccl_destroy(c->nccl);
    memset(c, 0, sizeof(*c));
}

void collectives_allgather(ltri_collectives *c, const void *send, void *recv, size_t bytes) {
    if (c->size == 1) {
        c->be->copy(c->be, recv, send, bytes);
        return;
    }
    if (c->nccl) {
        backend_nccl_allgather(c->be, c->nccl, send, recv, bytes, c->timeout_s);
        return;
    }
    /* CPU backend: backend memory is host memory */
    collectives_allgather_host(c, send, recv, bytes);
}

void collectives_allgather_host(ltri_collectives *c, const void *send, void *recv, size_t bytes) {
    if (c->size == 1) {
        memmove(recv, send, bytes);
        return;
    }
    watch(c, "an all-gather");
    MPI_CHECK(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, c->comm));
    unwatch(c);
}
