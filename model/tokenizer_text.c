/* Text helpers for the tokenizer: growable buffers, UTF-8 decoding with Rust's
 * error semantics, GPT-2's byte alphabet and two Unicode classes.
 *
 * UTF-8 follows the Unicode standard's well-formed byte sequences (Table 3-7);
 * an invalid sequence is measured as its "maximal subpart", which is what
 * Rust's String::from_utf8_lossy replaces with one U+FFFD and what the
 * `tokenizers` ByteLevel decoder therefore produces. */
#include <stdlib.h>
#include <string.h>
#include <unictype.h>

#include "model/tokenizer_internal.h"

/* ---- buffers -------------------------------------------------------------- */

static int tok_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return -1;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

int tok_buf_append(tok_buf *b, const void *p, size_t n) {
    /* +1 keeps room for a NUL that callers handing the text out may add. */
    if (tok_grow((void **)&b->data, &b->cap, b->len + n + 1, 1)) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void tok_buf_free(tok_buf *b) {
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int tok_pieces_push(tok_pieces *l, const void *p, size_t n, int at_start) {
    if (tok_grow((void **)&l->items, &l->cap, l->n + 1, sizeof(tok_piece))) return -1;
    size_t off = l->text.len;
    if (tok_buf_append(&l->text, p, n)) return -1;
    l->items[l->n++] = (tok_piece){off, n, at_start};
    return 0;
}

void tok_pieces_clear(tok_pieces *l) {
    l->n = 0;
    l->text.len = 0;
}

void tok_pieces_free(tok_pieces *l) {
    tok_buf_free(&l->text);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

int tok_ids_push(tok_ids *v, int32_t id) {
    if (tok_grow((void **)&v->data, &v->cap, v->len + 1, sizeof(int32_t))) return -1;
    v->data[v->len++] = id;
    return 0;
}

void tok_ids_free(tok_ids *v) {
    free(v->data);
    memset(v, 0, sizeof(*v));
}

/* ---- UTF-8 ---------------------------------------------------------------- */

size_t tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp) {
    unsigned char c = s[0];
    *cp = -1;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0; /* no overlong forms */
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
    } else {
        return 1; /* 0x80..0xC1, 0xF5..0xFF never start a character */
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) return i; /* truncated: the valid prefix is one invalid subpart */
        unsigned char d = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (d < l || d > h) return i;
        v = (v << 6) | (d & 0x3F);
    }
    *cp = (int32_t)v;
    return need + 1;
}

long tok_utf8_invalid_at(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int32_t cp;
        size_t k = tok_utf8_next(u + i, n - i, &cp);
        if (cp < 0) return (long)i;
        i += k;
    }
    return -1;
}

int tok_utf8_put(tok_buf *b, uint32_t cp) {
    unsigned char t[4];
    size_t k;
    if (cp < 0x80) {
        t[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        t[0] = (unsigned char)(0xC0 | (cp >> 6));
        t[1] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        t[0] = (unsigned char)(0xE0 | (cp >> 12));
        t[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        t[0] = (unsigned char)(0xF0 | (cp >> 18));
        t[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    return tok_buf_append(b, t, k);
}

int tok_utf8_append_lossy(tok_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the current stretch of valid bytes */
    while (i < n) {
        int32_t cp;
        size_t k = u[i] < 0x80 ? 1 : tok_utf8_next(u + i, n - i, &cp);
        if (u[i] >= 0x80 && cp < 0) {
            if (tok_buf_append(b, s + run, i - run) || tok_buf_append(b, "\xEF\xBF\xBD", 3)) return -1;
            run = i + k;
        }
        i += k;
    }
    return tok_buf_append(b, s + run, n - run);
}

/* ---- GPT-2 byte alphabet -------------------------------------------------- */

/* bytes_to_unicode() of GPT-2's encoder.py, which tokenizers copies: printable
 * Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for
 * themselves; the other 68 bytes, in increasing order, get U+0100, U+0101, ... */
static int tok_byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The 68 others are 0x00..0x20 (33), 0x7F..0xA0 (34) and 0xAD (1). */
uint32_t tok_byte_to_unicode(unsigned char b) {
    if (tok_byte_is_printable(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (b - 0x7Fu);
    return 256u + 67u; /* 0xAD */
}

int tok_unicode_to_byte(int32_t cp) {
    if (cp < 0) return -1;
    if (cp < 256) return tok_byte_is_printable((unsigned)cp) ? cp : -1;
    if (cp < 256 + 33) return cp - 256;
    if (cp < 256 + 67) return 0x7F + (cp - 256 - 33);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

/* ---- Unicode classes ------------------------------------------------------ */

int tok_is_white_space(uint32_t cp) { return uc_is_property_white_space(cp); }

/* Rust regex's \w (UTS #18 Annex C): Alphabetic, M, Nd, Pc, Join_Control. */
int tok_is_word_char(uint32_t cp) {
    return uc_is_property_alphabetic(cp) || uc_is_general_category(cp, UC_CATEGORY_M) ||
           uc_is_general_category(cp, UC_CATEGORY_Nd) || uc_is_general_category(cp, UC_CATEGORY_Pc) ||
           uc_is_property_join_control(cp);
}
