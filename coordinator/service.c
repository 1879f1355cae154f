/* The job service's set-up, rank 0's loop (Redis intake, answers, health,
 * shutdown) and the other ranks' loop. Scheduling is in scheduler.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timer.h"
#include "coordinator/service_internal.h"

/* The one piece of process-wide state: a signal handler can only reach a
 * flag. SIGTERM/SIGINT ask rank 0 for a graceful shutdown; on the other ranks
 * the flag is ignored (they stop when rank 0 says so). */
static volatile sig_atomic_t g_stop_requests = 0;

static void on_stop_signal(int sig) {
    (void)sig;
    g_stop_requests++;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* a write to a Redis that went away must be an error, not the end */
    signal(SIGPIPE, SIG_IGN);
}

static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------ answers */

void service_flush_answers(coord_service *s) {
    int kept = 0;
    for (int i = 0; i < s->n_answers; i++) {
        coord_answer *a = &s->answers[i];
        int rc = -1;
        ltri_error err = {{0}};
        if (coord_queue_is_connected(&s->queue)) {
            coord_result r = {.job_id = a->entry.job_id,
                              .entry_id = a->entry.entry_id,
                              .failed = a->failed,
                              .error = a->error,
                              .output = a->output,
                              .output_len = a->output_len,
                              .tokens_json = a->tokens_json,
                              .metrics_json = a->metrics_json,
                              .dead = a->dead,
                              .attempts = a->attempts,
                              .job_json = a->entry.job_json,
                              .job_len = a->entry.job_len};
            rc = coord_queue_finish(&s->queue, &r, &err);
            if (rc == 0) {
                LOG_WARN("job %s: another coordinator took it over; this answer is dropped", a->entry.job_id);
            } else if (rc < 0 && coord_queue_is_connected(&s->queue)) {
                /* Redis refused the write itself (the job's key holds another type?): retrying
                 * cannot help, so the entry goes to the dead letters with the reason */
                LOG_ERROR("job %s: cannot store the answer: %s", a->entry.job_id, err.msg);
                ltri_error err2 = {{0}};
                if (coord_queue_reject(&s->queue, &a->entry, err.msg, &err2) == 0) rc = 1;
                else LOG_WARN("job %s: %s", a->entry.job_id, err2.msg);
            } else if (rc < 0) {
                LOG_WARN("job %s: answer kept until Redis is back: %s", a->entry.job_id, err.msg);
            }
        }
        if (rc < 0) { /* keep it for the next try */
            s->answers[kept++] = *a;
            continue;
        }
        coord_entry_free(&a->entry);
        free(a->error);
        free(a->output);
        free(a->tokens_json);
        free(a->metrics_json);
    }
    s->n_answers = kept;
}

static void free_answers(coord_service *s) {
    for (int i = 0; i < s->n_answers; i++) {
        coord_answer *a = &s->answers[i];
        coord_entry_free(&a->entry);
        free(a->error);
        free(a->output);
        free(a->tokens_json);
        free(a->metrics_json);
    }
    free(s->answers);
    s->answers = NULL;
    s->n_answers = s->cap_answers = 0;
}

/* ------------------------------------------------------------ intake */

/* An entry this coordinator already holds (running, waiting or answered but
 * not yet stored): after a reconnect it is read again from the pending list. */
static int holds_entry(const coord_service *s, const char *entry_id) {
    for (int i = 0; i < s->opt->max_batch; i++)
        if (s->slots[i].used && !strcmp(s->slots[i].task.entry.entry_id, entry_id)) return 1;
    for (int i = 0; i < s->n_backlog; i++)
        if (!strcmp(s->backlog[i].entry.entry_id, entry_id)) return 1;
    for (int i = 0; i < s->n_answers; i++)
        if (!strcmp(s->answers[i].entry.entry_id, entry_id)) return 1;
    return 0;
}

static void intake(coord_service *s, int claim, int block_ms) {
    int room = s->opt->max_batch - s->n_backlog;
    if (room <= 0) return;
    coord_entry entries[room];
    int n = 0;
    ltri_error err = {{0}};
    if (coord_queue_read(&s->queue, claim, block_ms, entries, room, &n, &err)) {
        LOG_WARN("reading jobs: %s", err.msg);
        return;
    }
    for (int i = 0; i < n; i++) {
        coord_entry *e = &entries[i];
        if (holds_entry(s, e->entry_id)) {
            coord_entry_free(e);
            continue;
        }
        int attempt = 0;
        char last_error[512];
        coord_begin what;
        if (coord_queue_begin(&s->queue, e, &attempt, last_error, sizeof(last_error), &what, &err)) {
            LOG_WARN("job %s: %s", e->job_id, err.msg);
            ltri_error err2 = {{0}};
            /* connection lost: the entry stays pending for us and is read again; an error
             * reply (the job's key holds another type?) would come back forever */
            if (coord_queue_is_connected(&s->queue) && coord_queue_reject(&s->queue, e, err.msg, &err2))
                LOG_WARN("job %s: %s", e->job_id, err2.msg);
            coord_entry_free(e);
            continue;
        }
        if (what == COORD_BEGIN_RUN) sched_prepare(s, e, attempt);
        else if (what == COORD_BEGIN_DEAD) sched_answer_failed(s, e, attempt, 1, last_error);
        else LOG_INFO("job %s was answered already; entry %s acknowledged", e->job_id, e->entry_id);
        coord_entry_free(e);
    }
}

/* ------------------------------------------------------------ housekeeping */

static void touch_running(coord_service *s) {
    int B = s->opt->max_batch, n = 0;
    const char *ids[2 * B];
    int slot_of[2 * B], lost[2 * B];
    for (int i = 0; i < B; i++)
        if (s->slots[i].used) slot_of[n] = i, ids[n++] = s->slots[i].task.entry.entry_id;
    for (int i = 0; i < s->n_backlog; i++) slot_of[n] = -1 - i, ids[n++] = s->backlog[i].entry.entry_id;
    ltri_error err = {{0}};
    if (coord_queue_touch(&s->queue, ids, n, lost, &err)) {
        LOG_WARN("touching running jobs: %s", err.msg);
        return;
    }
    for (int k = n - 1; k >= 0; k--) { /* backwards: backlog removals keep earlier indices */
        if (!lost[k]) continue;
        LOG_WARN("entry %s was claimed by another coordinator; dropping it here", ids[k]);
        if (slot_of[k] >= 0) {
            sched_release(s, slot_of[k]);
        } else {
            int b = -1 - slot_of[k];
            coord_task_free(&s->backlog[b]);
            memmove(s->backlog + b, s->backlog + b + 1, sizeof(coord_task) * (size_t)(s->n_backlog - b - 1));
            s->n_backlog--;
        }
    }
}

static void write_health(coord_service *s, int ttl_s) {
    char ranks[16], done[24], failed[24], running[16], waiting[16], batch[16];
    snprintf(ranks, sizeof(ranks), "%d", s->comm->size);
    snprintf(done, sizeof(done), "%ld", s->jobs_done);
    snprintf(failed, sizeof(failed), "%ld", s->jobs_failed);
    snprintf(running, sizeof(running), "%d", sched_active(s));
    snprintf(waiting, sizeof(waiting), "%d", s->n_backlog);
    snprintf(batch, sizeof(batch), "%d", s->opt->max_batch);
    const char *fields[] = {"model", s->opt->model_dir, "ranks", ranks, "backend", s->be->name,
                            "attn", s->attn_desc, "jobs_done", done, "jobs_failed", failed,
                            "running", running, "waiting", waiting, "max_batch", batch};
    ltri_error err = {{0}};
    if (coord_queue_health(&s->queue, fields, (int)(sizeof(fields) / sizeof(fields[0]) / 2), ttl_s, &err))
        LOG_WARN("health: %s", err.msg);
}

/* Shutdown: waiting and running jobs go back to the stream. Without Redis
 * they stay pending for this consumer and are claimed by the next one. */
static void requeue_all(coord_service *s) {
    int left = 0;
    for (int i = 0; i < s->opt->max_batch + s->n_backlog; i++) {
        coord_entry *e;
        if (i < s->opt->max_batch) {
            if (!s->slots[i].used) continue;
            e = &s->slots[i].task.entry;
        } else {
            e = &s->backlog[i - s->opt->max_batch].entry;
        }
        ltri_error err = {{0}};
        int rc = coord_queue_is_connected(&s->queue) ? coord_queue_requeue(&s->queue, e, &err) : -1;
        if (rc > 0) LOG_INFO("job %s requeued", e->job_id);
        else if (rc < 0) left++;
    }
    service_flush_answers(s);
    left += s->n_answers;
    ltri_error err = {{0}};
    if (left)
        LOG_WARN("%d job(s) stay pending in Redis; the next coordinator takes them after --claim-idle-ms", left);
    else if (coord_queue_is_connected(&s->queue) && coord_queue_leave(&s->queue, &err) < 0)
        LOG_WARN("leaving the consumer group: %s", err.msg);
    for (int i = 0; i < s->opt->max_batch; i++) sched_release(s, i);
    for (int i = 0; i < s->n_backlog; i++) coord_task_free(&s->backlog[i]);
    s->n_backlog = 0;
}

/* ------------------------------------------------------------ loops */

static int rank0_loop(coord_service *s) {
    const coord_service_options *o = s->opt;
    double claim_every = o->queue.claim_idle_ms / 2000.0, touch_every = o->queue.claim_idle_ms / 3000.0;
    if (claim_every < 0.1) claim_every = 0.1;
    if (touch_every < 0.1) touch_every = 0.1;
    double next_claim = 0, next_touch = 0, next_health = 0, next_poll = 0, next_sync = 0, drain_until = 0;
    int draining = 0, exit_code = 0, seen_stops = 0;
    for (;;) {
        double now = ltri_now_sec();
        if (g_stop_requests != seen_stops) {
            seen_stops = g_stop_requests;
            /* a second signal: stop now */
            drain_until = draining ? now : now + o->drain_s;
            if (!draining)
                LOG_INFO("shutting down: %d job(s) running%s", sched_active(s),
                         o->drain_s > 0 ? ", finishing them first" : "");
            draining = 1;
        }
        ltri_error err = {{0}};
        int conn = coord_queue_connect(&s->queue, now, &err);
        if (conn < 0) {
            LOG_ERROR("%s", err.msg);
            exit_code = 1;
            break;
        }
        if (conn) {
            /* the replies of the tokens streamed since the last time */
            if (now >= next_sync) coord_queue_sync(&s->queue), next_sync = now + 0.02;
            service_flush_answers(s);
            if (now >= next_health) write_health(s, 30), next_health = now + 2.0;
            if (now >= next_touch) touch_running(s), next_touch = now + touch_every;
        }
        if (draining && (!sched_active(s) || now >= drain_until)) break;
        int idle = !sched_active(s) && s->n_backlog == 0;
        if (conn && !draining && (idle || now >= next_poll)) {
            int claim = now >= next_claim;
            if (claim) next_claim = now + claim_every;
            /* idle: wait for a job in Redis; busy: a quick look every 20 ms */
            intake(s, claim, idle ? 500 : 0);
            next_poll = now + 0.02;
        }
        if (!draining) sched_admit(s); /* taken but not started: requeued at the end */
        if (sched_active(s)) sched_step(s);
        else if (!conn || draining) sleep_s(0.05);
    }
    requeue_all(s);
    coord_step stop = {.kind = COORD_STEP_SHUTDOWN, .exit_code = exit_code};
    coord_step_send(s->comm, &stop, NULL);
    LOG_INFO("service stopped: %ld job(s) done, %ld failed", s->jobs_done, s->jobs_failed);
    return exit_code;
}

static int follower_loop(coord_service *s) {
    for (;;) {
        coord_step step;
        coord_step_recv(s->comm, &step, s->payload, s->payload_cap);
        if (step.kind == COORD_STEP_SHUTDOWN) return step.exit_code;
        if (step.kind == COORD_STEP_STATS) {
            sparse_stats st;
            coord_step_stats(&s->engine, s->comm, step.seq, &st);
            continue;
        }
        ltri_error err = {{0}};
        if (coord_step_run(&s->engine, s->comm, &step, s->payload, NULL, &err) && err.msg[0])
            LOG_DEBUG("step failed: %s", err.msg);
    }
}

/* ------------------------------------------------------------ set-up */

/* 0 when every rank succeeded; else 1 on every rank (as worker/main.c). */
static int all_ok(const ltri_comm *comm, int rc) {
    int bad = rc != 0, any = bad;
    if (comm->size > 1) MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, comm->world));
    return any;
}

static int setup_rank0(coord_service *s, ltri_error *err) {
    const coord_service_options *o = s->opt;
    s->defaults = (coord_job_defaults){.max_new_tokens = o->max_new_tokens, .attn = o->attn,
                                       .max_prompt_bytes = o->max_prompt_bytes};
    if (coord_queue_init(&s->queue, &o->queue, err)) return -1;
    int B = o->max_batch;
    s->slots = calloc((size_t)B, sizeof(coord_slot));
    s->backlog = calloc((size_t)B, sizeof(coord_task));
    s->logits = malloc(sizeof(float) * (size_t)B * s->model.cfg.vocab_size);
    if (!s->slots || !s->backlog || !s->logits) return ltri_fail(err, "out of memory for %d sequences", B);
    return 0;
}

int coord_service_run(const coord_service_options *opt, const ltri_comm *comm) {
    coord_service_options o = *opt;
    char consumer[128];
    if (!o.queue.consumer) {
        char host[64] = "host";
        if (gethostname(host, sizeof(host)) != 0) snprintf(host, sizeof(host), "host");
        host[sizeof(host) - 1] = '\0';
        snprintf(consumer, sizeof(consumer), "%s-%d", host, (int)getpid());
        o.queue.consumer = consumer;
    }
    coord_service svc;
    memset(&svc, 0, sizeof(svc));
    coord_service *s = &svc;
    s->opt = &o;
    s->comm = comm;
    int rank0 = comm->rank == 0, rc = 1, opened = 0;
    ltri_error err = {{0}};
    install_signals();

    opened = model_open(&s->model, o.model_dir, 1, &err) == 0;
    if (all_ok(comm, !opened)) goto out;
    s->max_context = o.max_context ? o.max_context : s->model.cfg.max_position_embeddings;
    attn_params_describe(&o.attn, s->attn_desc, sizeof(s->attn_desc));
    int device = o.device >= 0 ? o.device : comm->local_rank;
    if (all_ok(comm, !(s->be = backend_create(o.backend, device, &err)))) goto out;
    if (all_ok(comm, collectives_init(&s->coll, comm, s->be, 0, &err))) goto out;
    engine_options eo = {.max_context = s->max_context, .chunk_size = o.chunk_size, .max_logit_rows = o.max_batch,
                         .attn = o.attn, .coll = &s->coll, .max_seqs = o.max_batch};
    if (all_ok(comm, engine_init(&s->engine, s->be, &s->model, &eo, &err))) goto out;
    s->payload_cap = s->engine.opt.chunk_size > 2 * o.max_batch ? s->engine.opt.chunk_size : 2 * o.max_batch;
    int ok = (s->payload = malloc(sizeof(int32_t) * (size_t)s->payload_cap)) != NULL;
    if (!ok) ltri_fail(&err, "out of memory");
    if (ok && rank0) ok = setup_rank0(s, &err) == 0;
    if (all_ok(comm, !ok)) goto out;
    if (rank0)
        LOG_INFO("serving %s from %s: %d rank(s), backend %s, %s, up to %d jobs together, %d tokens each",
                 o.model_dir, o.queue.url, comm->size, s->be->name, s->attn_desc, o.max_batch, s->max_context);
    rc = rank0 ? rank0_loop(s) : follower_loop(s);
    err.msg[0] = '\0';
out:
    if (err.msg[0]) LOG_ERROR("%s", err.msg);
    if (rank0) {
        free_answers(s);
        coord_queue_free(&s->queue);
        free(s->slots);
        free(s->backlog);
        free(s->logits);
    }
    free(s->payload);
    engine_free(&s->engine);
    collectives_free(&s->coll);
    backend_destroy(s->be);
    if (opened) model_close(&s->model);
    return rc;
}

int coord_service_main(int argc, char **argv) {
    coord_service_options o;
    int prc = coord_service_parse_args(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    ltri_log_init(o.quiet ? LTRI_LOG_WARN : LTRI_LOG_INFO, -1);
    ltri_comm comm;
    comm_init(&comm, &argc, &argv);
    int rc = coord_service_run(&o, &comm);
    comm_finalize(&comm);
    return rc;
}
