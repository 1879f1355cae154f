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
    int n_rows; /* logical rows used */
} span_store;

/* page_capacity: physical pages in the pool (each page_size rows). */
int span_store_init(span_store *s, ltri_backend *be, int width, int staging_rows, int page_size, int page_capacity,
                    ltri_error *err);
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

/* Pool row of logical row r. */
static inline int32_t span_store_row(const span_store *s, int r) {
    return s->staging_rows + s->page_table[r / s->page_size] * s->page_size + r % s->page_size;
}

/* Bytes of backend memory the pool holds. */
size_t span_store_bytes(const span_store *s);

#endif
