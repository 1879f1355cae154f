#include "index/span_store.h"

#include <stdlib.h>
#include <string.h>

int span_store_init(span_store *s, ltri_backend *be, int width, int staging_rows, int page_size, int page_capacity,
                    ltri_error *err) {
    memset(s, 0, sizeof(*s));
    s->be = be;
    s->width = width;
    s->staging_rows = staging_rows;
    s->page_size = page_size;
    s->n_pages = page_capacity;
    size_t rows = (size_t)staging_rows + (size_t)page_capacity * page_size;
    size_t bytes = rows * width * ltri_dtype_size(be->kv_dtype);
    s->logical_capacity = page_capacity > 0 ? page_capacity : 1;
    if (!(s->k = be->alloc(be, bytes, err)) || !(s->v = be->alloc(be, bytes, err))) goto fail;
    s->free_pages = malloc(sizeof(int32_t) * (size_t)s->logical_capacity);
    s->page_table = malloc(sizeof(int32_t) * (size_t)s->logical_capacity);
    if (!s->free_pages || !s->page_table) {
        ltri_fail(err, "out of host memory");
        goto fail;
    }
    span_store_reset(s);
    return 0;
fail:
    span_store_free(s);
    return ltri_fail_prefix(err, "span store of %zu rows x %d: ", rows, width);
}

void span_store_reset(span_store *s) {
    /* Pages are handed out lowest first, so a fresh sequence lays spans out in order. */
    s->n_free = s->n_pages;
    for (int i = 0; i < s->n_pages; i++) s->free_pages[i] = s->n_pages - 1 - i;
    s->n_logical_pages = 0;
    s->n_rows = 0;
}

void span_store_free(span_store *s) {
    if (s->be) {
        if (s->k) s->be->free(s->be, s->k);
        if (s->v) s->be->free(s->be, s->v);
    }
    free(s->free_pages);
    free(s->page_table);
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

/* How many of `remaining` logical rows from r are contiguous in the pool
 * (they end at a page boundary). */
static int page_run(const span_store *s, int r, int remaining) {
    int left = s->page_size - r % s->page_size;
    return remaining < left ? remaining : left;
}

int span_store_append_rows(span_store *s, const void *k, const void *v, ltri_dtype dtype, int len, ltri_error *err) {
    if (reserve_rows(s, len, err)) return -1;
    int first = s->n_rows;
    size_t row = (size_t)s->width * ltri_dtype_size(s->be->kv_dtype), src_row = (size_t)s->width * ltri_dtype_size(dtype);
    for (int done = 0, run; done < len; done += run) {
        run = page_run(s, first + done, len - done);
        size_t dst = (size_t)span_store_row(s, first + done) * row;
        backend_upload_convert(s->be, (char *)s->k + dst, s->be->kv_dtype, (const char *)k + done * src_row, dtype,
                               (size_t)run * s->width);
        backend_upload_convert(s->be, (char *)s->v + dst, s->be->kv_dtype, (const char *)v + done * src_row, dtype,
                               (size_t)run * s->width);
    }
    s->n_rows += len;
    return first;
}

void span_store_read(const span_store *s, int first, int len, void *k_host, void *v_host) {
    size_t row = (size_t)s->width * ltri_dtype_size(s->be->kv_dtype);
    for (int done = 0, run; done < len; done += run) {
        run = page_run(s, first + done, len - done);
        size_t src = (size_t)span_store_row(s, first + done) * row;
        s->be->copy_from(s->be, (char *)k_host + done * row, (const char *)s->k + src, (size_t)run * row);
        s->be->copy_from(s->be, (char *)v_host + done * row, (const char *)s->v + src, (size_t)run * row);
    }
}

void span_store_read_staging(const span_store *s, int pos0, int n, void *k_host, void *v_host) {
    size_t row = (size_t)s->width * ltri_dtype_size(s->be->kv_dtype);
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
    size_t row_bytes = (size_t)s->width * ltri_dtype_size(s->be->kv_dtype);
    /* Copy in runs that are contiguous on both sides: a run ends at a page
     * boundary of the store or at the wrap of the staging ring. */
    for (int done = 0; done < len;) {
        int r = s->n_rows + done, pos = start + done;
        int src = span_store_staging_row(s, pos), dst = span_store_row(s, r);
        int run = page_run(s, r, len - done);
        if (run > s->staging_rows - src) run = s->staging_rows - src;
        s->be->copy(s->be, (char *)s->k + (size_t)dst * row_bytes, (const char *)s->k + (size_t)src * row_bytes,
                    (size_t)run * row_bytes);
        s->be->copy(s->be, (char *)s->v + (size_t)dst * row_bytes, (const char *)s->v + (size_t)src * row_bytes,
                    (size_t)run * row_bytes);
        done += run;
    }
    s->n_rows += len;
    return first;
}

size_t span_store_bytes(const span_store *s) {
    return 2 * ((size_t)s->staging_rows + (size_t)s->n_pages * s->page_size) * s->width *
           ltri_dtype_size(s->be->kv_dtype);
}
