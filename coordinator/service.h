/* The job service: `ltri-worker --redis URL ...` on every rank.
 *
 * Rank 0 takes jobs from Redis (coordinator/queue.h), keeps up to max_batch
 * of them in the engine's sequences and schedules them: each scheduler step
 * runs one prefill chunk of one new job (round robin over those still
 * prefilling) and then one decode step over every job already decoding
 * (engine_decode_batch), so new jobs join a running batch without stalling it
 * for more than a chunk. The other ranks follow rank 0's step descriptors
 * (coordinator/step.h). docs/JOBS.md is the user's reference. */
#ifndef LTRI_COORDINATOR_SERVICE_H
#define LTRI_COORDINATOR_SERVICE_H

#include <stddef.h>

#include "coordinator/queue.h"
#include "worker/attention_params.h"
#include "worker/comm.h"

typedef struct {
    const char *model_dir;
    const char *backend;
    int device;          /* -1: the node-local rank */
    int chunk_size;
    int max_context;     /* per sequence; 0: the model's max_position_embeddings */
    int max_new_tokens;  /* for jobs that do not say */
    ltri_attn_params attn;
    coord_queue_options queue;
    int max_batch;            /* sequences decoded together */
    long max_tokens_in_flight; /* sum of prompt + max_new_tokens over running jobs; 0: no limit */
    double drain_s;           /* on SIGTERM: let running jobs finish this long, then requeue */
    size_t max_prompt_bytes;
    int quiet;
} coord_service_options;

/* ltri-worker's --redis mode: parses argv (coordinator/options.c), starts
 * MPI, serves until SIGTERM/SIGINT or a fatal error. Returns the exit status
 * (0 after a graceful shutdown, 1 on a fatal error, 2 on a bad command line). */
int coord_service_main(int argc, char **argv);

/* 0 to run, 1 after --help, -1 on a usage error (printed). */
int coord_service_parse_args(int argc, char **argv, coord_service_options *o);

/* Serves on every rank of comm; returns the exit status. */
int coord_service_run(const coord_service_options *o, const ltri_comm *comm);

#endif
