/* The BPE model of tokenizer.json: vocabulary, ranked merges, and the merge
 * loop that turns one pre-token into ids.
 *
 * Semantics follow tokenizers/src/models/bpe/model.rs (merge_word,
 * tokenize_with_cache) and word.rs (merge_all):
 *   - ignore_merges: a pre-token that is itself in the vocabulary is one token;
 *   - each character becomes a symbol (continuing_subword_prefix on all but
 *     the first, end_of_word_suffix on the last); a character missing from the
 *     vocabulary becomes its UTF-8 bytes as "<0xXX>" tokens (byte_fallback)
 *     or the unk token (fused with a preceding unk when fuse_unk);
 *   - merges are applied lowest rank first, leftmost first among equal ranks,
 *     with a min-heap of candidate pairs over a linked list of symbols, so a
 *     word of n characters costs O(n log n) rather than O(n^2).
 * Vocabulary and merges live in open-addressing hash tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* Ids above this are refused: the id -> string tables are dense arrays. */
#define TOK_MAX_ID (1 << 26)

/* ---- hashing -------------------------------------------------------------- */

static uint64_t tok_hash_bytes(const char *s, size_t n) {
    /* 64-bit multiply-xorshift over 8-byte words; quality is ample for token
     * strings and it runs once per symbol lookup. */
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 29;
    return h;
}

static uint64_t tok_hash_pair(uint64_t key) {
    key ^= key >> 33;
    key *= 0xFF51AFD7ED558CCDULL;
    key ^= key >> 33;
    key *= 0xC4CEB9FE1A85EC53ULL;
    key ^= key >> 33;
    return key;
}

static size_t tok_table_size(size_t n) {
    size_t c = 16;
    while (c < 2 * n) c *= 2;
    return c;
}

int32_t tok_bpe_lookup(const tok_bpe *m, const char *s, size_t n) {
    if (!m->vocab) return -1;
    size_t i = (size_t)tok_hash_bytes(s, n) & m->vocab_mask;
    for (;;) {
        const tok_str_slot *e = &m->vocab[i];
        if (e->value < 0) return -1;
        if (e->len == n && memcmp(m->arena.data + e->off, s, n) == 0) return e->value;
        i = (i + 1) & m->vocab_mask;
    }
}

const char *tok_bpe_token(const tok_bpe *m, int32_t id, size_t *len) {
    if (id < 0 || id > m->max_id || m->id_len[id] == UINT32_MAX) return NULL;
    *len = m->id_len[id];
    return m->arena.data + m->id_off[id];
}

static const tok_merge_slot *tok_merge_get(const tok_bpe *m, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)tok_hash_pair(key) & m->merges_mask;
    for (;;) {
        const tok_merge_slot *e = &m->merges[i];
        if (e->key == key) return e;
        if (e->key == UINT64_MAX) return NULL;
        i = (i + 1) & m->merges_mask;
    }
}

/* ---- loading ------------------------------------------------------------- */

static int tok_bpe_vocab(tok_bpe *m, const json_t *vocab, int nul_keys, ltri_error *err) {
    if (!json_is_object(vocab))
        return ltri_fail(err, "model.vocab: expected an object of token -> id, got %s",
                         vocab ? tok_json_type_name(vocab) : "nothing");
    size_t count = json_object_size(vocab);
    size_t cap = tok_table_size(count);
    if (!(m->vocab = malloc(cap * sizeof(*m->vocab)))) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < cap; i++) m->vocab[i].value = -1;
    m->vocab_mask = cap - 1;
    m->max_id = -1;
    for (void *it = json_object_iter((json_t *)vocab); it; it = json_object_iter_next((json_t *)vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *v = json_object_iter_value(it);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= TOK_MAX_ID)
            return ltri_fail(err, "model.vocab[\"%s\"]: expected an id in [0, %d), got %s", key, TOK_MAX_ID,
                             tok_json_type_name(v));
        int32_t id = (int32_t)json_integer_value(v);
        if (klen >= UINT32_MAX || m->arena.len + klen >= UINT32_MAX)
            return ltri_fail(err, "model.vocab: the vocabulary is too large");
        uint32_t off = (uint32_t)m->arena.len;
        if (tok_buf_append(&m->arena, key, klen)) return ltri_fail(err, "out of memory");
        if (nul_keys) { /* U+10FFFF stands for NUL (see tok_read_json) */
            char *k = m->arena.data + off;
            size_t w = 0;
            for (size_t r = 0; r < klen;) {
                if (r + 4 <= klen && !memcmp(k + r, "\xF4\x8F\xBF\xBF", 4)) {
                    k[w++] = 0;
                    r += 4;
                } else {
                    k[w++] = k[r++];
                }
            }
            klen = w;
            m->arena.len = off + klen;
        }
        size_t h = (size_t)tok_hash_bytes(m->arena.data + off, klen) & m->vocab_mask;
        while (m->vocab[h].value >= 0) h = (h + 1) & m->vocab_mask;
        m->vocab[h] = (tok_str_slot){off, (uint32_t)klen, id};
        m->vocab_count++;
        if (id > m->max_id) m->max_id = id;
    }
    size_t n_ids = (size_t)m->max_id + 1;
    m->id_off = malloc((n_ids ? n_ids : 1) * sizeof(uint32_t));
    m->id_len = malloc((n_ids ? n_ids : 1) * sizeof(uint32_t));
    if (!m->id_off || !m->id_len) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < n_ids; i++) m->id_len[i] = UINT32_MAX;
    for (size_t i = 0; i < cap; i++) {
        const tok_str_slot *e = &m->vocab[i];
        if (e->value < 0) continue;
        m->id_off[e->value] = e->off;
        m->id_len[e->value] = e->len;
    }
    return 0;
}

/* One merge: "a b" (legacy string) or ["a", "b"]. */
static int tok_merge_parts(const json_t *e, size_t rank, const char **a, size_t *alen, const char **b, size_t *blen,
                           ltri_error *err) {
    if (json_is_string(e)) {
        const char *s = json_string_value(e);
        size_t n = json_string_length(e);
        const char *sp = memchr(s, ' ', n);
        /* convert_merges_to_hashmap: split(' ') must give exactly two parts */
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return ltri_fail(err, "model.merges[%zu]: expected \"a b\" (two tokens separated by one space), got "
                                  "\"%s\"", rank, s);
        *a = s;
        *alen = (size_t)(sp - s);
        *b = sp + 1;
        *blen = n - *alen - 1;
        return 0;
    }
    if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
        json_is_string(json_array_get(e, 1))) {
        *a = json_string_value(json_array_get(e, 0));
        *alen = json_string_length(json_array_get(e, 0));
        *b = json_string_value(json_array_get(e, 1));
        *blen = json_string_length(json_array_get(e, 1));
        return 0;
    }
    return ltri_fail(err, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", rank,
                     tok_json_type_name(e));
}

static int tok_bpe_merges(tok_bpe *m, const json_t *merges, ltri_error *err) {
    if (!json_is_array(merges))
        return ltri_fail(err, "model.merges: expected an array, got %s",
                         merges ? tok_json_type_name(merges) : "nothing");
    size_t count = json_array_size(merges);
    size_t cap = tok_table_size(count);
    if (!(m->merges = malloc(cap * sizeof(*m->merges)))) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < cap; i++) m->merges[i].key = UINT64_MAX;
    m->merges_mask = cap - 1;
    tok_buf joined = {0};
    int32_t rank = 0;
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(merges, i);
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if (tok_merge_parts(e, i, &a, &alen, &b, &blen, err)) goto fail;
        /* merges.txt headers survive in some files; tokenizers skips them */
        if (json_is_string(e) && alen >= 8 && !memcmp(a, "#version", 8)) continue;
        int32_t ia = tok_bpe_lookup(m, a, alen), ib = tok_bpe_lookup(m, b, blen);
        if (ia < 0 || ib < 0) {
            ltri_fail(err, "model.merges[%zu]: token \"%.*s\" is not in the vocabulary", i, (int)(ia < 0 ? alen : blen),
                      ia < 0 ? a : b);
            goto fail;
        }
        /* The merged token drops the right part's continuing_subword_prefix. */
        size_t skip = m->prefix && blen >= m->prefix_len ? m->prefix_len : 0;
        joined.len = 0;
        if (tok_buf_append(&joined, a, alen) || tok_buf_append(&joined, b + skip, blen - skip)) {
            ltri_fail(err, "out of memory");
            goto fail;
        }
        int32_t inew = tok_bpe_lookup(m, joined.data, joined.len);
        if (inew < 0) {
            ltri_fail(err, "model.merges[%zu]: merged token \"%.*s\" is not in the vocabulary", i, (int)joined.len,
                      joined.data);
            goto fail;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t h = (size_t)tok_hash_pair(key) & m->merges_mask;
        while (m->merges[h].key != UINT64_MAX && m->merges[h].key != key) h = (h + 1) & m->merges_mask;
        /* A repeated pair takes its last rank, as collecting into a HashMap does. */
        m->merges[h] = (tok_merge_slot){key, rank, inew};
        rank++;
    }
    tok_buf_free(&joined);
    return 0;
fail:
    tok_buf_free(&joined);
    return -1;
}

static int tok_bpe_opt_string(const json_t *model, const char *key, char **out, size_t *len, ltri_error *err) {
    const char *s;
    size_t n;
    if (tok_json_string(model, key, "model", 0, &s, &n, err)) return -1;
    *out = NULL;
    *len = 0;
    if (!s || n == 0) return 0; /* "" adds nothing: same as absent */
    if (!(*out = tok_strndup(s, n))) return ltri_fail(err, "out of memory");
    *len = n;
    return 0;
}

int tok_bpe_parse(tok_bpe *m, const json_t *model, int nul_keys, ltri_error *err) {
    memset(m, 0, sizeof(*m));
    m->unk_id = -1;
    for (int b = 0; b < 256; b++) m->byte_ids[b] = -1;
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return ltri_fail(err, "model.dropout: BPE dropout (random merges, a training feature) is not supported");
    if (tok_bpe_opt_string(model, "continuing_subword_prefix", &m->prefix, &m->prefix_len, err)) return -1;
    if (tok_bpe_opt_string(model, "end_of_word_suffix", &m->suffix, &m->suffix_len, err)) return -1;
    const char *unk;
    size_t unk_len;
    if (tok_json_string(model, "unk_token", "model", 0, &unk, &unk_len, err)) return -1;
    if (unk && !(m->unk_token = tok_strndup(unk, unk_len))) return ltri_fail(err, "out of memory");
    if (tok_json_bool(model, "fuse_unk", "model", 0, &m->fuse_unk, err)) return -1;
    if (tok_json_bool(model, "byte_fallback", "model", 0, &m->byte_fallback, err)) return -1;
    if (tok_json_bool(model, "ignore_merges", "model", 0, &m->ignore_merges, err)) return -1;
    if (tok_bpe_vocab(m, json_object_get(model, "vocab"), nul_keys, err)) return -1;
    if (tok_bpe_merges(m, json_object_get(model, "merges"), err)) return -1;
    if (m->unk_token) m->unk_id = tok_bpe_lookup(m, m->unk_token, unk_len);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof(name), "<0x%02X>", b);
        m->byte_ids[b] = tok_bpe_lookup(m, name, 6);
    }
    return 0;
}

void tok_bpe_free(tok_bpe *m) {
    tok_buf_free(&m->arena);
    free(m->vocab);
    free(m->id_off);
    free(m->id_len);
    free(m->merges);
    free(m->unk_token);
    free(m->prefix);
    free(m->suffix);
    memset(m, 0, sizeof(*m));
}

/* ---- merging one word ---------------------------------------------------- */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1: none */
    uint32_t len;       /* bytes of the word this symbol covers; 0: merged away */
} tok_symbol;

/* A candidate merge. key = rank << 32 | pos, so that one integer comparison
 * orders by rank, then position: word.rs orders its heap the same way. */
typedef struct {
    uint64_t key;
    int32_t new_id;
} tok_candidate;

struct tok_bpe_work {
    tok_symbol *sym;
    size_t n_sym, cap_sym;
    tok_candidate *heap;
    size_t n_heap, cap_heap;
    tok_buf key; /* a character with prefix / suffix */
};

tok_bpe_work *tok_bpe_work_new(void) { return calloc(1, sizeof(tok_bpe_work)); }

void tok_bpe_work_free(tok_bpe_work *w) {
    if (!w) return;
    free(w->sym);
    free(w->heap);
    tok_buf_free(&w->key);
    free(w);
}

static int tok_symbol_add(tok_bpe_work *w, int32_t id, size_t len) {
    if (w->n_sym == w->cap_sym) {
        size_t c = w->cap_sym ? w->cap_sym * 2 : 64;
        tok_symbol *q = realloc(w->sym, c * sizeof(*q));
        if (!q) return -1;
        w->sym = q;
        w->cap_sym = c;
    }
    int32_t i = (int32_t)w->n_sym;
    if (i > 0) w->sym[i - 1].next = i;
    w->sym[w->n_sym++] = (tok_symbol){id, i - 1, -1, (uint32_t)len};
    return 0;
}

/* A 4-ary min-heap: half the depth of a binary one, and the four children
 * share a cache line, which matters when one word has a million symbols. */
static void tok_heap_sift_down(tok_candidate *h, size_t n, size_t i) {
    tok_candidate x = h[i];
    for (;;) {
        size_t c = 4 * i + 1, best = i;
        uint64_t best_key = x.key;
        for (size_t k = c; k < c + 4 && k < n; k++)
            if (h[k].key < best_key) {
                best = k;
                best_key = h[k].key;
            }
        if (best == i) break;
        h[i] = h[best];
        i = best;
    }
    h[i] = x;
}

static int tok_heap_reserve(tok_bpe_work *w, size_t need) {
    if (need <= w->cap_heap) return 0;
    size_t cap = w->cap_heap ? w->cap_heap : 64;
    while (cap < need) cap *= 2;
    tok_candidate *q = realloc(w->heap, cap * sizeof(*q));
    if (!q) return -1;
    w->heap = q;
    w->cap_heap = cap;
    return 0;
}

static int tok_heap_push(tok_bpe_work *w, tok_candidate c) {
    if (tok_heap_reserve(w, w->n_heap + 1)) return -1;
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (w->heap[parent].key <= c.key) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return 0;
}

static tok_candidate tok_heap_pop(tok_bpe_work *w) {
    tok_candidate top = w->heap[0];
    if (--w->n_heap) {
        w->heap[0] = w->heap[w->n_heap];
        tok_heap_sift_down(w->heap, w->n_heap, 0);
    }
    return top;
}

static int tok_candidate_of(const tok_bpe *m, const tok_bpe_work *w, int32_t a, tok_candidate *out) {
    if (a < 0) return 0;
    int32_t b = w->sym[a].next;
    if (b < 0) return 0;
    const tok_merge_slot *e = tok_merge_get(m, w->sym[a].id, w->sym[b].id);
    if (!e) return 0;
    *out = (tok_candidate){((uint64_t)(uint32_t)e->rank << 32) | (uint32_t)a, e->new_id};
    return 1;
}

/* Pushes the merge of symbol a with its next, if the merges know the pair. */
static int tok_push_pair(const tok_bpe *m, tok_bpe_work *w, int32_t a) {
    tok_candidate c;
    return tok_candidate_of(m, w, a, &c) ? tok_heap_push(w, c) : 0;
}

static int tok_merge_all(const tok_bpe *m, tok_bpe_work *w) {
    /* The pairs of the initial word, heapified in O(n). */
    if (tok_heap_reserve(w, w->n_sym)) return -1;
    w->n_heap = 0;
    for (int32_t i = 0; i + 1 < (int32_t)w->n_sym; i++)
        if (tok_candidate_of(m, w, i, &w->heap[w->n_heap])) w->n_heap++;
    for (size_t i = w->n_heap / 4 + 1; i-- > 0;)
        if (i < w->n_heap) tok_heap_sift_down(w->heap, w->n_heap, i);
    while (w->n_heap) {
        tok_candidate top = tok_heap_pop(w);
        uint32_t pos = (uint32_t)top.key;
        tok_symbol *s = &w->sym[pos];
        if (s->len == 0 || s->next < 0) continue;
        tok_symbol *right = &w->sym[s->next];
        /* Skip entries made stale by an earlier merge (word.rs does the same). */
        const tok_merge_slot *e = tok_merge_get(m, s->id, right->id);
        if (!e || e->new_id != top.new_id) continue;
        s->id = top.new_id;
        s->len += right->len;
        s->next = right->next;
        right->len = 0;
        if (s->next >= 0) w->sym[s->next].prev = (int32_t)pos;
        if (s->prev >= 0 && tok_push_pair(m, w, s->prev)) return -1;
        if (tok_push_pair(m, w, (int32_t)pos)) return -1;
    }
    return 0;
}

int tok_bpe_encode_word(const tok_bpe *m, tok_bpe_work *w, const char *s, size_t n, tok_ids *out, ltri_error *err) {
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tok_bpe_lookup(m, s, n);
        if (id >= 0) return tok_ids_push(out, id) ? ltri_fail(err, "out of memory") : 0;
    }
    w->n_sym = 0;
    int32_t unk = -1; /* a pending unk symbol: id -1 none */
    size_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t k = tok_utf8_len((unsigned char)s[i]);
        if (k > n - i) k = n - i;
        const char *key = s + i;
        size_t klen = k;
        if ((i > 0 && m->prefix) || (i + k == n && m->suffix)) {
            tok_buf *b = &w->key;
            b->len = 0;
            if ((i > 0 && m->prefix && tok_buf_append(b, m->prefix, m->prefix_len)) || tok_buf_append(b, s + i, k) ||
                (i + k == n && m->suffix && tok_buf_append(b, m->suffix, m->suffix_len)))
                return ltri_fail(err, "out of memory");
            key = b->data;
            klen = b->len;
        }
        int32_t id = tok_bpe_lookup(m, key, klen);
        if (id >= 0) {
            if (unk >= 0 && tok_symbol_add(w, unk, unk_len)) return ltri_fail(err, "out of memory");
            unk = -1;
            if (tok_symbol_add(w, id, k)) return ltri_fail(err, "out of memory");
        } else {
            int fell_back = 0;
            if (m->byte_fallback) {
                /* All bytes of the symbol (prefix and suffix included) or none. */
                fell_back = 1;
                for (size_t b = 0; b < klen && fell_back; b++) fell_back = m->byte_ids[(unsigned char)key[b]] >= 0;
                /* model.rs adds these without flushing a pending unk first. */
                for (size_t b = 0; b < klen && fell_back; b++)
                    if (tok_symbol_add(w, m->byte_ids[(unsigned char)key[b]], 1)) return ltri_fail(err, "out of memory");
            }
            if (!fell_back && m->unk_token) {
                if (m->unk_id < 0)
                    return ltri_fail(err, "model.unk_token \"%s\" is not in the vocabulary", m->unk_token);
                if (unk >= 0 && m->fuse_unk) {
                    unk_len += k;
                } else {
                    if (unk >= 0 && tok_symbol_add(w, unk, unk_len)) return ltri_fail(err, "out of memory");
                    unk = m->unk_id;
                    unk_len = k;
                }
            }
            /* Neither: the character is dropped, as tokenizers drops it. */
        }
        i += k;
    }
    if (unk >= 0 && tok_symbol_add(w, unk, unk_len)) return ltri_fail(err, "out of memory");
    if (tok_merge_all(m, w)) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < w->n_sym; i++)
        if (w->sym[i].len && tok_ids_push(out, w->sym[i].id)) return ltri_fail(err, "out of memory");
    return 0;
}
