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

int span_store_append(span_store *s, int start, int len, ltri_error *err) {
    int first = s->n_rows;
    int need_pages = (s->n_rows + len + s->page_size - 1) / s->page_size;
    if (need_pages - s->n_logical_pages > s->n_free)
        return ltri_fail(err, "span store full: %d pages of %d rows in use (raise the store's capacity)",
                         s->n_pages - s->n_free, s->page_size);
    while (s->n_logical_pages < need_pages) s->page_table[s->n_logical_pages++] = s->free_pages[--s->n_free];
    size_t row_bytes = (size_t)s->width * ltri_dtype_size(s->be->kv_dtype);
    /* Copy in runs that are contiguous on both sides: a run ends at a page
     * boundary of the store or at the wrap of the staging ring. */
    for (int done = 0; done < len;) {
        int r = s->n_rows + done, pos = start + done;
        int src = span_store_staging_row(s, pos), dst = span_store_row(s, r);
        int run = len - done;
        if (run > s->page_size - r % s->page_size) run = s->page_size - r % s->page_size;
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
