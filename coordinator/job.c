/* Parsing and checking a job document. Strict on purpose: an unknown field is
 * an error (a typo such as "max_new_token" would otherwise run the job with a
 * default the user did not ask for), and so is a value of the wrong type. */
#include "coordinator/job.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "?";
}

static int get_string(const json_t *v, const char *name, char **out, ltri_error *err) {
    if (!json_is_string(v)) return ltri_fail(err, "job: field '%s' must be a string, got %s", name, type_name(v));
    if (!(*out = strdup(json_string_value(v)))) return ltri_fail(err, "job: out of memory");
    return 0;
}

static int get_int(const json_t *v, const char *name, long long min, long long max, long long *out,
                   ltri_error *err) {
    if (!json_is_integer(v))
        return ltri_fail(err, "job: field '%s' must be an integer, got %s", name, type_name(v));
    long long x = json_integer_value(v);
    if (x < min || x > max)
        return ltri_fail(err, "job: field '%s' is %lld; it must be in %lld .. %lld", name, x, min, max);
    *out = x;
    return 0;
}

static int get_number(const json_t *v, const char *name, double *out, ltri_error *err) {
    if (!json_is_number(v)) return ltri_fail(err, "job: field '%s' must be a number, got %s", name, type_name(v));
    *out = json_number_value(v);
    return 0;
}

static int get_bool(const json_t *v, const char *name, int *out, ltri_error *err) {
    if (!json_is_boolean(v)) return ltri_fail(err, "job: field '%s' must be true or false, got %s", name, type_name(v));
    *out = json_is_true(v);
    return 0;
}

static int parse_stop(coord_job *job, const json_t *v, ltri_error *err) {
    if (!json_is_array(v)) return ltri_fail(err, "job: field 'stop' must be an array, got %s", type_name(v));
    if (json_array_size(v) > COORD_JOB_MAX_STOP)
        return ltri_fail(err, "job: field 'stop' has %zu entries; at most %d", json_array_size(v), COORD_JOB_MAX_STOP);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        char buf[32];
        const char *s = buf;
        job->stop_is_id[job->n_stop] = json_is_integer(x);
        if (json_is_integer(x)) snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(x));
        else if (json_is_string(x) && json_string_length(x) > 0) s = json_string_value(x);
        else return ltri_fail(err, "job: 'stop' entry %zu must be a token's text or id, got %s", i, type_name(x));
        if (!(job->stop[job->n_stop++] = strdup(s))) return ltri_fail(err, "job: out of memory");
    }
    return 0;
}

/* "attn": {"mode": ..., "<parameter>": value, ...}. Without a mode, or with
 * the service's, the parameters apply on top of the service's configuration;
 * another mode starts from that mode's defaults. */
static int parse_attn(coord_job *job, const json_t *v, const coord_job_defaults *d, ltri_error *err) {
    if (!json_is_object(v)) return ltri_fail(err, "job: field 'attn' must be an object, got %s", type_name(v));
    job->attn = d->attn;
    const json_t *mode = json_object_get(v, "mode");
    if (mode) {
        if (!json_is_string(mode))
            return ltri_fail(err, "job: 'attn.mode' must be a string, got %s", type_name(mode));
        int m = attn_mode_parse(json_string_value(mode));
        if (m < 0)
            return ltri_fail(err, "job: 'attn.mode' is '%s'; it must be full, streaming, infllm or ltri",
                             json_string_value(mode));
        if ((ltri_attn_mode)m != d->attn.mode) attn_params_default(&job->attn, (ltri_attn_mode)m);
    }
    const char *key;
    json_t *x;
    json_object_foreach((json_t *)v, key, x) {
        if (strcmp(key, "mode") == 0) continue;
        char text[64];
        int is_select = strcmp(key, "select") == 0;
        if (is_select != json_is_string(x))
            return ltri_fail(err, "job: 'attn.%s' must be a %s, got %s", key,
                             is_select ? "string (dp or nms)" : "number", type_name(x));
        if (json_is_integer(x)) snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(x));
        else if (json_is_real(x)) snprintf(text, sizeof(text), "%.9g", json_real_value(x));
        else snprintf(text, sizeof(text), "%s", json_string_value(x));
        if (attn_params_set(&job->attn, key, text, err)) return ltri_fail_prefix(err, "job: 'attn': ");
    }
    if (attn_params_check(&job->attn, err)) return ltri_fail_prefix(err, "job: 'attn': ");
    /* One engine serves every job, and the attention mode is a property of
     * the engine (docs/JOBS.md): a job may only repeat the service's. */
    char want[512], have[512];
    attn_params_describe(&job->attn, want, sizeof(want));
    attn_params_describe(&d->attn, have, sizeof(have));
    if (strcmp(want, have) != 0)
        return ltri_fail(err, "job: 'attn' asks for '%s' but this service runs '%s'; submit it to a service "
                              "started with that attention configuration",
                         want, have);
    return 0;
}

static int parse_field(coord_job *job, const char *key, const json_t *v, const coord_job_defaults *d,
                       ltri_error *err) {
    long long i = 0;
    double x = 0;
    if (!strcmp(key, "prompt")) return get_string(v, key, &job->prompt, err);
    if (!strcmp(key, "prompt_file")) {
        if (get_string(v, key, &job->prompt_file, err)) return -1;
        if (job->prompt_file[0] != '/')
            return ltri_fail(err, "job: 'prompt_file' must be an absolute path (the service reads it, not the "
                                  "client), got '%s'", job->prompt_file);
        return 0;
    }
    if (!strcmp(key, "context"))
        return ltri_fail(err, "job: field 'context': jobs on a saved context are not supported yet; give "
                              "'prompt' or 'prompt_file'");
    if (!strcmp(key, "question")) return get_string(v, key, &job->question, err);
    if (!strcmp(key, "max_new_tokens")) {
        if (get_int(v, key, 0, 100000000, &i, err)) return -1;
        job->max_new_tokens = (int)i;
        return 0;
    }
    if (!strcmp(key, "temperature")) {
        if (get_number(v, key, &x, err)) return -1;
        if (!(x >= 0 && x <= 1000)) return ltri_fail(err, "job: field 'temperature' is %g; it must be in 0 .. 1000", x);
        job->sampling.temperature = (float)x;
        return 0;
    }
    if (!strcmp(key, "top_p")) {
        if (get_number(v, key, &x, err)) return -1;
        if (!(x > 0 && x <= 1)) return ltri_fail(err, "job: field 'top_p' is %g; it must be in (0, 1]", x);
        job->sampling.top_p = (float)x;
        return 0;
    }
    if (!strcmp(key, "top_k")) {
        if (get_int(v, key, 0, 1000000000, &i, err)) return -1;
        job->sampling.top_k = (int)i;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (get_int(v, key, 0, INT64_MAX, &i, err)) return -1;
        job->sampling.seed = (uint64_t)i;
        return 0;
    }
    if (!strcmp(key, "stop")) return parse_stop(job, v, err);
    if (!strcmp(key, "ignore_eos")) return get_bool(v, key, &job->ignore_eos, err);
    if (!strcmp(key, "no_bos")) return get_bool(v, key, &job->no_bos, err);
    if (!strcmp(key, "attn")) return parse_attn(job, v, d, err);
    return ltri_fail(err,
                     "job: unknown field '%s' (known: prompt, prompt_file, question, max_new_tokens, temperature, "
                     "top_p, top_k, seed, stop, ignore_eos, no_bos, attn)",
                     key);
}

int coord_job_parse(coord_job *job, const char *text, size_t len, const coord_job_defaults *d, ltri_error *err) {
    memset(job, 0, sizeof(*job));
    job->max_new_tokens = d->max_new_tokens;
    job->sampling.top_p = 1.0f;
    job->attn = d->attn;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return ltri_fail(err, "job: not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = ltri_fail(err, "job: the document must be a JSON object, got %s", type_name(root));
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if ((rc = parse_field(job, key, v, d, err)) != 0) break;
        }
    }
    if (rc == 0 && !!job->prompt + !!job->prompt_file != 1)
        rc = ltri_fail(err, "job: give exactly one of 'prompt' and 'prompt_file'");
    if (rc == 0) {
        size_t bytes = (job->prompt ? strlen(job->prompt) : 0) + (job->question ? strlen(job->question) : 0);
        if (bytes > d->max_prompt_bytes)
            rc = ltri_fail(err, "job: prompt and question are %zu bytes; the service takes at most %zu", bytes,
                           d->max_prompt_bytes);
    }
    json_decref(root);
    if (rc) coord_job_free(job);
    return rc;
}

void coord_job_free(coord_job *job) {
    free(job->prompt);
    free(job->prompt_file);
    free(job->question);
    for (int i = 0; i < job->n_stop; i++) free(job->stop[i]);
    memset(job, 0, sizeof(*job));
}

/* Reads a prompt file of at most max bytes into a NUL-terminated buffer. */
static char *read_prompt_file(const char *path, size_t max, size_t *len, ltri_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ltri_fail(err, "job: 'prompt_file': cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        ltri_fail(err, "job: 'prompt_file': '%s' is not a regular file", path);
        return NULL;
    }
    if ((unsigned long long)st.st_size > max) {
        fclose(f);
        ltri_fail(err, "job: 'prompt_file': '%s' is %lld bytes; the service takes at most %zu", path,
                  (long long)st.st_size, max);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        ltri_fail(err, "job: 'prompt_file': cannot read '%s'", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int coord_job_tokenize(const coord_job *job, const ltri_model *m, const coord_job_defaults *d, int max_context,
                       int32_t **ids, int *n_ids, ltri_error *err) {
    *ids = NULL;
    *n_ids = 0;
    size_t plen = 0, qlen = job->question ? strlen(job->question) : 0;
    char *file_text = NULL;
    const char *prompt = job->prompt;
    if (job->prompt_file) {
        if (!(prompt = file_text = read_prompt_file(job->prompt_file, d->max_prompt_bytes, &plen, err))) return -1;
    } else {
        plen = strlen(prompt);
    }
    if (plen + qlen > d->max_prompt_bytes) {
        free(file_text);
        return ltri_fail(err, "job: prompt and question are %zu bytes; the service takes at most %zu", plen + qlen,
                         d->max_prompt_bytes);
    }
    char *text = malloc(plen + qlen + 1);
    if (!text) {
        free(file_text);
        return ltri_fail(err, "job: out of memory for a prompt of %zu bytes", plen + qlen);
    }
    memcpy(text, prompt, plen);
    if (qlen) memcpy(text + plen, job->question, qlen);
    text[plen + qlen] = '\0';
    free(file_text);
    int rc = tokenizer_encode(m->tokenizer, text, plen + qlen, !job->no_bos, ids, n_ids, err);
    free(text);
    if (rc) return ltri_fail_prefix(err, "job: ");
    /* the last generated token is never fed back, hence the - 1 */
    long need = (long)*n_ids + (job->max_new_tokens > 0 ? job->max_new_tokens - 1 : 0);
    if (*n_ids == 0) rc = ltri_fail(err, "job: the prompt is empty (0 tokens)");
    else if (need > max_context)
        rc = ltri_fail(err, "job: prompt of %d tokens + %d new tokens exceeds the context limit of %d tokens",
                       *n_ids, job->max_new_tokens, max_context);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
    }
    return rc;
}

int coord_job_stop_ids(const coord_job *job, const ltri_model *m, int32_t *out, int max, int *n, ltri_error *err) {
    *n = 0;
    if (!job->ignore_eos)
        for (int i = 0; i < m->cfg.n_eos && *n < max; i++) out[(*n)++] = m->cfg.eos_token_ids[i];
    for (int i = 0; i < job->n_stop; i++) {
        /* a JSON number is an id; a string is a token's text, else an id in digits (as --stop-token) */
        int32_t id = job->stop_is_id[i] ? -1 : tokenizer_token_id(m->tokenizer, job->stop[i]);
        if (id < 0) {
            char *end = NULL;
            long v = strtol(job->stop[i], &end, 10);
            if (!*end && v >= 0 && v < m->cfg.vocab_size) id = (int32_t)v;
        }
        if (id < 0)
            return ltri_fail(err, "job: 'stop' entry '%s' is not a token of this model's tokenizer", job->stop[i]);
        if (*n == max) return ltri_fail(err, "job: too many stop tokens (at most %d with the model's EOS)", max);
        out[(*n)++] = id;
    }
    return 0;
}
