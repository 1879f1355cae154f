/* The attention modes and their parameters, shared by the CLI, the job
 * service and the evaluation harness.
 *
 *   full       exact attention over everything (the reference)
 *   streaming  sink tokens + local window (StreamingLLM)
 *   infllm     + fixed blocks with representative tokens, top-k by the chunk's
 *              query (InfLLM)
 *   ltri       + spans found from the triangular attention pattern, static and
 *              dynamic index vectors, collaborative retrieval (Ltri-LLM)
 *
 * Defaults are InfLLM's published configuration for Llama-3-8B (128 sinks, a
 * 4096-token window, 2048 retrieved tokens, 512-token chunks, 128-token
 * blocks with 4 representatives) where Ltri-LLM builds on it; the values the
 * Ltri-LLM paper leaves open are documented choices (docs/ARCHITECTURE.md). */
#ifndef LTRI_WORKER_ATTENTION_PARAMS_H
#define LTRI_WORKER_ATTENTION_PARAMS_H

#include "core/error.h"
#include "index/segment.h"

typedef enum {
    LTRI_ATTN_FULL = 0,
    LTRI_ATTN_STREAMING = 1,
    LTRI_ATTN_INFLLM = 2,
    LTRI_ATTN_LTRI = 3,
} ltri_attn_mode;

typedef struct {
    ltri_attn_mode mode;
    int n_sink;      /* first tokens always attended */
    int n_local;     /* local window before the chunk */
    int budget;      /* retrieved tokens per attention call */
    int max_spans;   /* retrieved spans/blocks per call */
    int block_size;  /* infllm: tokens per block */
    int n_repr;      /* infllm: representative tokens per block */
    int span_min, span_max;
    float theta;     /* ltri: triangle-score baseline per attention entry */
    segment_select select;
    int band;        /* width of the attention statistics band (>= 2 span_max for confidence) */
    int repr_min, repr_max; /* ltri: dynamic index vectors per span */
    int persist;     /* ltri: calls a retrieved span stays retrieved */
    int persist_budget; /* extra tokens for persisting spans; -1: budget / 4 */
    int vote_heads;  /* ltri: voting q heads per layer, evenly spaced (0 off, -1 all) */
    int vote_k;      /* each voter's candidates */
    int vote_min;    /* votes that select a span (0: max(2, voters / 8)) */
    int page_size;   /* span store page, tokens */
    int device_pages; /* span store pages kept on the device per layer (0: all; else a host tier) */
} ltri_attn_params;

void attn_params_default(ltri_attn_params *p, ltri_attn_mode mode);

/* "full", "streaming", "infllm", "ltri" -> mode; -1 if unknown. */
int attn_mode_parse(const char *s);
const char *attn_mode_name(ltri_attn_mode m);

/* Sets one parameter by name ("n_sink", "theta", "select", ...; the CLI's
 * --n-sink is "n_sink") from its text value. Unknown names and bad values are
 * errors naming the parameter. */
int attn_params_set(ltri_attn_params *p, const char *name, const char *value, ltri_error *err);

/* The parameter names attn_params_set knows, NULL-terminated. */
extern const char *const attn_param_names[];

/* Checks consistency (positive sizes, band >= span_max, ...). */
int attn_params_check(const ltri_attn_params *p, ltri_error *err);

/* One line "mode=ltri n_sink=128 ..." for logs and metrics. */
void attn_params_describe(const ltri_attn_params *p, char *buf, int len);

#endif
