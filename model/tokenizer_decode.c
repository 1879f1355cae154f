/* Decoders of tokenizer.json: token strings -> text.
 *
 * Each decoder maps a list of strings to a list of strings (decode_chain in
 * tokenizers/src/decoders); the final text is their concatenation. Supported,
 * with the semantics of the tokenizers sources:
 *   ByteLevel    (pre_tokenizers/byte_level.rs): every character maps back to
 *                its byte; a token with a character outside the byte alphabet
 *                contributes its own UTF-8 bytes; the bytes of all tokens are
 *                joined and read like String::from_utf8_lossy;
 *   Replace      (normalizers/replace.rs), per token;
 *   ByteFallback (decoders/byte_fallback.rs): runs of "<0xXX>" tokens become
 *                their bytes when those are valid UTF-8, else one U+FFFD per
 *                byte;
 *   Fuse         (decoders/fuse.rs): joins all tokens into one;
 *   Strip        (decoders/strip.rs): removes up to `start` leading and `stop`
 *                trailing copies of a character from each token;
 *   Metaspace    (pre_tokenizers/metaspace.rs): the replacement character
 *                becomes a space, and disappears in the first token unless
 *                prepend_scheme is "never";
 *   Sequence.
 * With streaming set, the steps that need neighbours (joins, Strip, the lossy
 * UTF-8 read, Metaspace's first-token rule) are left out, giving the bytes one
 * token stands for on its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

static void tok_decoder_release(tok_decoder *d) {
    tok_pattern_free(&d->pattern);
    free(d->content);
    for (int i = 0; i < d->n_children; i++) tok_decoder_release(&d->children[i]);
    free(d->children);
}

void tok_decoder_free(tok_decoder *d) {
    if (!d) return;
    tok_decoder_release(d);
    free(d);
}

static int tok_json_count(const json_t *j, const char *key, const char *what, int *out, ltri_error *err) {
    const json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000)
        return ltri_fail(err, "%s.%s: expected a non-negative integer", what, key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* One character, copied into out (8 bytes). */
static int tok_json_one_char(const json_t *j, const char *key, const char *what, char *out, size_t *out_len,
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

static int tok_decoder_fill(tok_decoder *d, const json_t *j, const char *what, ltri_error *err) {
    const char *type;
    char w[256];
    if (tok_json_type(j, what, &type, err)) return -1;
    if (!strcmp(type, "ByteLevel")) {
        d->type = TOK_DEC_BYTE_LEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        d->type = TOK_DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->type = TOK_DEC_FUSE;
    } else if (!strcmp(type, "Replace")) {
        d->type = TOK_DEC_REPLACE;
        const char *s;
        size_t len;
        if (tok_json_string(j, "content", what, 1, &s, &len, err)) return -1;
        if (!(d->content = tok_strndup(s, len))) return ltri_fail(err, "out of memory");
        d->content_len = len;
        snprintf(w, sizeof(w), "%s.pattern", what);
        if (tok_pattern_from_json(&d->pattern, json_object_get(j, "pattern"), w, err)) return -1;
    } else if (!strcmp(type, "Strip")) {
        d->type = TOK_DEC_STRIP;
        char c[8];
        size_t len;
        if (tok_json_one_char(j, "content", what, c, &len, err)) return -1;
        if (!(d->content = tok_strndup(c, len))) return ltri_fail(err, "out of memory");
        d->content_len = len;
        if (tok_json_count(j, "start", what, &d->start, err) || tok_json_count(j, "stop", what, &d->stop, err))
            return -1;
    } else if (!strcmp(type, "Metaspace")) {
        d->type = TOK_DEC_METASPACE;
        if (tok_json_one_char(j, "replacement", what, d->replacement, &d->replacement_len, err)) return -1;
        const char *scheme;
        size_t slen;
        if (tok_json_string(j, "prepend_scheme", what, 0, &scheme, &slen, err)) return -1;
        d->prepend_scheme = TOK_PREPEND_ALWAYS;
        if (scheme && !strcmp(scheme, "first")) d->prepend_scheme = TOK_PREPEND_FIRST;
        else if (scheme && !strcmp(scheme, "never")) d->prepend_scheme = TOK_PREPEND_NEVER;
        else if (scheme && strcmp(scheme, "always"))
            return ltri_fail(err, "%s.prepend_scheme: unknown value \"%s\"", what, scheme);
        int aps;
        if (tok_json_bool(j, "add_prefix_space", what, 1, &aps, err)) return -1;
        if (!aps) d->prepend_scheme = TOK_PREPEND_NEVER;
    } else if (!strcmp(type, "Sequence")) {
        d->type = TOK_DEC_SEQUENCE;
        const json_t *list = json_object_get(j, "decoders");
        if (!json_is_array(list)) return ltri_fail(err, "%s.decoders: expected an array", what);
        size_t k = json_array_size(list);
        if (k && !(d->children = calloc(k, sizeof(*d->children)))) return ltri_fail(err, "out of memory");
        for (size_t i = 0; i < k; i++) {
            snprintf(w, sizeof(w), "%s.decoders[%zu]", what, i);
            d->n_children = (int)i + 1;
            if (tok_decoder_fill(&d->children[i], json_array_get(list, i), w, err)) return -1;
        }
    } else {
        return ltri_fail(err, "%s: decoder type \"%s\" is not supported (ByteLevel, Replace, ByteFallback, Fuse, "
                              "Strip, Metaspace, Sequence are)", what, type);
    }
    return 0;
}

int tok_decoder_parse(tok_decoder **out, const json_t *j, const char *what, ltri_error *err) {
    *out = NULL;
    if (!j || json_is_null(j)) return 0;
    tok_decoder *d = calloc(1, sizeof(*d));
    if (!d) return ltri_fail(err, "out of memory");
    if (tok_decoder_fill(d, j, what, err)) {
        tok_decoder_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* ---- the steps -------------------------------------------------------------- */

#define TOK_OOM(sc) ltri_fail((sc)->err, "out of memory")

/* Appends the bytes token s stands for in the byte alphabet, or s itself if a
 * character falls outside it. */
static int tok_byte_level_token(tok_buf *b, const char *s, size_t n) {
    size_t mark = b->len;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t k = tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
        int byte = tok_unicode_to_byte(cp);
        if (byte < 0) {
            b->len = mark;
            return tok_buf_append(b, s, n);
        }
        unsigned char c = (unsigned char)byte;
        if (tok_buf_append(b, &c, 1)) return -1;
        i += k;
    }
    return 0;
}

/* "<0xXX>" -> the byte, as byte_fallback.rs reads it (u8::from_str_radix, which
 * also takes "+X"); -1 otherwise. */
static int tok_fallback_byte(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0 && !(i == 3 && c == '+')) return -1;
        if (d >= 0) v = v * 16 + d;
    }
    return v;
}

/* Flushes pending fallback bytes into out as one token. */
static int tok_fallback_flush(tok_buf *bytes, tok_pieces *out) {
    if (!bytes->len) return 0;
    int rc;
    if (tok_utf8_invalid_at(bytes->data, bytes->len) < 0) {
        rc = tok_pieces_push(out, bytes->data, bytes->len, 0);
    } else {
        rc = 0;
        for (size_t i = 0; i < bytes->len && !rc; i++) rc = tok_pieces_push(out, "\xEF\xBF\xBD", 3, 0);
    }
    bytes->len = 0;
    return rc;
}

static int tok_strip(const tok_decoder *d, const char *s, size_t n, tok_pieces *out) {
    /* Positions of up to `start` leading and `stop` trailing copies of the
     * character, counted in characters as strip.rs does. */
    size_t from = 0, to = n, c = d->content_len;
    for (int i = 0; i < d->start && from + c <= n && !memcmp(s + from, d->content, c); i++) from += c;
    for (int i = 0; i < d->stop && to >= from + c && !memcmp(s + to - c, d->content, c); i++) to -= c;
    return tok_pieces_push(out, s + from, to - from, 0);
}

static int tok_metaspace_token(const tok_decoder *d, const char *s, size_t n, int drop, tok_buf *b) {
    b->len = 0;
    size_t r = d->replacement_len;
    for (size_t i = 0; i < n;) {
        if (i + r <= n && !memcmp(s + i, d->replacement, r)) {
            if (!drop && tok_buf_append(b, " ", 1)) return -1;
            i += r;
        } else {
            size_t k = tok_utf8_len((unsigned char)s[i]);
            if (k > n - i) k = n - i;
            if (tok_buf_append(b, s + i, k)) return -1;
            i += k;
        }
    }
    return 0;
}

static int tok_decode_step(const tok_decoder *d, tok_scratch *sc, const tok_pieces *in, tok_pieces *out,
                           int streaming) {
    tok_pieces_clear(out);
    tok_buf *b = &sc->buf[0];
    switch (d->type) {
    case TOK_DEC_BYTE_LEVEL:
        b->len = 0;
        for (size_t i = 0; i < in->n; i++) {
            if (streaming) b->len = 0;
            if (tok_byte_level_token(b, tok_piece_text(in, i), in->items[i].len)) return TOK_OOM(sc);
            if (streaming && tok_pieces_push(out, b->data, b->len, 0)) return TOK_OOM(sc);
        }
        if (!streaming) {
            tok_buf *c = &sc->buf[1];
            c->len = 0;
            if (tok_utf8_append_lossy(c, b->data ? b->data : "", b->len) || tok_pieces_push(out, c->data, c->len, 0))
                return TOK_OOM(sc);
        }
        return 0;
    case TOK_DEC_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            if (tok_replace_all(&d->pattern, d->content, d->content_len, sc, tok_piece_text(in, i), in->items[i].len,
                                b))
                return -1;
            if (tok_pieces_push(out, b->data, b->len, 0)) return TOK_OOM(sc);
        }
        return 0;
    case TOK_DEC_BYTE_FALLBACK:
        b->len = 0;
        for (size_t i = 0; i < in->n; i++) {
            const char *s = tok_piece_text(in, i);
            int byte = tok_fallback_byte(s, in->items[i].len);
            if (byte >= 0) {
                unsigned char c = (unsigned char)byte;
                if (streaming ? tok_pieces_push(out, &c, 1, 0) : tok_buf_append(b, &c, 1)) return TOK_OOM(sc);
                continue;
            }
            if (tok_fallback_flush(b, out) || tok_pieces_push(out, s, in->items[i].len, 0)) return TOK_OOM(sc);
        }
        return tok_fallback_flush(b, out) ? TOK_OOM(sc) : 0;
    case TOK_DEC_FUSE:
        if (streaming) break;
        b->len = 0;
        for (size_t i = 0; i < in->n; i++)
            if (tok_buf_append(b, tok_piece_text(in, i), in->items[i].len)) return TOK_OOM(sc);
        return tok_pieces_push(out, b->data ? b->data : "", b->len, 0) ? TOK_OOM(sc) : 0;
    case TOK_DEC_STRIP:
        if (streaming) break;
        for (size_t i = 0; i < in->n; i++)
            if (tok_strip(d, tok_piece_text(in, i), in->items[i].len, out)) return TOK_OOM(sc);
        return 0;
    case TOK_DEC_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            int drop = !streaming && i == 0 && d->prepend_scheme != TOK_PREPEND_NEVER;
            if (tok_metaspace_token(d, tok_piece_text(in, i), in->items[i].len, drop, b) ||
                tok_pieces_push(out, b->data ? b->data : "", b->len, 0))
                return TOK_OOM(sc);
        }
        return 0;
    case TOK_DEC_SEQUENCE: break; /* handled by the callers */
    }
    /* Steps left out while streaming, and Sequence: copy through. */
    for (size_t i = 0; i < in->n; i++)
        if (tok_pieces_push(out, tok_piece_text(in, i), in->items[i].len, 0)) return TOK_OOM(sc);
    return 0;
}

static int tok_decode_run(const tok_decoder *d, tok_scratch *sc, tok_pieces **cur, tok_pieces **spare,
                          int streaming) {
    if (d->type == TOK_DEC_SEQUENCE) {
        for (int i = 0; i < d->n_children; i++)
            if (tok_decode_run(&d->children[i], sc, cur, spare, streaming)) return -1;
        return 0;
    }
    if (tok_decode_step(d, sc, *cur, *spare, streaming)) return -1;
    tok_pieces *t = *cur;
    *cur = *spare;
    *spare = t;
    return 0;
}

int tok_decode_chain(const tok_decoder *d, tok_scratch *sc, tok_pieces **cur, tok_pieces **spare) {
    return d ? tok_decode_run(d, sc, cur, spare, 0) : 0;
}

int tok_decoder_token_bytes(const tok_decoder *d, tok_scratch *sc, const char *s, size_t n, tok_buf *out) {
    tok_pieces a = {0}, b = {0};
    tok_pieces *cur = &a, *spare = &b;
    int rc = tok_pieces_push(cur, s, n, 0) ? TOK_OOM(sc) : 0;
    if (!rc && d) rc = tok_decode_run(d, sc, &cur, &spare, 1);
    for (size_t i = 0; !rc && i < cur->n; i++)
        if (tok_buf_append(out, tok_piece_text(cur, i), cur->items[i].len)) rc = TOK_OOM(sc);
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    return rc;
}
