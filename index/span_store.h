/* Where the K/V of the sparse modes live on one rank, for one layer.
 *
 * One pool per layer in backend memory, K and V separately, rows of
 * n_kv_heads * head_dim elements (kv_dtype), keys *before* RoPE (retrieved keys
 * are attended at a fixed distance, InfLLM's scheme, so they are never rotated
 * by their own position). The pool has two regions:
 *
 *   staging  rows [0, staging_rows): a ring indexed by position; every token's
 *            raw K/V is written here when it is computed. It holds the local
 *            window plus the tokens that have left it but are not in a span
 *            yet ("pending"), which the retrieved part attends as they are.
 *   pages    fixed-size pages of page_size rows after the staging region, from
 *            a free list. A span's tokens are copied into pages when the span
 *            is formed (only by its owner rank, once the index is sharded); a
 *            span occupies consecutive *logical* rows of the layer's store,
 *            and a page table maps logical pages to physical ones.
 *
 * Host tier: with device_pages smaller than the pages, every page lives in
 * the backend's (pinned) host memory and the device holds a cache of
 * device_pages slots, least recently used out. An attention call first
 * fetches the pages of the spans it reads (span_store_fetch); pages a call
 * fetched stay until the call is over (span_store_begin_call starts one).
 * The index vectors stay on the device whatever the tier.
 *
 * All bookkeeping is on the host; the kernels see pool row numbers. */
#ifndef LTRI_INDEX_SPAN_STORE_H
#define LTRI_INDEX_SPAN_STORE_H

#include <stdint.h>

#include "core/error.h"
#include "kernels/backend.h"

typedef struct {
    ltri_backend *be; /* not owned */
    int width;        /* elements per row: n_kv_heads * head_dim */
    int staging_rows;
    int page_size;
    int n_pages;      /* physical pages in the pool */
    void *k, *v;      /* [staging_rows + n_pages * page_size][width] kv_dtype */
    int32_t *free_pages; /* stack of free physical pages */
    int n_free;
    int32_t *page_table; /* logical page -> physical page */
    int n_logical_pages, logical_capacity;
    int32_t *page_table_dev; /* its backend copy (no host tier only): the first n_pages_synced entries */
    int n_pages_synced;
    int n_rows; /* logical rows used */
    /* host tier */
    int tiered;
    int device_slots;         /* device pages when tiered */
    void *host_k, *host_v;    /* [n_pages][page_size][width] kv_dtype: every page */
    int32_t *slot_of;         /* physical page -> device slot, -1 when only on the host */
    int32_t *page_in_slot;    /* device slot -> physical page, -1 when free */
    uint64_t *slot_used;      /* device slot -> the call that last used it */
    uint64_t call;
    long fetch_hits, fetch_misses;
    int fetch_in_flight;      /* tier fetches queued without waiting (copy_to_async) */
} span_store;

/* page_capacity: physical pages (each page_size rows); device_pages: how many
 * of them the device holds (0 or >= page_capacity: all, no host tier). */
int span_store_init(span_store *s, ltri_backend *be, int width, int staging_rows, int page_size, int page_capacity,
                    int device_pages, ltri_error *err);
void span_store_free(span_store *s);
void span_store_reset(span_store *s);

/* Pool row of position pos in the staging ring. */
static inline int32_t span_store_staging_row(const span_store *s, int pos) { return pos % s->staging_rows; }

/* Writes k and v rows ([t][width] fp32, positions first_pos ..) into the staging ring. */
void span_store_stage(span_store *s, const float *k, const float *v, int first_pos, int n_tokens);

/* Copies positions [start, start + len) from the staging ring into newly
 * allocated logical rows; returns the first logical row, or -1 (err) when the
 * pool is full. */
int span_store_append(span_store *s, int start, int len, ltri_error *err);

/* Appends len rows given on the host (type dtype, converted to kv_dtype) as
 * new logical rows: a span restored from a saved context. Returns the first
 * logical row or -1 (err). */
int span_store_append_rows(span_store *s, const void *k, const void *v, ltri_dtype dtype, int len, ltri_error *err);

/* Copies logical rows [first, first + len) (kv_dtype bytes) to the host. */
void span_store_read(const span_store *s, int first, int len, void *k_host, void *v_host);

/* Copies the staging rows of positions [pos0, pos0 + n) to the host. */
void span_store_read_staging(const span_store *s, int pos0, int n, void *k_host, void *v_host);

/* Starts an attention call: pages fetched from now on stay until the next call. */
static inline void span_store_begin_call(span_store *s) { s->call++; }

/* Makes logical rows [first, first + len) resident on the device (a no-op
 * without a host tier); -1 (err) when this call's pages do not fit. */
int span_store_fetch(span_store *s, int first, int len, ltri_error *err);

/* Pool row of logical row r (resident: fetched in this call, or no tier). */
static inline int32_t span_store_row(const span_store *s, int r) {
    int32_t page = s->page_table[r / s->page_size];
    if (s->tiered) page = s->slot_of[page];
    return s->staging_rows + page * s->page_size + r % s->page_size;
}

/* The page table on the backend (span_select's page_table), new pages
 * uploaded first. Without a host tier only (NULL with one: the device's
 * slots change with every fetch, so rows are made on the host there). */
const int32_t *span_store_device_pages(span_store *s);

/* Bytes of backend memory the pool holds. */
size_t span_store_bytes(const span_store *s);

#endif
