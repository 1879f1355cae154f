#include "coordinator/step.h"

#include <string.h>
#include <time.h>

void coord_step_send(const ltri_comm *comm, const coord_step *s, const int32_t *payload) {
    if (comm->size == 1) return;
    coord_step copy = *s;
    MPI_Request req;
    /* non-blocking on every rank: the receivers poll it (nonblocking and
     * blocking collectives do not match each other in MPI) */
    MPI_CHECK(MPI_Ibcast(&copy, (int)sizeof(copy), MPI_BYTE, 0, comm->world, &req));
    MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    int n = s->kind == COORD_STEP_PREFILL ? s->n : s->kind == COORD_STEP_DECODE ? 2 * s->n : 0;
    if (n > 0) MPI_CHECK(MPI_Bcast((void *)payload, n, MPI_INT32_T, 0, comm->world));
}

void coord_step_recv(const ltri_comm *comm, coord_step *s, int32_t *payload, int cap) {
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(s, (int)sizeof(*s), MPI_BYTE, 0, comm->world, &req));
    /* Poll; back off from 20 us to 2 ms while nothing comes. */
    long sleep_ns = 20000;
    for (int done = 0;;) {
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) break;
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 2000000) sleep_ns *= 2;
    }
    int n = s->kind == COORD_STEP_PREFILL ? s->n : s->kind == COORD_STEP_DECODE ? 2 * s->n : 0;
    if (n > cap) ltri_fatal("step descriptor with %d ids; this rank holds %d", n, cap);
    if (n > 0) MPI_CHECK(MPI_Bcast(payload, n, MPI_INT32_T, 0, comm->world));
}

int coord_step_run(ltri_engine *e, const ltri_comm *comm, const coord_step *s, const int32_t *payload, float *logits,
                   ltri_error *err) {
    int rc = -1;
    err->msg[0] = '\0';
    if (s->kind == COORD_STEP_PREFILL) {
        engine_select(e, s->seq);
        if (s->reset) engine_reset(e);
        rc = engine_forward(e, payload, s->n, logits, 0, err);
    } else if (s->kind == COORD_STEP_DECODE) {
        rc = engine_decode_batch(e, payload, payload + s->n, s->n, logits, err);
    } else {
        rc = ltri_fail(err, "step kind %d is not an engine step", s->kind);
    }
    if (comm->size == 1) return rc;
    /* every rank learns whether all succeeded, so that none goes on alone */
    int mine = rc != 0 ? comm->rank + 1 : 0, worst = 0;
    MPI_CHECK(MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, comm->world));
    if (worst == 0) return 0;
    if (rc == 0) ltri_fail(err, "the step failed on rank %d", worst - 1);
    return -1;
}

void coord_step_stats(ltri_engine *e, const ltri_comm *comm, int seq, sparse_stats *out) {
    memset(out, 0, sizeof(*out));
    engine_select(e, seq);
    if (e->sparse) *out = sparse_stats_get(e->sparse, e->be);
    if (comm->size == 1) return;
    long mine[2] = {out->keys_read, out->decode_keys_read}, sum[2] = {0, 0};
    MPI_CHECK(MPI_Reduce(mine, sum, 2, MPI_LONG, MPI_SUM, 0, comm->world));
    if (comm->rank == 0) out->keys_read = sum[0], out->decode_keys_read = sum[1];
}
