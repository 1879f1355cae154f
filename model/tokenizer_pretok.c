/* Normalizers and pre-tokenizers of tokenizer.json.
 *
 * Supported, with the semantics of the `tokenizers` sources named:
 *   normalizers:    NFC, NFD, NFKC, NFKD (normalizers/unicode.rs, here through
 *                   libunistring's u8_normalize), Prepend (prepend.rs: only a
 *                   non-empty string gets the prefix), Replace (replace.rs),
 *                   Sequence;
 *   pre-tokenizers: Split (split.rs, all five delimiter behaviours and
 *                   "invert"), ByteLevel (byte_level.rs), Metaspace
 *                   (metaspace.rs), Sequence.
 * Any other "type" is an error naming the field: an approximated tokenizer
 * would feed the model ids it was never trained on. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uninorm.h>

#include "model/tokenizer_internal.h"

/* ---- normalizers ---------------------------------------------------------- */

static void tok_normalizer_release(tok_normalizer *n) {
    free(n->content);
    tok_pattern_free(&n->pattern);
    for (int i = 0; i < n->n_children; i++) tok_normalizer_release(&n->children[i]);
    free(n->children);
}

void tok_normalizer_free(tok_normalizer *n) {
    if (!n) return;
    tok_normalizer_release(n);
    free(n);
}

/* Parses j into *n (already zeroed). */
static int tok_normalizer_fill(tok_normalizer *n, const json_t *j, const char *what, ltri_error *err) {
    const char *type;
    if (tok_json_type(j, what, &type, err)) return -1;
    if (!strcmp(type, "NFC")) n->type = TOK_NORM_NFC;
    else if (!strcmp(type, "NFD")) n->type = TOK_NORM_NFD;
    else if (!strcmp(type, "NFKC")) n->type = TOK_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = TOK_NORM_NFKD;
    else if (!strcmp(type, "Prepend") || !strcmp(type, "Replace")) {
        const char *s;
        size_t len;
        int prepend = !strcmp(type, "Prepend");
        n->type = prepend ? TOK_NORM_PREPEND : TOK_NORM_REPLACE;
        if (tok_json_string(j, prepend ? "prepend" : "content", what, 1, &s, &len, err)) return -1;
        if (!(n->content = tok_strndup(s, len))) return ltri_fail(err, "out of memory");
        n->content_len = len;
        if (!prepend) {
            char w[256];
            snprintf(w, sizeof(w), "%s.pattern", what);
            if (tok_pattern_from_json(&n->pattern, json_object_get(j, "pattern"), w, err)) return -1;
        }
    } else if (!strcmp(type, "Sequence")) {
        n->type = TOK_NORM_SEQUENCE;
        const json_t *list = json_object_get(j, "normalizers");
        if (!json_is_array(list)) return ltri_fail(err, "%s.normalizers: expected an array", what);
        size_t k = json_array_size(list);
        if (k && !(n->children = calloc(k, sizeof(*n->children)))) return ltri_fail(err, "out of memory");
        for (size_t i = 0; i < k; i++) {
            char w[256];
            snprintf(w, sizeof(w), "%s.normalizers[%zu]", what, i);
            n->n_children = (int)i + 1;
            if (tok_normalizer_fill(&n->children[i], json_array_get(list, i), w, err)) return -1;
        }
    } else {
        return ltri_fail(err, "%s: normalizer type \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Prepend, "
                              "Replace, Sequence are)", what, type);
    }
    return 0;
}

int tok_normalizer_parse(tok_normalizer **out, const json_t *j, const char *what, ltri_error *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return 0;
    tok_normalizer *n = calloc(1, sizeof(*n));
    if (!n) return ltri_fail(err, "out of memory");
    if (tok_normalizer_fill(n, j, what, err)) {
        tok_normalizer_free(n);
        return -1;
    }
    *out = n;
    return 0;
}

/* Unicode normal forms. tokenizers normalizes with the
 * unicode-normalization-alignments crate, whose tables predate Unicode 10;
 * libunistring 1.0 has Unicode 14. Normalization properties of an assigned
 * character never change (Unicode stability policy), so the two differ only on
 * characters the crate does not know: to it they are starters that neither
 * reorder nor compose. These are the code points where the results differ,
 * found by normalizing probe strings around every code point with both
 * (combining marks and composites of the scripts Unicode 10-14 added). Each is
 * copied through unchanged and the text on either side is normalized alone,
 * which is exactly what an unknown starter does to NFC/NFD. */
static const uint32_t tok_norm_unknown[][2] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C},
    {0xEBA, 0xEBA}, {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x16FF0, 0x16FF1}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}
};

static int tok_norm_is_unknown(int32_t cp) {
    if (cp < 0x7FD) return 0;
    size_t lo = 0, hi = sizeof(tok_norm_unknown) / sizeof(tok_norm_unknown[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((uint32_t)cp < tok_norm_unknown[mid][0]) hi = mid;
        else if ((uint32_t)cp > tok_norm_unknown[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

static int tok_unicode_chunk(uninorm_t form, tok_scratch *sc, const char *s, size_t n, tok_buf *out) {
    if (n == 0) return 0;
    size_t len = 0;
    uint8_t *r = u8_normalize(form, (const uint8_t *)s, n, NULL, &len);
    if (!r) return ltri_fail(sc->err, "Unicode normalization failed: %s", strerror(errno));
    int rc = tok_buf_append(out, r, len);
    free(r);
    return rc ? ltri_fail(sc->err, "out of memory") : 0;
}

static int tok_unicode_form(tok_norm_type type, tok_scratch *sc, const char *s, size_t n, tok_buf *out) {
    out->len = 0;
    if (tok_buf_append(out, "", 0)) return ltri_fail(sc->err, "out of memory");
    uninorm_t form = type == TOK_NORM_NFC ? UNINORM_NFC
                     : type == TOK_NORM_NFD ? UNINORM_NFD
                     : type == TOK_NORM_NFKC ? UNINORM_NFKC
                                              : UNINORM_NFKD;
    size_t chunk = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0xDF) { /* everything below U+07C0 is known to both */
            i += c < 0x80 ? 1 : 2;
            continue;
        }
        int32_t cp;
        size_t k = tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (tok_norm_is_unknown(cp)) {
            if (tok_unicode_chunk(form, sc, s + chunk, i - chunk, out)) return -1;
            if (tok_buf_append(out, s + i, k)) return ltri_fail(sc->err, "out of memory");
            chunk = i + k;
        }
        i += k;
    }
    return tok_unicode_chunk(form, sc, s + chunk, n - chunk, out);
}

static int tok_normalize_one(const tok_normalizer *nz, tok_scratch *sc, const char *s, size_t n, tok_buf *out) {
    switch (nz->type) {
    case TOK_NORM_NFC:
    case TOK_NORM_NFD:
    case TOK_NORM_NFKC:
    case TOK_NORM_NFKD: return tok_unicode_form(nz->type, sc, s, n, out);
    case TOK_NORM_PREPEND:
        out->len = 0;
        if ((n && tok_buf_append(out, nz->content, nz->content_len)) || tok_buf_append(out, s, n))
            return ltri_fail(sc->err, "out of memory");
        return 0;
    case TOK_NORM_REPLACE: return tok_replace_all(&nz->pattern, nz->content, nz->content_len, sc, s, n, out);
    case TOK_NORM_SEQUENCE: {
        /* Ping-pong between out and a private buffer; s may not alias either. */
        tok_buf tmp = {0};
        out->len = 0;
        if (tok_buf_append(out, s, n)) return ltri_fail(sc->err, "out of memory");
        for (int i = 0; i < nz->n_children; i++) {
            if (tok_normalize_one(&nz->children[i], sc, out->data, out->len, &tmp)) {
                tok_buf_free(&tmp);
                return -1;
            }
            tok_buf t = *out;
            *out = tmp;
            tmp = t;
        }
        tok_buf_free(&tmp);
        return 0;
    }
    }
    return ltri_fail(sc->err, "internal: unknown normalizer");
}

int tok_normalize(const tok_normalizer *norm, tok_scratch *sc, const char *s, size_t n, tok_buf *out) {
    if (!norm) {
        out->len = 0;
        return tok_buf_append(out, s, n) ? ltri_fail(sc->err, "out of memory") : 0;
    }
    return tok_normalize_one(norm, sc, s, n, out);
}

/* ---- pre-tokenizers ------------------------------------------------------- */

/* The pattern byte_level.rs splits with when use_regex is set. */
static const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void tok_pretok_release(tok_pretok *p) {
    tok_pattern_free(&p->pattern);
    for (int i = 0; i < p->n_children; i++) tok_pretok_release(&p->children[i]);
    free(p->children);
}

void tok_pretok_free(tok_pretok *p) {
    if (!p) return;
    tok_pretok_release(p);
    free(p);
}

/* One character (the Metaspace replacement). */
static int tok_json_char(const json_t *j, const char *key, const char *what, char *out, size_t *out_len,
                         ltri_error *err) {
    const char *s;
    size_t len;
    if (tok_json_string(j, key, what, 1, &s, &len, err)) return -1;
    int32_t cp;
    if (len == 0 || len > 4 || tok_utf8_next((const unsigned char *)s, len, &cp) != len || cp < 0)
        return ltri_fail(err, "%s.%s: expected one character, got \"%s\"", what, key, s);
    memcpy(out, s, len);
    *out_len = len;
    return 0;
}

static int tok_pretok_fill(tok_pretok *p, const json_t *j, const char *what, ltri_error *err) {
    const char *type;
    char w[256];
    if (tok_json_type(j, what, &type, err)) return -1;
    if (!strcmp(type, "Split")) {
        p->type = TOK_PRETOK_SPLIT;
        snprintf(w, sizeof(w), "%s.pattern", what);
        if (tok_pattern_from_json(&p->pattern, json_object_get(j, "pattern"), w, err)) return -1;
        const char *b;
        size_t blen;
        if (tok_json_string(j, "behavior", what, 1, &b, &blen, err)) return -1;
        if (!strcmp(b, "Removed")) p->behavior = TOK_SPLIT_REMOVED;
        else if (!strcmp(b, "Isolated")) p->behavior = TOK_SPLIT_ISOLATED;
        else if (!strcmp(b, "MergedWithPrevious")) p->behavior = TOK_SPLIT_MERGED_WITH_PREVIOUS;
        else if (!strcmp(b, "MergedWithNext")) p->behavior = TOK_SPLIT_MERGED_WITH_NEXT;
        else if (!strcmp(b, "Contiguous")) p->behavior = TOK_SPLIT_CONTIGUOUS;
        else return ltri_fail(err, "%s.behavior: unknown split behavior \"%s\"", what, b);
        return tok_json_bool(j, "invert", what, 0, &p->invert, err);
    }
    if (!strcmp(type, "ByteLevel")) {
        p->type = TOK_PRETOK_BYTE_LEVEL;
        /* serde defaults of byte_level.rs: add_prefix_space and use_regex true */
        if (tok_json_bool(j, "add_prefix_space", what, 1, &p->add_prefix_space, err)) return -1;
        if (tok_json_bool(j, "use_regex", what, 1, &p->use_regex, err)) return -1;
        if (p->use_regex) {
            snprintf(w, sizeof(w), "%s (ByteLevel's GPT-2 pattern)", what);
            if (tok_pattern_compile(&p->pattern, tok_gpt2_pattern, sizeof(tok_gpt2_pattern) - 1, w, err)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "Metaspace")) {
        p->type = TOK_PRETOK_METASPACE;
        if (tok_json_char(j, "replacement", what, p->replacement, &p->replacement_len, err)) return -1;
        const char *scheme;
        size_t slen;
        if (tok_json_string(j, "prepend_scheme", what, 0, &scheme, &slen, err)) return -1;
        p->prepend_scheme = TOK_PREPEND_ALWAYS;
        if (scheme && !strcmp(scheme, "first")) p->prepend_scheme = TOK_PREPEND_FIRST;
        else if (scheme && !strcmp(scheme, "never")) p->prepend_scheme = TOK_PREPEND_NEVER;
        else if (scheme && strcmp(scheme, "always"))
            return ltri_fail(err, "%s.prepend_scheme: unknown value \"%s\"", what, scheme);
        /* Files from before prepend_scheme say add_prefix_space: false. */
        int aps;
        if (tok_json_bool(j, "add_prefix_space", what, 1, &aps, err)) return -1;
        if (!aps) {
            if (scheme && p->prepend_scheme != TOK_PREPEND_NEVER)
                return ltri_fail(err, "%s: add_prefix_space does not match declared prepend_scheme", what);
            p->prepend_scheme = TOK_PREPEND_NEVER;
        }
        return tok_json_bool(j, "split", what, 1, &p->split, err);
    }
    if (!strcmp(type, "Sequence")) {
        p->type = TOK_PRETOK_SEQUENCE;
        const json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list)) return ltri_fail(err, "%s.pretokenizers: expected an array", what);
        size_t k = json_array_size(list);
        if (k && !(p->children = calloc(k, sizeof(*p->children)))) return ltri_fail(err, "out of memory");
        for (size_t i = 0; i < k; i++) {
            snprintf(w, sizeof(w), "%s.pretokenizers[%zu]", what, i);
            p->n_children = (int)i + 1;
            if (tok_pretok_fill(&p->children[i], json_array_get(list, i), w, err)) return -1;
        }
        return 0;
    }
    return ltri_fail(err, "%s: pre_tokenizer type \"%s\" is not supported (Split, ByteLevel, Metaspace, Sequence are)",
                     what, type);
}

int tok_pretok_parse(tok_pretok **out, const json_t *j, const char *what, ltri_error *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return 0;
    tok_pretok *p = calloc(1, sizeof(*p));
    if (!p) return ltri_fail(err, "out of memory");
    if (tok_pretok_fill(p, j, what, err)) {
        tok_pretok_free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* Applies a delimiter behaviour to sc->spans (matches and gaps over s) and
 * appends the kept, non-empty pieces to out. The folds are those of
 * NormalizedString::split. at_start: s begins the original text. */
static int tok_split_spans(tok_split_behavior behavior, tok_scratch *sc, const char *s, int at_start,
                           tok_pieces *out) {
    tok_spans *v = &sc->spans;
    size_t k = 0; /* spans kept, compacted in place: is_match now means "remove" */
    if (behavior == TOK_SPLIT_ISOLATED || behavior == TOK_SPLIT_REMOVED) {
        for (size_t i = 0; i < v->n; i++)
            v->items[k++] = (tok_span){v->items[i].start, v->items[i].end,
                                       behavior == TOK_SPLIT_REMOVED && v->items[i].is_match};
    } else if (behavior == TOK_SPLIT_CONTIGUOUS) {
        int prev_match = 0;
        for (size_t i = 0; i < v->n; i++) {
            tok_span sp = v->items[i];
            if (sp.is_match == prev_match && k > 0) v->items[k - 1].end = sp.end;
            else v->items[k++] = (tok_span){sp.start, sp.end, 0};
            prev_match = sp.is_match;
        }
    } else if (behavior == TOK_SPLIT_MERGED_WITH_PREVIOUS) {
        int prev_match = 0;
        for (size_t i = 0; i < v->n; i++) {
            tok_span sp = v->items[i];
            if (sp.is_match && !prev_match && k > 0) v->items[k - 1].end = sp.end;
            else v->items[k++] = (tok_span){sp.start, sp.end, 0};
            prev_match = sp.is_match;
        }
    } else { /* MergedWithNext: the same fold, right to left */
        int prev_match = 0;
        size_t w = v->n; /* kept spans fill items[w..n) from the right */
        for (size_t i = v->n; i-- > 0;) {
            tok_span sp = v->items[i];
            if (sp.is_match && !prev_match && w < v->n) v->items[w].start = sp.start;
            else v->items[--w] = (tok_span){sp.start, sp.end, 0};
            prev_match = sp.is_match;
        }
        memmove(v->items, v->items + w, (v->n - w) * sizeof(tok_span));
        k = v->n - w;
    }
    for (size_t i = 0; i < k; i++) {
        tok_span sp = v->items[i];
        if (sp.is_match || sp.end == sp.start) continue;
        if (tok_pieces_push(out, s + sp.start, sp.end - sp.start, at_start && sp.start == 0))
            return ltri_fail(sc->err, "out of memory");
    }
    return 0;
}

static int tok_split_piece(const tok_pattern *pat, tok_split_behavior behavior, int invert, tok_scratch *sc,
                           const char *s, size_t n, int at_start, tok_pieces *out) {
    if (tok_pattern_find(pat, sc, s, n)) return -1;
    if (invert)
        for (size_t i = 0; i < sc->spans.n; i++) sc->spans.items[i].is_match = !sc->spans.items[i].is_match;
    return tok_split_spans(behavior, sc, s, at_start, out);
}

/* ByteLevel: optional prefix space, optional GPT-2 split, then every byte of
 * every piece becomes its character of the byte alphabet. */
static int tok_byte_level(const tok_pretok *p, tok_scratch *sc, const tok_pieces *in, tok_pieces *out,
                          tok_pieces *mid) {
    tok_pieces_clear(mid);
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        size_t n = in->items[i].len;
        tok_buf *b = &sc->buf[0];
        b->len = 0;
        if (p->add_prefix_space && (n == 0 || s[0] != ' ') && tok_buf_append(b, " ", 1))
            return ltri_fail(sc->err, "out of memory");
        if (tok_buf_append(b, s, n)) return ltri_fail(sc->err, "out of memory");
        if (p->use_regex) {
            if (tok_split_piece(&p->pattern, TOK_SPLIT_ISOLATED, 0, sc, b->data, b->len, in->items[i].at_start, mid))
                return -1;
        } else if (b->len && tok_pieces_push(mid, b->data, b->len, in->items[i].at_start)) {
            return ltri_fail(sc->err, "out of memory");
        }
    }
    for (size_t i = 0; i < mid->n; i++) {
        const unsigned char *s = (const unsigned char *)tok_piece_text(mid, i);
        tok_buf *b = &sc->buf[0];
        b->len = 0;
        for (size_t k = 0; k < mid->items[i].len; k++)
            if (tok_utf8_put(b, tok_byte_to_unicode(s[k]))) return ltri_fail(sc->err, "out of memory");
        if (tok_pieces_push(out, b->data, b->len, mid->items[i].at_start)) return ltri_fail(sc->err, "out of memory");
    }
    return 0;
}

/* Metaspace: spaces become the replacement, the prefix is added per the
 * scheme, then (split) each replacement opens a new piece. */
static int tok_metaspace(const tok_pretok *p, tok_scratch *sc, const tok_pieces *in, tok_pieces *out) {
    tok_pattern space = {.literal = (char *)" ", .literal_len = 1};
    for (size_t i = 0; i < in->n; i++) {
        const char *s = tok_piece_text(in, i);
        size_t n = in->items[i].len;
        int at_start = in->items[i].at_start;
        tok_buf *b = &sc->buf[1];
        if (tok_replace_all(&space, p->replacement, p->replacement_len, sc, s, n, b)) return -1;
        int starts = b->len >= p->replacement_len && !memcmp(b->data, p->replacement, p->replacement_len);
        int prepend = !starts && (p->prepend_scheme == TOK_PREPEND_ALWAYS ||
                                  (p->prepend_scheme == TOK_PREPEND_FIRST && at_start));
        tok_buf *c = &sc->buf[0];
        c->len = 0;
        if ((prepend && tok_buf_append(c, p->replacement, p->replacement_len)) || tok_buf_append(c, b->data, b->len))
            return ltri_fail(sc->err, "out of memory");
        if (p->split) {
            tok_pattern rep = {.literal = (char *)p->replacement, .literal_len = p->replacement_len};
            if (tok_split_piece(&rep, TOK_SPLIT_MERGED_WITH_NEXT, 0, sc, c->data, c->len, at_start, out)) return -1;
        } else if (c->len && tok_pieces_push(out, c->data, c->len, at_start)) {
            return ltri_fail(sc->err, "out of memory");
        }
    }
    return 0;
}

int tok_pretokenize(const tok_pretok *p, tok_scratch *sc, tok_pieces **cur, tok_pieces **spare) {
    if (!p) return 0;
    if (p->type == TOK_PRETOK_SEQUENCE) {
        for (int i = 0; i < p->n_children; i++)
            if (tok_pretokenize(&p->children[i], sc, cur, spare)) return -1;
        return 0;
    }
    tok_pieces *in = *cur, *out = *spare;
    tok_pieces_clear(out);
    int rc = 0;
    if (p->type == TOK_PRETOK_SPLIT) {
        for (size_t i = 0; i < in->n && !rc; i++)
            rc = tok_split_piece(&p->pattern, p->behavior, p->invert, sc, tok_piece_text(in, i), in->items[i].len,
                                 in->items[i].at_start, out);
    } else if (p->type == TOK_PRETOK_BYTE_LEVEL) {
        tok_pieces mid = {0};
        rc = tok_byte_level(p, sc, in, out, &mid);
        tok_pieces_free(&mid);
    } else {
        rc = tok_metaspace(p, sc, in, out);
    }
    if (rc) return -1;
    *cur = out;
    *spare = in;
    return 0;
}
