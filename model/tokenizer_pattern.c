/* Split / Replace patterns: a literal string or a regex run by PCRE2.
 *
 * tokenizers compiles "Regex" patterns with Oniguruma (utils/onig.rs) and
 * escapes "String" patterns into a regex, so a String pattern is a literal
 * search. PCRE2 with PCRE2_UTF | PCRE2_UCP reads the patterns tokenizer.json
 * files carry (\p{L}, \p{N}, (?i:...), (?!\S)) the same way once \s, \p{L} and
 * \p{N} are given Oniguruma's meaning (tok_onig_compat). \w, \d and \b are not
 * rewritten: the Llama 3, GPT-2 and Qwen2 patterns do not use them. Matches are found
 * like onig's FindMatches iterator: leftmost, non-overlapping, and an empty
 * match right where the previous match ended is skipped by one character.
 * tokenizers' Pattern::find_matches then lists the gaps between matches too;
 * tok_pattern_find does the same. */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* Code points Oniguruma 6.9.10 (Unicode 16.0, bundled by tokenizers 0.2x) puts in
 * \p{L} and \p{N} that PCRE2 10.42 (Unicode 14.0) does not know: letters and
 * digits of the scripts Unicode 15 and 16 added. Measured by running every code
 * point through both engines; with a newer PCRE2 the ranges overlap its own and
 * change nothing. */
static const char tok_extra_letters[] =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}\\x{10D4A}-\\x{10D65}"
    "\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}"
    "\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}"
    "\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}"
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"
    "\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
static const char tok_extra_numbers[] =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}"
    "\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";

static int tok_put(tok_buf *out, const char *a, const char *b, const char *c) {
    return tok_buf_append(out, a, strlen(a)) || tok_buf_append(out, b, strlen(b)) || tok_buf_append(out, c, strlen(c));
}

/* Rewrites a tokenizer.json regex so that PCRE2 reads it as Oniguruma does.
 *   \s, \S: Oniguruma's \s is exactly U+0009..U+000D, U+0085 and the Z
 *     categories (doc/RE), i.e. White_Space; PCRE2's (with UCP) is \p{Z}, \h
 *     and \v, and \h also holds U+180E MONGOLIAN VOWEL SEPARATOR, which is Cf
 *     since Unicode 6.3. The property form works inside and outside a class.
 *   \p{L}, \p{N} (and \P{..} outside a class): the newer letters and digits
 *     above are added.
 * Character classes are tracked so that the additions go in as class members
 * there and as a class of their own elsewhere. Other escapes are copied. */
static int tok_onig_compat(const char *re, size_t n, tok_buf *out) {
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (c == '\\' && i + 1 < n) {
            char e = re[i + 1];
            int rc;
            if (e == 's' || e == 'S') {
                rc = tok_put(out, e == 's' ? "\\p{White_Space}" : "\\P{White_Space}", "", "");
            } else if ((e == 'p' || (e == 'P' && !in_class)) && i + 4 < n && re[i + 2] == '{' &&
                       (re[i + 3] == 'L' || re[i + 3] == 'N') && re[i + 4] == '}') {
                const char *prop = re[i + 3] == 'L' ? "\\p{L}" : "\\p{N}";
                const char *extra = re[i + 3] == 'L' ? tok_extra_letters : tok_extra_numbers;
                if (in_class) rc = tok_put(out, prop, extra, "");
                else rc = tok_put(out, e == 'p' ? "[" : "[^", prop, extra) || tok_put(out, "]", "", "");
                i += 3;
            } else {
                rc = tok_buf_append(out, re + i, 2);
            }
            if (rc) return -1;
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            /* A ']' right after '[' or '[^' is a member, not the end. */
            size_t k = i + 1;
            if (k < n && re[k] == '^') k++;
            if (k < n && re[k] == ']') k++;
            if (tok_buf_append(out, re + i, k - i)) return -1;
            i = k - 1;
            in_class = 1;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && re[i + 1] == ':') {
            /* a POSIX class such as [:alpha:] inside a class */
            const char *end = strstr(re + i, ":]");
            size_t k = end && (size_t)(end - re) < n ? (size_t)(end - re) + 2 : i + 1;
            if (tok_buf_append(out, re + i, k - i)) return -1;
            i = k - 1;
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        if (tok_buf_append(out, &c, 1)) return -1;
    }
    return 0;
}

int tok_pattern_compile(tok_pattern *p, const char *regex, size_t regex_len, const char *what, ltri_error *err) {
    memset(p, 0, sizeof(*p));
    int code;
    PCRE2_SIZE at;
    tok_buf re = {0};
    if (tok_onig_compat(regex, regex_len, &re)) {
        tok_buf_free(&re);
        return ltri_fail(err, "out of memory");
    }
    p->is_regex = 1;
    p->code = pcre2_compile((PCRE2_SPTR)(re.data ? re.data : ""), re.len, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    tok_buf_free(&re);
    if (!p->code) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0) strcpy((char *)msg, "unknown error");
        /* the offset is in the rewritten pattern; the message is what helps */
        return ltri_fail(err, "%s: regex does not compile: %s", what, (const char *)msg);
    }
    /* JIT is only a speed-up: without it (no JIT support in this libpcre2, or
     * no executable memory) the interpreter gives the same matches. */
    p->jit = pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

int tok_pattern_literal(tok_pattern *p, const char *s, size_t n, ltri_error *err) {
    memset(p, 0, sizeof(*p));
    p->literal = tok_strndup(s, n);
    if (!p->literal) return ltri_fail(err, "out of memory");
    p->literal_len = n;
    return 0;
}

int tok_pattern_from_json(tok_pattern *p, const json_t *j, const char *what, ltri_error *err) {
    memset(p, 0, sizeof(*p));
    if (!json_is_object(j))
        return ltri_fail(err, "%s: expected {\"String\": ...} or {\"Regex\": ...}, got %s", what,
                         j ? tok_json_type_name(j) : "nothing");
    const json_t *s = json_object_get(j, "String");
    const json_t *r = json_object_get(j, "Regex");
    if (json_is_string(s)) return tok_pattern_literal(p, json_string_value(s), json_string_length(s), err);
    if (json_is_string(r)) return tok_pattern_compile(p, json_string_value(r), json_string_length(r), what, err);
    return ltri_fail(err, "%s: expected {\"String\": \"...\"} or {\"Regex\": \"...\"}", what);
}

void tok_pattern_free(tok_pattern *p) {
    free(p->literal);
    if (p->code) pcre2_code_free(p->code);
    memset(p, 0, sizeof(*p));
}

static int tok_spans_push(tok_spans *v, size_t start, size_t end, int is_match) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        tok_span *q = realloc(v->items, c * sizeof(*q));
        if (!q) return -1;
        v->items = q;
        v->cap = c;
    }
    v->items[v->n++] = (tok_span){start, end, is_match};
    return 0;
}

/* Records the match [ms, me) after the gap since prev. */
static int tok_spans_match(tok_spans *v, size_t *prev, size_t ms, size_t me) {
    if (*prev != ms && tok_spans_push(v, *prev, ms, 0)) return -1;
    if (tok_spans_push(v, ms, me, 1)) return -1;
    *prev = me;
    return 0;
}

static const char *tok_find_literal(const char *s, size_t n, const char *lit, size_t k) {
    if (k == 0 || k > n) return NULL;
    const char *end = s + n - k;
    for (const char *p = s; p <= end; p++) {
        p = memchr(p, lit[0], (size_t)(end - p) + 1);
        if (!p) return NULL;
        if (memcmp(p, lit, k) == 0) return p;
    }
    return NULL;
}

int tok_pattern_find(const tok_pattern *p, tok_scratch *sc, const char *s, size_t n) {
    tok_spans *v = &sc->spans;
    v->n = 0;
    if (n == 0) {
        if (tok_spans_push(v, 0, 0, 0)) return ltri_fail(sc->err, "out of memory");
        return 0;
    }
    size_t prev = 0;
    if (!p->is_regex) {
        /* An empty String pattern matches nothing (normalizer.rs). */
        size_t pos = 0;
        const char *hit;
        while (pos < n && (hit = tok_find_literal(s + pos, n - pos, p->literal, p->literal_len))) {
            size_t ms = (size_t)(hit - s);
            if (tok_spans_match(v, &prev, ms, ms + p->literal_len)) return ltri_fail(sc->err, "out of memory");
            pos = ms + p->literal_len;
        }
    } else {
        /* onig's FindMatches, step for step: search from pos; an empty match
         * where the last match ended moves pos one character on. */
        size_t pos = 0, last_match_end = 0;
        int have_last = 0;
        while (pos <= n) {
            int rc = p->jit ? pcre2_jit_match(p->code, (PCRE2_SPTR)s, n, pos, 0, sc->match, NULL)
                            : pcre2_match(p->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, sc->match, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                if (pcre2_get_error_message(rc, msg, sizeof(msg)) < 0) strcpy((char *)msg, "unknown error");
                return ltri_fail(sc->err, "regex match failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->match);
            size_t ms = ov[0], me = ov[1];
            if (ms == me && have_last && last_match_end == me) {
                pos += pos < n ? tok_utf8_len((unsigned char)s[pos]) : 1;
                continue;
            }
            if (tok_spans_match(v, &prev, ms, me)) return ltri_fail(sc->err, "out of memory");
            pos = me;
            last_match_end = me;
            have_last = 1;
        }
    }
    if (prev != n && tok_spans_push(v, prev, n, 0)) return ltri_fail(sc->err, "out of memory");
    return 0;
}

/* Replaces every match of p in s by content (NormalizedString::replace). */
int tok_replace_all(const tok_pattern *p, const char *content, size_t content_len, tok_scratch *sc, const char *s,
                       size_t n, tok_buf *out) {
    out->len = 0;
    if (tok_pattern_find(p, sc, s, n)) return -1;
    for (size_t i = 0; i < sc->spans.n; i++) {
        const tok_span *sp = &sc->spans.items[i];
        int rc = sp->is_match ? tok_buf_append(out, content, content_len)
                              : tok_buf_append(out, s + sp->start, sp->end - sp->start);
        if (rc) return ltri_fail(sc->err, "out of memory");
    }
    return 0;
}
