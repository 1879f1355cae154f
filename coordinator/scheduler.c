/* Rank 0's scheduler: jobs into sequences, engine steps, sampling, answers.
 *
 * Continuous batching at decode steps: a step is one prefill chunk of one job
 * still prefilling (round robin), then one decode step over every job
 * already decoding. A new job thus joins the running batch after its
 * prefill, and the jobs decoding wait at most one chunk for it. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/timer.h"
#include "coordinator/service_internal.h"

void coord_task_free(coord_task *t) {
    coord_entry_free(&t->entry);
    coord_job_free(&t->job);
    free(t->ids);
    memset(t, 0, sizeof(*t));
}

static coord_answer *new_answer(coord_service *s, coord_entry *e) {
    if (s->n_answers == s->cap_answers) {
        int cap = s->cap_answers ? 2 * s->cap_answers : 16;
        coord_answer *a = realloc(s->answers, sizeof(*a) * (size_t)cap);
        if (!a) ltri_fatal("out of memory for answers");
        s->answers = a;
        s->cap_answers = cap;
    }
    coord_answer *a = &s->answers[s->n_answers++];
    memset(a, 0, sizeof(*a));
    a->entry = *e;
    memset(e, 0, sizeof(*e));
    return a;
}

static char *dup_or_die(const char *s) {
    char *d = strdup(s ? s : "");
    if (!d) ltri_fatal("out of memory");
    return d;
}

void sched_answer_failed(coord_service *s, coord_entry *e, int attempts, int dead, const char *error) {
    LOG_WARN("job %s failed: %s", e->job_id, error);
    coord_answer *a = new_answer(s, e);
    a->failed = 1;
    a->dead = dead;
    a->attempts = attempts;
    a->error = dup_or_die(error);
    a->tokens_json = dup_or_die("[]");
    a->metrics_json = dup_or_die("{}");
    s->jobs_failed++;
    service_flush_answers(s);
}

/* Milliseconds since the entry was added: its id is "<unix ms>-<seq>". */
static double queued_ms(const char *entry_id) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
    double added = strtod(entry_id, NULL);
    return added > 0 && now > added ? now - added : 0.0;
}

void sched_prepare(coord_service *s, coord_entry *e, int attempt) {
    ltri_error err = {{0}};
    coord_task t = {0};
    t.attempt = attempt;
    t.t_taken = ltri_now_sec();
    t.queue_ms = queued_ms(e->entry_id);
    int rc = 0;
    if (e->bad_id[0]) rc = ltri_fail(&err, "job: %s", e->bad_id);
    else if (!e->job_json)
        rc = ltri_fail(&err, "the stream entry has no 'job' field (XADD %s * id ID job '{\"prompt\": ...}')",
                       s->queue.stream);
    else if (coord_job_parse(&t.job, e->job_json, e->job_len, &s->defaults, &err) ||
             coord_job_tokenize(&t.job, &s->model, &s->defaults, s->max_context, &t.ids, &t.n_prompt, &err) ||
             coord_job_stop_ids(&t.job, &s->model, t.stop_ids, GENERATE_MAX_STOP, &t.n_stop, &err))
        rc = -1;
    if (rc) {
        coord_job_free(&t.job);
        free(t.ids);
        sched_answer_failed(s, e, attempt, 0, err.msg);
        return;
    }
    t.entry = *e;
    memset(e, 0, sizeof(*e));
    s->backlog[s->n_backlog++] = t;
}

int sched_active(const coord_service *s) {
    int n = 0;
    for (int i = 0; i < s->opt->max_batch; i++) n += s->slots[i].used;
    return n;
}

static long task_tokens(const coord_task *t) { return (long)t->n_prompt + t->job.max_new_tokens; }

void sched_admit(coord_service *s) {
    while (s->n_backlog > 0) {
        long in_flight = 0;
        int free_slot = -1, active = 0;
        for (int i = 0; i < s->opt->max_batch; i++) {
            if (s->slots[i].used) in_flight += task_tokens(&s->slots[i].task), active++;
            else if (free_slot < 0) free_slot = i;
        }
        coord_task *t = &s->backlog[0];
        /* a job larger than the budget runs alone rather than never */
        long budget = s->opt->max_tokens_in_flight;
        if (free_slot < 0 || (active > 0 && budget > 0 && in_flight + task_tokens(t) > budget)) return;
        coord_slot *sl = &s->slots[free_slot];
        memset(sl, 0, sizeof(*sl));
        ltri_error err = {{0}};
        int cap = t->job.max_new_tokens > 0 ? t->job.max_new_tokens : 1;
        sl->task = *t;
        s->n_backlog--;
        memmove(s->backlog, s->backlog + 1, sizeof(*t) * (size_t)s->n_backlog);
        if (!(sl->out = malloc(sizeof(int32_t) * (size_t)cap)) ||
            sampler_init(&sl->sampler, &sl->task.job.sampling, s->model.cfg.vocab_size, &err)) {
            if (!err.msg[0]) ltri_fail(&err, "out of memory for %d output tokens", cap);
            free(sl->out);
            sl->out = NULL;
            sched_answer_failed(s, &sl->task.entry, sl->task.attempt, 0, err.msg);
            coord_task_free(&sl->task);
            continue;
        }
        sl->used = 1;
        LOG_INFO("job %s: %d prompt tokens, up to %d new, sequence %d (attempt %d)", sl->task.entry.job_id,
                 sl->task.n_prompt, sl->task.job.max_new_tokens, free_slot, sl->task.attempt);
    }
}

void sched_release(coord_service *s, int i) {
    coord_slot *sl = &s->slots[i];
    if (!sl->used) return;
    sampler_free(&sl->sampler);
    free(sl->out);
    free(sl->text);
    coord_task_free(&sl->task);
    memset(sl, 0, sizeof(*sl));
}

/* ------------------------------------------------------------ answers */

static char *metrics_json(coord_service *s, int i) {
    coord_slot *sl = &s->slots[i];
    sparse_stats st;
    int sparse = s->engine.seqs[i].sparse != NULL;
    if (sparse) { /* every rank takes part: the keys each read are summed */
        coord_step step = {.kind = COORD_STEP_STATS, .seq = i};
        coord_step_send(s->comm, &step, NULL);
        coord_step_stats(&s->engine, s->comm, i, &st);
    }
    long keys = sparse ? st.keys_read : sl->full_keys;
    double prefill_s = sl->t_prefill1 - sl->t_prefill0;
    json_t *j = json_object();
    json_object_set_new(j, "prompt_tokens", json_integer(sl->task.n_prompt));
    json_object_set_new(j, "generated_tokens", json_integer(sl->n_out));
    json_object_set_new(j, "stop", json_string(sl->stopped_on_token ? "stop_token" : "length"));
    json_object_set_new(j, "queue_ms", json_real(sl->task.queue_ms));
    json_object_set_new(j, "prefill_seconds", json_real(prefill_s));
    json_object_set_new(j, "prefill_tok_per_s", json_real(prefill_s > 0 ? sl->task.n_prompt / prefill_s : 0.0));
    json_object_set_new(j, "ttft_ms", json_real(sl->n_out ? 1e3 * (sl->t_first - sl->task.t_taken) : 0.0));
    json_object_set_new(j, "ms_per_output_token",
                        json_real(sl->n_out > 1 ? 1e3 * (sl->t_last - sl->t_first) / (sl->n_out - 1) : 0.0));
    json_object_set_new(j, "total_ms", json_real(1e3 * (ltri_now_sec() - sl->task.t_taken)));
    json_object_set_new(j, "attn", json_string(s->attn_desc));
    json_object_set_new(j, "backend", json_string(s->be->name));
    json_object_set_new(j, "ranks", json_integer(s->comm->size));
    json_object_set_new(j, "largest_batch", json_integer(sl->largest_batch));
    json_object_set_new(j, "attempt", json_integer(sl->task.attempt));
    if (sparse) {
        json_object_set_new(j, "spans_created", json_integer(st.spans_created));
        json_object_set_new(j, "spans_retrieved", json_integer(st.spans_retrieved));
        json_object_set_new(j, "spans_retrieved_per_call",
                            json_real(st.calls ? (double)st.spans_retrieved / st.calls : 0.0));
        json_object_set_new(j, "kv_read_fraction", json_real(sparse_read_fraction(&st, 0)));
    } else {
        json_object_set_new(j, "spans_created", json_integer(0));
        json_object_set_new(j, "spans_retrieved", json_integer(0));
        json_object_set_new(j, "kv_read_fraction", json_real(1.0));
    }
    /* K and V of every key read, per layer (the statistics count layers) */
    double key_bytes = 2.0 * s->engine.kv_width * (double)ltri_dtype_size(s->be->kv_dtype);
    json_object_set_new(j, "kv_bytes_read", json_real((double)keys * key_bytes));
    char *text = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(j);
    if (!text) ltri_fatal("out of memory for metrics");
    return text;
}

static char *tokens_json(const coord_slot *sl) {
    json_t *a = json_array();
    for (int k = 0; k < sl->n_out; k++) json_array_append_new(a, json_integer(sl->out[k]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (!text) ltri_fatal("out of memory for tokens");
    return text;
}

/* The job is done: its answer is queued, its sequence freed. */
static void finish(coord_service *s, int i) {
    coord_slot *sl = &s->slots[i];
    coord_answer *a = new_answer(s, &sl->task.entry);
    a->attempts = sl->task.attempt;
    a->metrics_json = metrics_json(s, i);
    a->tokens_json = tokens_json(sl);
    a->output = sl->text ? sl->text : dup_or_die("");
    a->output_len = sl->text_len;
    sl->text = NULL;
    s->jobs_done++;
    LOG_INFO("job %s done: %d tokens; %s", a->entry.job_id, sl->n_out, a->metrics_json);
    sched_release(s, i);
    service_flush_answers(s);
}

static void fail_running(coord_service *s, int i, const char *error) {
    coord_slot *sl = &s->slots[i];
    sched_answer_failed(s, &sl->task.entry, sl->task.attempt, 0, error);
    sched_release(s, i);
}

/* ------------------------------------------------------------ tokens */

static void append_text(coord_slot *sl, const char *bytes, int len) {
    if (sl->text_len + (size_t)len + 1 > sl->text_cap) {
        size_t cap = sl->text_cap ? sl->text_cap : 256;
        while (cap < sl->text_len + (size_t)len + 1) cap *= 2;
        char *t = realloc(sl->text, cap);
        if (!t) ltri_fatal("out of memory for a job's output");
        sl->text = t;
        sl->text_cap = cap;
    }
    memcpy(sl->text + sl->text_len, bytes, (size_t)len);
    sl->text_len += (size_t)len;
    sl->text[sl->text_len] = '\0';
}

/* Samples the job's next token from its logits row, streams it, and ends
 * the job on a stop token or at max_new_tokens. */
static void take_token(coord_service *s, int i, const float *logits) {
    coord_slot *sl = &s->slots[i];
    int32_t id = sampler_sample(&sl->sampler, logits);
    double now = ltri_now_sec();
    if (sl->n_out == 0) sl->t_first = now;
    sl->t_last = now;
    sl->out[sl->n_out++] = id;
    int len = 0;
    const char *bytes = NULL;
    if (!tokenizer_is_special(s->model.tokenizer, id)) bytes = tokenizer_token_bytes(s->model.tokenizer, id, &len);
    if (bytes && len > 0) append_text(sl, bytes, len);
    coord_queue_token(&s->queue, sl->task.entry.job_id, id, bytes, bytes ? len : 0);
    for (int k = 0; k < sl->task.n_stop; k++)
        if (sl->task.stop_ids[k] == id) sl->stopped_on_token = 1;
    if (sl->stopped_on_token || sl->n_out >= sl->task.job.max_new_tokens) {
        finish(s, i);
        return;
    }
    sl->last = id;
    sl->decoding = 1;
}

/* ------------------------------------------------------------ steps */

static void prefill_chunk(coord_service *s) {
    int n = s->opt->max_batch, i = -1;
    for (int k = 1; k <= n && i < 0; k++) {
        int j = (s->prefill_cursor + k) % n;
        if (s->slots[j].used && !s->slots[j].decoding) i = j;
    }
    if (i < 0) return;
    s->prefill_cursor = i;
    coord_slot *sl = &s->slots[i];
    int done = sl->n_prefilled, total = sl->task.n_prompt;
    int m = total - done < s->engine.opt.chunk_size ? total - done : s->engine.opt.chunk_size;
    int last = done + m == total;
    if (done == 0) sl->t_prefill0 = ltri_now_sec();
    coord_step step = {.kind = COORD_STEP_PREFILL, .seq = i, .n = m, .reset = done == 0};
    const int32_t *ids = sl->task.ids + done;
    coord_step_send(s->comm, &step, ids);
    ltri_error err = {{0}};
    if (coord_step_run(&s->engine, s->comm, &step, ids, last ? s->logits : NULL, &err)) {
        fail_running(s, i, err.msg);
        return;
    }
    sl->n_prefilled += m;
    sl->full_keys += (long)(done + m) * s->model.cfg.n_layers;
    if (!last) {
        coord_queue_progress(&s->queue, sl->task.entry.job_id, sl->n_prefilled, total);
        return;
    }
    sl->t_prefill1 = ltri_now_sec();
    coord_queue_progress(&s->queue, sl->task.entry.job_id, total, total);
    if (sl->task.job.max_new_tokens == 0) finish(s, i);
    else take_token(s, i, s->logits);
}

static void decode_step(coord_service *s) {
    int n = 0, B = s->opt->max_batch;
    int32_t *seqs = s->payload, *tokens = s->payload + B;
    for (int i = 0; i < B; i++)
        if (s->slots[i].used && s->slots[i].decoding) seqs[n++] = i;
    if (n == 0) return;
    for (int k = 0; k < n; k++) tokens[k] = s->slots[seqs[k]].last;
    /* the payload is seqs[n] then tokens[n]: close the gap */
    memmove(seqs + n, tokens, sizeof(int32_t) * (size_t)n);
    coord_step step = {.kind = COORD_STEP_DECODE, .n = n};
    coord_step_send(s->comm, &step, s->payload);
    ltri_error err = {{0}};
    int rc = coord_step_run(&s->engine, s->comm, &step, s->payload, s->logits, &err);
    int order[B];
    memcpy(order, seqs, sizeof(int) * (size_t)n);
    for (int k = 0; k < n; k++) {
        coord_slot *sl = &s->slots[order[k]];
        if (rc) {
            fail_running(s, order[k], err.msg);
            continue;
        }
        sl->full_keys += (long)(sl->task.n_prompt + sl->n_out) * s->model.cfg.n_layers;
        if (n > sl->largest_batch) sl->largest_batch = n;
        take_token(s, order[k], s->logits + (size_t)k * s->model.cfg.vocab_size);
    }
}

void sched_step(coord_service *s) {
    prefill_chunk(s);
    decode_step(s);
    coord_queue_send(&s->queue); /* the step's tokens leave now; their replies are read later */
}
