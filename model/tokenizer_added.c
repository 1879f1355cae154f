/* Added tokens ("added_tokens" in tokenizer.json): cutting them out of text.
 *
 * tokenizers/src/tokenizer/added_vocabulary.rs builds an Aho-Corasick
 * automaton with MatchKind::LeftmostLongest over the token contents and walks
 * its matches (find_matches): at the leftmost position where some token
 * starts, the longest one wins, and the search goes on after it. A match of a
 * single_word token is dropped unless no word character (\w) touches it on
 * either side; lstrip / rstrip widen the match over the whitespace (\s) to its
 * left / right. A byte trie gives the same leftmost-longest matches: the added
 * tokens of a real vocabulary are a few hundred short strings. */
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

int tok_trie_add(tok_trie *t, const char *s, size_t n, int32_t token) {
    if (n == 0) return 0; /* add_tokens ignores empty contents */
    if (t->n == 0) {
        if (!(t->nodes = malloc(64 * sizeof(*t->nodes)))) return -1;
        t->cap = 64;
        t->nodes[0] = (tok_trie_node){-1, -1, -1, 0};
        t->n = 1;
    }
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t child = t->nodes[node].first_child;
        while (child >= 0 && t->nodes[child].byte != c) child = t->nodes[child].next_sibling;
        if (child < 0) {
            if (t->n == t->cap) {
                tok_trie_node *q = realloc(t->nodes, 2 * t->cap * sizeof(*q));
                if (!q) return -1;
                t->nodes = q;
                t->cap *= 2;
            }
            child = (int32_t)t->n++;
            t->nodes[child] = (tok_trie_node){-1, t->nodes[node].first_child, -1, c};
            t->nodes[node].first_child = child;
        }
        node = child;
    }
    /* Two tokens with one content (possible after normalization): the first
     * pattern wins, as in the automaton. */
    if (t->nodes[node].token < 0) t->nodes[node].token = token;
    t->first_byte[(unsigned char)s[0] >> 3] |= (uint8_t)(1u << ((unsigned char)s[0] & 7));
    return 0;
}

void tok_trie_free(tok_trie *t) {
    free(t->nodes);
    memset(t, 0, sizeof(*t));
}

/* Length of the longest token that s[0..n) starts with (0: none). */
static size_t tok_trie_longest(const tok_trie *t, const char *s, size_t n, int32_t *token) {
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t child = t->nodes[node].first_child;
        while (child >= 0 && t->nodes[child].byte != (unsigned char)s[i]) child = t->nodes[child].next_sibling;
        if (child < 0) break;
        node = child;
        if (t->nodes[node].token >= 0) {
            best = i + 1;
            *token = t->nodes[node].token;
        }
    }
    return best;
}

/* The code point that ends s[0..n) (n > 0, valid UTF-8). */
static uint32_t tok_last_char(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    int32_t cp;
    tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
    return cp < 0 ? 0xFFFD : (uint32_t)cp;
}

static uint32_t tok_first_char(const char *s, size_t n) {
    int32_t cp;
    tok_utf8_next((const unsigned char *)s, n, &cp);
    return cp < 0 ? 0xFFFD : (uint32_t)cp;
}

static int tok_segments_push(tok_segments *v, size_t start, size_t end, int32_t token) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 16;
        tok_segment *q = realloc(v->items, c * sizeof(*q));
        if (!q) return -1;
        v->items = q;
        v->cap = c;
    }
    v->items[v->n++] = (tok_segment){start, end, token};
    return 0;
}

void tok_segments_free(tok_segments *s) {
    free(s->items);
    memset(s, 0, sizeof(*s));
}

int tok_added_split(const tok_trie *trie, const tok_added *added, const char *s, size_t n, tok_segments *out,
                    ltri_error *err) {
    out->n = 0;
    size_t done = 0; /* end of the last segment emitted */
    size_t pos = 0;  /* where the automaton resumes */
    while (trie->n && pos < n) {
        size_t start = 0, len = 0;
        int32_t token = -1;
        for (size_t i = pos; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (!(trie->first_byte[c >> 3] & (1u << (c & 7)))) continue;
            if ((len = tok_trie_longest(trie, s + i, n - i, &token))) {
                start = i;
                break;
            }
        }
        if (!len) break;
        size_t stop = start + len;
        pos = stop;
        const tok_added *a = &added[token];
        if (a->single_word) {
            int word_before = start > 0 && tok_is_word_char(tok_last_char(s, start));
            int word_after = stop < n && tok_is_word_char(tok_first_char(s + stop, n - stop));
            if (word_before || word_after) continue;
        }
        if (a->lstrip) {
            size_t k = start;
            while (k > 0) {
                size_t j = k - 1;
                while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                if (!tok_is_white_space(tok_first_char(s + j, k - j))) break;
                k = j;
            }
            /* Whitespace an earlier token already took stays with it. */
            start = k > done ? k : done;
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t k = tok_utf8_len((unsigned char)s[stop]);
                if (!tok_is_white_space(tok_first_char(s + stop, n - stop))) break;
                stop += k;
            }
        }
        if (done < start && tok_segments_push(out, done, start, -1)) return ltri_fail(err, "out of memory");
        if (tok_segments_push(out, start, stop, token)) return ltri_fail(err, "out of memory");
        done = stop;
    }
    if (done < n && tok_segments_push(out, done, n, -1)) return ltri_fail(err, "out of memory");
    return 0;
}
