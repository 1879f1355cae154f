/* The offline index: a prefilled context saved to a directory and loaded by a
 * later run, also on another number of ranks.
 *
 *   DIR/manifest.json   format and version; the model's identity (CRC-32 of its
 *                       config.json and tokenizer.json); the attention mode and
 *                       every parameter; tokens held; per layer the span table
 *                       (position, length, owner at save time, scores), where
 *                       discovery stands, the persistent-recall state; every
 *                       file's size and CRC-32.
 *   DIR/common.bin      what every rank holds alike (written by rank 0): per
 *                       layer the local window (keys after RoPE), the staged
 *                       keys before RoPE (window + pending), the sinks, the
 *                       attention band of the pending tokens; for single-rank
 *                       full attention the whole cache.
 *   DIR/shard-R.bin     rank R's spans: K/V rows and index vectors, in span
 *                       order, layer by layer.
 *
 * Files are written as name.tmp, flushed, synced and renamed, and the manifest
 * goes last: a save that did not finish has no manifest and never loads. On
 * load every file's size and CRC are checked before anything is used; spans
 * are placed again by the placement rule for the loading job's ranks, and each
 * rank reads only the spans it now owns. Element types convert on load
 * (a context saved on the CUDA backend loads on the CPU backend and back). */
#ifndef LTRI_WORKER_CONTEXT_IO_H
#define LTRI_WORKER_CONTEXT_IO_H

#include "core/error.h"
#include "model/model.h"
#include "worker/attention_params.h"
#include "worker/collectives.h"
#include "worker/engine.h"

/* Saves the engine's current sequence. Every rank of the job calls it. */
int context_save(ltri_engine *e, const ltri_model *m, ltri_collectives *coll, const char *dir, ltri_error *err);

/* What a saved context needs from the engine that loads it. */
int context_peek(const char *dir, ltri_attn_params *attn, int *n_tokens, int *ranks, ltri_error *err);

/* Loads into the engine's current sequence, which must be empty; the engine
 * must run the saved attention mode and parameters. Every rank calls it. */
int context_load(ltri_engine *e, const ltri_model *m, ltri_collectives *coll, const char *dir, ltri_error *err);

#endif
