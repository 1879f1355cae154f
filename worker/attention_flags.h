/* The attention flags every program shares (ltri-worker, ltri-eval, the
 * benchmarks): --attn MODE and one --name-with-dashes VALUE per parameter of
 * attention_params.h. They are recorded first and applied on top of the
 * mode's defaults, so their order on the command line does not matter. */
#ifndef LTRI_WORKER_ATTENTION_FLAGS_H
#define LTRI_WORKER_ATTENTION_FLAGS_H

#include <getopt.h>
#include <stdio.h>

#include "core/error.h"
#include "worker/attention_params.h"

#define ATTN_FLAGS_MAX 64

typedef struct {
    const char *mode; /* NULL: full */
    int n;
    int param[ATTN_FLAGS_MAX]; /* index into attn_param_names */
    const char *value[ATTN_FLAGS_MAX];
} attn_flag_set;

/* If arg is an attention flag, records it with its value and returns the
 * number of arguments used (2); returns 0 for any other argument and -1 (err)
 * for a flag without a value or too many flags. */
int attn_flags_parse(attn_flag_set *f, const char *arg, const char *value, ltri_error *err);

/* mode < 0: the recorded --attn (full without one). Fills p with that mode's
 * defaults and the recorded overrides, and checks the result. */
int attn_flags_apply(const attn_flag_set *f, int mode, ltri_attn_params *p, ltri_error *err);

/* For programs that parse with getopt_long: their own n_base options, then
 * --attn and every parameter flag (all returning `val`), then the zero entry,
 * written to table (room for cap entries: n_base + ATTN_FLAGS_GETOPT + 1 is
 * always enough); the flags' names live in *names, which must outlive the
 * table. Returns 0, or -1 when cap is too small. */
#define ATTN_FLAGS_GETOPT 40
typedef struct {
    char name[ATTN_FLAGS_GETOPT][32];
} attn_flag_names;
int attn_flags_longopts(struct option *table, int cap, const struct option *base, int n_base,
                        attn_flag_names *names, int val);

/* Records what getopt_long matched (the option's name without dashes). */
int attn_flags_take(attn_flag_set *f, const char *name, const char *value, ltri_error *err);

/* The flags' help text. */
void attn_flags_usage(FILE *out);

#endif
