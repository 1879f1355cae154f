#include "worker/attention_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *mode_names[] = {"full", "streaming", "infllm", "ltri"};

void attn_params_default(ltri_attn_params *p, ltri_attn_mode mode) {
    *p = (ltri_attn_params){
        .mode = mode,
        .n_sink = 128,
        .n_local = 4096,
        .budget = 2048,
        .max_spans = 64,
        .block_size = 128,
        .n_repr = 4,
        .span_min = 8,
        .span_max = 128,
        .theta = 0.006f,
        .select = SEGMENT_DP,
        .band = 256,
        .repr_min = 1,
        .repr_max = 4,
        .persist = 4,
        .persist_budget = -1, /* budget / 4 */
        .vote_heads = 8,
        .vote_k = 4,
        .vote_min = 0,
        .page_size = 64,
    };
    if (mode == LTRI_ATTN_INFLLM) p->max_spans = p->budget / p->block_size; /* InfLLM's topk = 16 */
}

const char *const attn_param_names[] = {"n_sink",     "n_local",   "budget",         "max_spans", "block_size",
                                         "n_repr",     "span_min",  "span_max",       "theta",     "select",
                                         "band",       "repr_min",  "repr_max",       "persist",   "persist_budget",
                                         "vote_heads", "vote_k",    "vote_min",       "page_size", "device_pages",
                                         NULL};

int attn_params_set(ltri_attn_params *p, const char *name, const char *value, ltri_error *err) {
    if (strcmp(name, "select") == 0) {
        if (strcmp(value, "dp") == 0) p->select = SEGMENT_DP;
        else if (strcmp(value, "nms") == 0) p->select = SEGMENT_NMS;
        else return ltri_fail(err, "attention parameter select: '%s' is not dp or nms", value);
        return 0;
    }
    char *end = NULL;
    if (strcmp(name, "theta") == 0) {
        float v = strtof(value, &end);
        if (!*value || *end || !(v >= 0.0f)) return ltri_fail(err, "attention parameter theta: '%s' is not a number >= 0", value);
        p->theta = v;
        return 0;
    }
    int *fields[] = {&p->n_sink,   &p->n_local,  &p->budget,   &p->max_spans,  &p->block_size,     &p->n_repr,
                     &p->span_min, &p->span_max, NULL,         NULL,           &p->band,           &p->repr_min,
                     &p->repr_max, &p->persist,  &p->persist_budget, &p->vote_heads, &p->vote_k, &p->vote_min,
                     &p->page_size, &p->device_pages};
    for (int i = 0; attn_param_names[i]; i++) {
        if (strcmp(name, attn_param_names[i]) != 0 || !fields[i]) continue;
        long v = strtol(value, &end, 10);
        int min = strcmp(name, "vote_heads") == 0 || strcmp(name, "persist_budget") == 0 ? -1 : 0;
        if (!*value || *end || v < min || v > 100000000L)
            return ltri_fail(err, "attention parameter %s: '%s' is not an integer >= %d", name, value, min);
        *fields[i] = (int)v;
        return 0;
    }
    return ltri_fail(err, "unknown attention parameter '%s'", name);
}

int attn_mode_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, mode_names[i]) == 0) return i;
    return -1;
}

const char *attn_mode_name(ltri_attn_mode m) { return (int)m >= 0 && (int)m < 4 ? mode_names[m] : "?"; }

int attn_params_check(const ltri_attn_params *p, ltri_error *err) {
    if (p->mode == LTRI_ATTN_FULL) return 0;
    if (p->n_sink < 0 || p->n_local < 1) return ltri_fail(err, "attention: n_sink >= 0 and n_local >= 1 needed");
    if (p->budget < 0 || p->max_spans < 1) return ltri_fail(err, "attention: budget >= 0 and max_spans >= 1 needed");
    if (p->page_size < 1) return ltri_fail(err, "attention: page_size must be positive");
    if (p->mode == LTRI_ATTN_INFLLM && (p->block_size < 1 || p->n_repr < 1 || p->n_repr > p->block_size))
        return ltri_fail(err, "attention infllm: block_size >= 1 and 1 <= n_repr <= block_size needed");
    if (p->mode == LTRI_ATTN_LTRI) {
        if (p->span_min < 1 || p->span_max < p->span_min)
            return ltri_fail(err, "attention ltri: 1 <= span_min <= span_max needed (got %d, %d)", p->span_min,
                             p->span_max);
        if (p->band < p->span_max)
            return ltri_fail(err, "attention ltri: band (%d) must be >= span_max (%d)", p->band, p->span_max);
        if (p->repr_min < 0 || p->repr_max < p->repr_min || p->repr_max > 32)
            return ltri_fail(err, "attention ltri: 0 <= repr_min <= repr_max <= 32 needed");
        if (!(p->theta >= 0.0f)) return ltri_fail(err, "attention ltri: theta must be >= 0");
        if (p->persist < 0 || p->persist_budget < -1 || p->vote_k < 0 || p->vote_min < 0)
            return ltri_fail(err, "attention ltri: persist, vote_k, vote_min >= 0 and persist_budget >= -1 needed");
    }
    if ((p->mode == LTRI_ATTN_INFLLM || p->mode == LTRI_ATTN_LTRI) && p->band < 1)
        return ltri_fail(err, "attention: band must be positive");
    return 0;
}

void attn_params_describe(const ltri_attn_params *p, char *buf, int len) {
    switch (p->mode) {
    case LTRI_ATTN_FULL: snprintf(buf, (size_t)len, "mode=full"); break;
    case LTRI_ATTN_STREAMING:
        snprintf(buf, (size_t)len, "mode=streaming n_sink=%d n_local=%d", p->n_sink, p->n_local);
        break;
    case LTRI_ATTN_INFLLM:
        snprintf(buf, (size_t)len, "mode=infllm n_sink=%d n_local=%d budget=%d topk=%d block=%d repr=%d band=%d",
                 p->n_sink, p->n_local, p->budget, p->max_spans, p->block_size, p->n_repr, p->band);
        break;
    case LTRI_ATTN_LTRI:
        snprintf(buf, (size_t)len,
                 "mode=ltri n_sink=%d n_local=%d budget=%d max_spans=%d span=%d..%d theta=%g select=%s band=%d "
                 "repr=%d..%d persist=%d/%d vote_heads=%d vote_k=%d vote_min=%d",
                 p->n_sink, p->n_local, p->budget, p->max_spans, p->span_min, p->span_max, p->theta,
                 p->select == SEGMENT_NMS ? "nms" : "dp", p->band, p->repr_min, p->repr_max, p->persist,
                 p->persist_budget < 0 ? p->budget / 4 : p->persist_budget, p->vote_heads, p->vote_k, p->vote_min);
        break;
    }
}
