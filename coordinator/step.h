/* The step protocol between rank 0 (the coordinator) and the other ranks.
 *
 * Only rank 0 talks to Redis and decides what runs. Before every engine call
 * it broadcasts a small descriptor (which sequence to reset and prefill with
 * which ids, or which sequences to decode with which tokens); every rank then
 * makes the same engine call, since the engine's collectives need all ranks.
 * Rank 0 samples from its logits, and the tokens it chose travel in the next
 * decode descriptor, so the ranks can never drift apart on a near tie.
 *
 * The other ranks wait for a descriptor with a non-blocking broadcast that
 * they poll, sleeping up to 2 ms between polls: an idle service (or one whose
 * rank 0 is reconnecting to Redis) does not spin every core. A shutdown
 * descriptor ends the loop on every rank. */
#ifndef LTRI_COORDINATOR_STEP_H
#define LTRI_COORDINATOR_STEP_H

#include <stdint.h>

#include "core/error.h"
#include "worker/attention_sparse.h"
#include "worker/comm.h"
#include "worker/engine.h"

typedef enum {
    COORD_STEP_SHUTDOWN = 0, /* leave the loop (exit_code) */
    COORD_STEP_PREFILL = 1,  /* seq (reset first if set) += payload ids[n] */
    COORD_STEP_DECODE = 2,   /* payload: seqs[n], then tokens[n] */
    COORD_STEP_STATS = 3,    /* sum seq's attention statistics on rank 0 */
} coord_step_kind;

typedef struct {
    int32_t kind, seq, n, reset, exit_code;
} coord_step;

/* Rank 0: sends the step and its payload (prefill: n ids; decode: 2n). */
void coord_step_send(const ltri_comm *comm, const coord_step *s, const int32_t *payload);

/* Other ranks: the next step; payload holds cap int32s. */
void coord_step_recv(const ltri_comm *comm, coord_step *s, int32_t *payload, int cap);

/* Every rank runs a prefill or decode step on its engine. logits (rank 0;
 * NULL elsewhere): the last prefill token's row, or one row per decoded
 * sequence. 0 when it succeeded on every rank; else -1 on every rank, err
 * with this rank's message (or which rank failed). */
int coord_step_run(ltri_engine *e, const ltri_comm *comm, const coord_step *s, const int32_t *payload, float *logits,
                   ltri_error *err);

/* STATS: rank 0 gets seq's attention statistics with the keys read summed
 * over the ranks (each reads its own spans); the rest is the same on every
 * rank. Zeroes when the engine has no sparse state. */
void coord_step_stats(ltri_engine *e, const ltri_comm *comm, int seq, sparse_stats *out);

#endif
