#include "index/span_store.h"

#include <stdlib.h>
#include <string.h>

static size_t row_bytes(const span_store *s) { return (size_t)s->width * ltri_dtype_size(s->be->kv_dtype); }

int span_store_init(span_store *s, ltri_backend *be, int width, int staging_rows, int page_size, int page_capacity,
                    int device_pages, ltri_error *err) {
    memset(s, 0, sizeof(*s));
    s->be = be;
    s->width = width;
    s->staging_rows = staging_rows;
    s->page_size = page_size;
    s->n_pages = page_capacity;
    s->tiered = device_pages > 0 && device_pages < page_capacity;
    s->device_slots = s->tiered ? device_pages : page_capacity;
    size_t rows = (size_t)staging_rows + (size_t)s->device_slots * page_size;
    size_t bytes = rows * row_bytes(s), host_bytes = (size_t)page_capacity * page_size * row_bytes(s);
    s->logical_capacity = page_capacity > 0 ? page_capacity : 1;
    if (!(s->k = be->alloc(be, bytes, err)) || !(s->v = be->alloc(be, bytes, err))) goto fail;
    if (!s->tiered &&
        !(s->page_table_dev = be->alloc(be, sizeof(int32_t) * (size_t)s->logical_capacity, err)))
        goto fail;
    if (s->tiered && (!(s->host_k = be->alloc_host(be, host_bytes, err)) ||
                      !(s->host_v = be->alloc_host(be, host_bytes, err))))
        goto fail;
    s->free_pages = malloc(sizeof(int32_t) * (size_t)s->logical_capacity);
    s->page_table = malloc(sizeof(int32_t) * (size_t)s->logical_capacity);
    if (s->tiered) {
        s->slot_of = malloc(sizeof(int32_t) * (size_t)page_capacity);
        s->page_in_slot = malloc(sizeof(int32_t) * (size_t)device_pages);
        s->slot_used = malloc(sizeof(uint64_t) * (size_t)device_pages);
    }
    if (!s->free_pages || !s->page_table || (s->tiered && (!s->slot_of || !s->page_in_slot || !s->slot_used))) {
        ltri_fail(err, "out of host memory");
        goto fail;
    }
    span_store_reset(s);
    return 0;
fail:
    span_store_free(s);
    return ltri_fail_prefix(err, "span store of %zu device rows x %d%s: ", rows, width, s->tiered ? " + host tier" : "");
}

void span_store_reset(span_store *s) {
    /* Pages are handed out lowest first, so a fresh sequence lays spans out in order. */
    s->n_free = s->n_pages;
    for (int i = 0; i < s->n_pages; i++) s->free_pages[i] = s->n_pages - 1 - i;
    s->n_logical_pages = 0;
    s->n_pages_synced = 0;
    s->n_rows = 0;
    if (s->tiered) {
        for (int i = 0; i < s->n_pages; i++) s->slot_of[i] = -1;
        for (int i = 0; i < s->device_slots; i++) s->page_in_slot[i] = -1, s->slot_used[i] = 0;
    }
    s->call = 1;
    s->fetch_hits = s->fetch_misses = 0;
}

/* Host code is about to write into the host tier: wait for queued fetches
 * that read it. (Device-to-host copies into the tier need no wait: the stream
 * orders them after the fetches.) */
static void wait_fetches(span_store *s) {
    if (!s->fetch_in_flight) return;
    s->be->synchronize(s->be);
    s->fetch_in_flight = 0;
}

void span_store_free(span_store *s) {
    if (s->be) {
        wait_fetches(s); /* before host_k/v go */
        if (s->k) s->be->free(s->be, s->k);
        if (s->v) s->be->free(s->be, s->v);
        if (s->page_table_dev) s->be->free(s->be, s->page_table_dev);
        if (s->host_k) s->be->free_host(s->be, s->host_k);
        if (s->host_v) s->be->free_host(s->be, s->host_v);
    }
    free(s->free_pages);
    free(s->page_table);
    free(s->slot_of);
    free(s->page_in_slot);
    free(s->slot_used);
    memset(s, 0, sizeof(*s));
}

void span_store_stage(span_store *s, const float *k, const float *v, int first_pos, int n_tokens) {
    s->be->kv_store(s->be, s->k, s->v, k, v, first_pos, n_tokens, s->width, s->staging_rows);
}

/* Maps pages for len more logical rows; -1 (err) when the pool is full. */
static int reserve_rows(span_store *s, int len, ltri_error *err) {
    int need_pages = (s->n_rows + len + s->page_size - 1) / s->page_size;
    if (need_pages - s->n_logical_pages > s->n_free)
        return ltri_fail(err, "span store full: %d pages of %d rows in use (raise the store's capacity)",
                         s->n_pages - s->n_free, s->page_size);
    while (s->n_logical_pages < need_pages) s->page_table[s->n_logical_pages++] = s->free_pages[--s->n_free];
    return 0;
}

/* How many of `remaining` logical rows from r are contiguous in a page. */
static int page_run(const span_store *s, int r, int remaining) {
    int left = s->page_size - r % s->page_size;
    return remaining < left ? remaining : left;
}

/* Where logical row r lives on the host tier. */
static size_t host_offset(const span_store *s, int r) {
    return ((size_t)s->page_table[r / s->page_size] * s->page_size + r % s->page_size) * row_bytes(s);
}

/* A page written on the host tier: a device copy of it is stale now. */
static void invalidate(span_store *s, int r) {
    int32_t page = s->page_table[r / s->page_size];
    int slot = s->slot_of[page];
    if (slot >= 0) s->page_in_slot[slot] = -1, s->slot_of[page] = -1;
}

int span_store_fetch(span_store *s, int first, int len, ltri_error *err) {
    if (!s->tiered) return 0;
    size_t page_bytes = (size_t)s->page_size * row_bytes(s);
    for (int lp = first / s->page_size; lp <= (first + len - 1) / s->page_size; lp++) {
        int32_t page = s->page_table[lp];
        int slot = s->slot_of[page];
        if (slot >= 0) {
            s->fetch_hits++;
            s->slot_used[slot] = s->call;
            continue;
        }
        /* a free slot, else the least recently used one that this call has not touched */
        int victim = -1;
        for (int i = 0; i < s->device_slots; i++) {
            if (s->page_in_slot[i] < 0) {
                victim = i;
                break;
            }
            if (s->slot_used[i] < s->call && (victim < 0 || s->slot_used[i] < s->slot_used[victim])) victim = i;
        }
        if (victim < 0)
            return ltri_fail(err, "span store: the device tier of %d pages cannot hold one call's spans (raise "
                                  "--device-pages)",
                             s->device_slots);
        if (s->page_in_slot[victim] >= 0) s->slot_of[s->page_in_slot[victim]] = -1;
        size_t dst = ((size_t)s->staging_rows + (size_t)victim * s->page_size) * row_bytes(s);
        /* Queued on the stream without waiting: the call's gather, later on the
         * same stream, reads the page after it lands, and the host goes on
         * meanwhile (one wait per page pair cost ~30 ms a step at 512K). The
         * pinned source stays put until wait_fetches() (appends into the tier). */
        s->be->copy_to_async(s->be, (char *)s->k + dst, (const char *)s->host_k + (size_t)page * page_bytes,
                             page_bytes);
        s->be->copy_to_async(s->be, (char *)s->v + dst, (const char *)s->host_v + (size_t)page * page_bytes,
                             page_bytes);
        s->fetch_in_flight = 1;
        s->page_in_slot[victim] = page;
        s->slot_of[page] = victim;
        s->slot_used[victim] = s->call;
        s->fetch_misses++;
    }
    return 0;
}

int span_store_append_rows(span_store *s, const void *k, const void *v, ltri_dtype dtype, int len, ltri_error *err) {
    if (reserve_rows(s, len, err)) return -1;
    int first = s->n_rows;
    size_t row = row_bytes(s), src_row = (size_t)s->width * ltri_dtype_size(dtype);
    s->n_rows += len;
    if (s->tiered) { /* into the host tier; fetched when a call needs them */
        wait_fetches(s); /* the last page may be in flight to the device */
        for (int done = 0, run; done < len; done += run) {
            run = page_run(s, first + done, len - done);
            invalidate(s, first + done);
            ltri_convert((char *)s->host_k + host_offset(s, first + done), s->be->kv_dtype,
                         (const char *)k + done * src_row, dtype, (size_t)run * s->width);
            ltri_convert((char *)s->host_v + host_offset(s, first + done), s->be->kv_dtype,
                         (const char *)v + done * src_row, dtype, (size_t)run * s->width);
        }
        return first;
    }
    for (int done = 0, run; done < len; done += run) {
        run = page_run(s, first + done, len - done);
        size_t dst = (size_t)span_store_row(s, first + done) * row;
        backend_upload_convert(s->be, (char *)s->k + dst, s->be->kv_dtype, (const char *)k + done * src_row, dtype,
                               (size_t)run * s->width);
        backend_upload_convert(s->be, (char *)s->v + dst, s->be->kv_dtype, (const char *)v + done * src_row, dtype,
                               (size_t)run * s->width);
    }
    return first;
}

void span_store_read(const span_store *s, int first, int len, void *k_host, void *v_host) {
    size_t row = row_bytes(s);
    for (int done = 0, run; done < len; done += run) {
        run = page_run(s, first + done, len - done);
        if (s->tiered) {
            memcpy((char *)k_host + done * row, (const char *)s->host_k + host_offset(s, first + done), run * row);
            memcpy((char *)v_host + done * row, (const char *)s->host_v + host_offset(s, first + done), run * row);
            continue;
        }
        size_t src = (size_t)span_store_row(s, first + done) * row;
        s->be->copy_from(s->be, (char *)k_host + done * row, (const char *)s->k + src, (size_t)run * row);
        s->be->copy_from(s->be, (char *)v_host + done * row, (const char *)s->v + src, (size_t)run * row);
    }
}

void span_store_read_staging(const span_store *s, int pos0, int n, void *k_host, void *v_host) {
    size_t row = row_bytes(s);
    for (int done = 0, run; done < n; done += run) {
        int src = span_store_staging_row(s, pos0 + done);
        run = n - done < s->staging_rows - src ? n - done : s->staging_rows - src;
        s->be->copy_from(s->be, (char *)k_host + done * row, (const char *)s->k + (size_t)src * row, (size_t)run * row);
        s->be->copy_from(s->be, (char *)v_host + done * row, (const char *)s->v + (size_t)src * row, (size_t)run * row);
    }
}

int span_store_append(span_store *s, int start, int len, ltri_error *err) {
    int first = s->n_rows;
    if (reserve_rows(s, len, err)) return -1;
    size_t row = row_bytes(s);
    /* Copy in runs that are contiguous on both sides: a run ends at a page
     * boundary of the store or at the wrap of the staging ring. */
    for (int done = 0; done < len;) {
        int r = s->n_rows + done, pos = start + done;
        int src = span_store_staging_row(s, pos);
        int run = page_run(s, r, len - done);
        if (run > s->staging_rows - src) run = s->staging_rows - src;
        if (s->tiered) { /* straight to the host tier */
            invalidate(s, r);
            s->be->copy_from(s->be, (char *)s->host_k + host_offset(s, r), (const char *)s->k + (size_t)src * row,
                             (size_t)run * row);
            s->be->copy_from(s->be, (char *)s->host_v + host_offset(s, r), (const char *)s->v + (size_t)src * row,
                             (size_t)run * row);
        } else {
            int dst = span_store_row(s, r);
            s->be->copy(s->be, (char *)s->k + (size_t)dst * row, (const char *)s->k + (size_t)src * row,
                        (size_t)run * row);
            s->be->copy(s->be, (char *)s->v + (size_t)dst * row, (const char *)s->v + (size_t)src * row,
                        (size_t)run * row);
        }
        done += run;
    }
    s->n_rows += len;
    return first;
}

const int32_t *span_store_device_pages(span_store *s) {
    if (s->tiered) return NULL;
    if (s->n_pages_synced < s->n_logical_pages) {
        const size_t first = (size_t)s->n_pages_synced;
        s->be->copy_to(s->be, s->page_table_dev + first, s->page_table + first,
                       sizeof(int32_t) * ((size_t)s->n_logical_pages - first));
        s->n_pages_synced = s->n_logical_pages;
    }
    return s->page_table_dev;
}

size_t span_store_bytes(const span_store *s) {
    return 2 * ((size_t)s->staging_rows + (size_t)s->device_slots * s->page_size) * row_bytes(s);
}
