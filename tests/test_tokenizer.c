/* Tests of model/tokenizer.c.
 *
 * Unit tests build small tokenizer.json files in a temporary directory, with
 * vocabularies and merges small enough to work the expected ids out by hand
 * (each expectation says how). Golden tests run every case that the Hugging
 * Face `tokenizers` library produced for the tokenizers under
 * tests/data/tokenizers/<name>/ (tokenizer.json + cases.json): ids without and
 * with special tokens, and the decoded text with and without special tokens.
 *
 *   test_tokenizer [DIR]   DIR: another folder of <name>/ golden sets
 *   LTRI_TEST_SEED=N       replays the random round-trip inputs
 *   LTRI_TOK_KEEP=1        keeps the temporary tokenizer.json files */
#include <dirent.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "model/tokenizer.h"
#include "tests/test_util.h"

static char g_tmpdir[256];
static int g_n_files;

/* ---- building tokenizer.json ------------------------------------------------ */

/* A BPE tokenizer.json with nothing but a model; tests add components. vocab:
 * NULL-terminated, ids in order; merges: "a b" strings, NULL-terminated. */
static json_t *bpe_json(const char *const *vocab, const char *const *merges) {
    json_t *v = json_object(), *m = json_array();
    for (int i = 0; vocab[i]; i++) json_object_set_new(v, vocab[i], json_integer(i));
    for (int i = 0; merges && merges[i]; i++) json_array_append_new(m, json_string(merges[i]));
    return json_pack("{s:s, s:n, s:n, s:[], s:n, s:n, s:n, s:n, s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
                     "version", "1.0", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer",
                     "post_processor", "decoder", "model", "type", "BPE", "dropout", "unk_token",
                     "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                     "ignore_merges", 0, "vocab", v, "merges", m);
}

static void add_token(json_t *root, int id, const char *content, int special, int lstrip, int rstrip,
                      int single_word, int normalized) {
    json_array_append_new(json_object_get(root, "added_tokens"),
                          json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                                    "single_word", single_word, "lstrip", lstrip, "rstrip", rstrip, "normalized",
                                    normalized, "special", special));
}

static void set_model(json_t *root, const char *key, json_t *value) {
    json_object_set_new(json_object_get(root, "model"), key, value);
}

/* Writes root (stolen) to a new file in the temp dir and loads it. */
static ltri_tokenizer *load_json(json_t *root, ltri_error *err) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tok%d.json", g_tmpdir, g_n_files++);
    if (json_dump_file(root, path, JSON_INDENT(1)) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    json_decref(root);
    return tokenizer_load(path, err);
}

static ltri_tokenizer *load_ok(json_t *root) {
    ltri_error err = {{0}};
    ltri_tokenizer *tok = load_json(root, &err);
    CHECK_MSG(tok != NULL, "load failed: %s", err.msg);
    return tok;
}

/* Writes raw text as a tokenizer.json (for syntax errors). */
static ltri_tokenizer *load_text(const char *text, ltri_error *err) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tok%d.json", g_tmpdir, g_n_files++);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    return tokenizer_load(path, err);
}

/* ---- checking ----------------------------------------------------------------- */

static void print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "    %s (%d):", label, n);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encodes text and compares with the expected ids (terminated by -1). */
static void check_encode_at(const char *file, int line, const ltri_tokenizer *tok, const char *text, int add_bos,
                            const int32_t *want) {
    ltri_error err = {{0}};
    int32_t *ids = NULL;
    int n = 0, n_want = 0;
    while (want[n_want] >= 0) n_want++;
    if (tokenizer_encode(tok, text, strlen(text), add_bos, &ids, &n, &err) != 0) {
        fprintf(stderr, "%s:%d: encode(\"%s\") failed: %s\n", file, line, text, err.msg);
        g_test_failures++;
        return;
    }
    if (n != n_want || memcmp(ids, want, (size_t)n * sizeof(int32_t)) != 0) {
        fprintf(stderr, "%s:%d: encode(\"%s\") gave other ids\n", file, line, text);
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
        g_test_failures++;
    }
    free(ids);
}
#define CHECK_ENCODE(tok, text, ...) \
    check_encode_at(__FILE__, __LINE__, tok, text, 0, (const int32_t[]){__VA_ARGS__, -1})
#define CHECK_ENCODE_BOS(tok, text, ...) \
    check_encode_at(__FILE__, __LINE__, tok, text, 1, (const int32_t[]){__VA_ARGS__, -1})

static void check_decode_at(const char *file, int line, const ltri_tokenizer *tok, const int32_t *ids, int n,
                            int skip_special, const char *want, size_t want_len) {
    ltri_error err = {{0}};
    char *text = NULL;
    int len = tokenizer_decode(tok, ids, n, skip_special, &text, &err);
    if (len < 0) {
        fprintf(stderr, "%s:%d: decode failed: %s\n", file, line, err.msg);
        g_test_failures++;
        return;
    }
    if ((size_t)len != want_len || memcmp(text, want, want_len) != 0 || text[len] != 0) {
        fprintf(stderr, "%s:%d: decode gave \"%s\" (%d bytes), want \"%s\" (%zu bytes)\n", file, line, text, len,
                want, want_len);
        g_test_failures++;
    }
    free(text);
}
#define CHECK_DECODE(tok, skip, want, ...)                                                                \
    check_decode_at(__FILE__, __LINE__, tok, (const int32_t[]){__VA_ARGS__},                              \
                    (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)), skip, want, strlen(want))

/* A load that must fail with a message containing every one of the given
 * fragments (NULL-terminated). */
static void check_load_error_at(const char *file, int line, ltri_tokenizer *tok, const ltri_error *err, ...) {
    if (tok) {
        fprintf(stderr, "%s:%d: load succeeded, expected an error\n", file, line);
        g_test_failures++;
        tokenizer_free(tok);
        return;
    }
    va_list ap;
    va_start(ap, err);
    for (const char *frag; (frag = va_arg(ap, const char *));) {
        if (!strstr(err->msg, frag)) {
            fprintf(stderr, "%s:%d: error \"%s\" does not mention \"%s\"\n", file, line, err->msg, frag);
            g_test_failures++;
        }
    }
    va_end(ap);
}
#define CHECK_LOAD_ERROR(tok, err, ...) check_load_error_at(__FILE__, __LINE__, tok, err, __VA_ARGS__, NULL)

/* ---- unit tests ------------------------------------------------------------------ */

/* Lowest rank first; equal ranks leftmost first; merged symbols merge again. */
static void test_merge_order(void) {
    const char *vocab[] = {"a", "b", "c", "ab", "bc", "abc", "aa", "aaaa", NULL};
    /*                     0    1    2    3     4     5      6     7 */
    {
        /* "b c" has rank 0, so "abc" -> a + bc, and no merge joins a, bc. */
        const char *merges[] = {"b c", "a b", NULL};
        ltri_tokenizer *tok = load_ok(bpe_json(vocab, merges));
        if (!tok) return;
        CHECK_ENCODE(tok, "abc", 0, 4);
        CHECK_ENCODE(tok, "abab", 3, 3);
        tokenizer_free(tok);
    }
    {
        /* "a b" first: ab + c, then "ab c" (rank 2) makes abc. */
        const char *merges[] = {"a b", "b c", "ab c", NULL};
        ltri_tokenizer *tok = load_ok(bpe_json(vocab, merges));
        if (!tok) return;
        CHECK_ENCODE(tok, "abc", 5);
        CHECK_ENCODE(tok, "cabc", 2, 5);
        tokenizer_free(tok);
    }
    {
        /* Ties: "aaa" merges the leftmost pair: aa + a. "aaaaa": aa aa a, then
         * "aa aa" (rank 1) joins the first two: aaaa + a. */
        const char *merges[] = {"a a", "aa aa", NULL};
        ltri_tokenizer *tok = load_ok(bpe_json(vocab, merges));
        if (!tok) return;
        CHECK_ENCODE(tok, "aaa", 6, 0);
        CHECK_ENCODE(tok, "aaaaa", 7, 0);
        CHECK_ENCODE(tok, "aaaaaa", 7, 6);
        tokenizer_free(tok);
    }
    {
        /* Merges written as pairs, the newer tokenizer.json format. */
        json_t *root = bpe_json(vocab, NULL);
        set_model(root, "merges", json_pack("[[s, s], [s, s]]", "b", "c", "a", "bc"));
        ltri_tokenizer *tok = load_ok(root);
        if (!tok) return;
        CHECK_ENCODE(tok, "abc", 5);
        CHECK_ENCODE(tok, "ab", 0, 1);
        tokenizer_free(tok);
    }
    {
        /* A character outside the vocabulary with neither unk nor byte
         * fallback is dropped, as tokenizers drops it. */
        const char *merges[] = {NULL};
        ltri_tokenizer *tok = load_ok(bpe_json(vocab, merges));
        if (!tok) return;
        CHECK_ENCODE(tok, "axb", 0, 1);
        tokenizer_free(tok);
    }
}

/* A vocabulary key "\u0000", which jansson's parser refuses in object keys
 * (tokenizer_json.c works around it). */
static void test_nul_key(void) {
    const char *vocab[] = {"a", NULL};
    json_t *root = bpe_json(vocab, NULL);
    json_object_setn_new(json_object_get(json_object_get(root, "model"), "vocab"), "\0", 1, json_integer(1));
    ltri_tokenizer *tok = load_ok(root);
    if (!tok) return;
    ltri_error err = {{0}};
    int32_t *ids = NULL;
    int n = 0;
    CHECK(tokenizer_encode(tok, "a\0a", 3, 0, &ids, &n, &err) == 0 && n == 3 && ids[0] == 0 && ids[1] == 1 &&
          ids[2] == 0);
    free(ids);
    int len = 0;
    const char *s = tokenizer_token_bytes(tok, 1, &len);
    CHECK(s && len == 1 && s[0] == 0);
    tokenizer_free(tok);
}

/* A long word costs O(n log n): 200000 characters finish and merge right. */
static void test_long_word(void) {
    const char *vocab[] = {"a", "b", "ab", "abab", NULL};
    const char *merges[] = {"a b", "ab ab", NULL};
    ltri_tokenizer *tok = load_ok(bpe_json(vocab, merges));
    if (!tok) return;
    size_t n = 200000; /* "ab" * 100000 -> "abab" * 50000 */
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i++) text[i] = i % 2 ? 'b' : 'a';
    text[n] = 0;
    ltri_error err = {{0}};
    int32_t *ids = NULL;
    int n_ids = 0;
    CHECK_MSG(tokenizer_encode(tok, text, n, 0, &ids, &n_ids, &err) == 0, "%s", err.msg);
    CHECK_MSG(n_ids == 50000, "got %d ids", n_ids);
    int all = 1;
    for (int i = 0; i < n_ids; i++) all &= ids[i] == 3;
    CHECK(all);
    free(ids);
    free(text);
    tokenizer_free(tok);
}

static void test_ignore_merges(void) {
    const char *vocab[] = {"a", "b", "c", "ab", "abc", NULL};
    const char *merges[] = {"a b", NULL}; /* no merge reaches "abc" */
    json_t *root = bpe_json(vocab, merges);
    ltri_tokenizer *tok = load_ok(json_deep_copy(root));
    if (tok) {
        CHECK_ENCODE(tok, "abc", 3, 2);
        tokenizer_free(tok);
    }
    set_model(root, "ignore_merges", json_true());
    tok = load_ok(root);
    if (tok) {
        CHECK_ENCODE(tok, "abc", 4); /* the word is in the vocabulary */
        CHECK_ENCODE(tok, "abcc", 3, 2, 2);
        tokenizer_free(tok);
    }
}

static void test_added_tokens(void) {
    const char *vocab[] = {"a", "b", " ", "x", NULL};
    const char *merges[] = {NULL};
    json_t *root = bpe_json(vocab, merges);
    add_token(root, 4, "<x>", 1, 0, 0, 0, 0);
    add_token(root, 5, "<x>y", 0, 0, 0, 0, 0);  /* longer, not special */
    add_token(root, 6, "[L]", 0, 1, 0, 0, 0);   /* lstrip */
    add_token(root, 7, "[R]", 0, 0, 1, 0, 0);   /* rstrip */
    add_token(root, 8, "w", 0, 0, 0, 1, 0);     /* single_word */
    add_token(root, 9, "<pad>", 1, 0, 0, 0, 0); /* beyond the model vocab */
    ltri_tokenizer *tok = load_ok(root);
    if (!tok) return;
    CHECK(tokenizer_vocab_size(tok) == 10);
    CHECK_ENCODE(tok, "a<x>b", 0, 4, 1);
    CHECK_ENCODE(tok, "<x><x>", 4, 4);
    CHECK_ENCODE(tok, "a<x>yb", 0, 5, 1);          /* leftmost-longest */
    CHECK_ENCODE(tok, "a  [L]b", 0, 6, 1);         /* [L] takes the spaces on its left */
    CHECK_ENCODE(tok, "a[R]  b", 0, 7, 1);         /* [R] those on its right */
    CHECK_ENCODE(tok, "a [R] [L] b", 0, 2, 7, 6, 2, 1); /* the spaces go to [R] first */
    CHECK_ENCODE(tok, "w a w", 8, 2, 0, 2, 8);     /* single_word: whole words only */
    CHECK_ENCODE(tok, "aw", 0);                    /* inside a word: no match, "w" is not in the model */
    CHECK_ENCODE(tok, "<pad>", 9);
    CHECK(tokenizer_token_id(tok, "<x>") == 4);
    CHECK(tokenizer_token_id(tok, "b") == 1);
    CHECK(tokenizer_token_id(tok, "zz") == -1);
    CHECK(tokenizer_is_special(tok, 4) && !tokenizer_is_special(tok, 5) && !tokenizer_is_special(tok, 0));
    /* No decoder: tokens are joined with spaces (TokenizerImpl::decode). */
    CHECK_DECODE(tok, 0, "a <x> b <pad>", 0, 4, 1, 9);
    CHECK_DECODE(tok, 1, "a b", 0, 4, 1, 9);
    CHECK_DECODE(tok, 1, "a <x>y", 0, 5); /* not special: kept */
    int len = 0;
    const char *s = tokenizer_token_bytes(tok, 4, &len);
    CHECK(s && len == 3 && !memcmp(s, "<x>", 3));
    CHECK(tokenizer_token_bytes(tok, 10, &len) == NULL && tokenizer_token_bytes(tok, -1, &len) == NULL);
    tokenizer_free(tok);
}

/* Byte fallback, the unk token, and the SentencePiece-style pipeline:
 * Prepend("▁") + Replace(" " -> "▁"), decoder Replace/ByteFallback/Fuse/Strip,
 * TemplateProcessing adding "<s>". */
static void test_sentencepiece(void) {
    /* ids: 0 <unk>, 1 <s>, 2..257 <0x00>..<0xFF>, then pieces */
    const char *base[] = {"<unk>", "<s>", NULL};
    const char *pieces[] = {"▁", "a", "b", "▁a", "▁b", "é", NULL};
    /*                      258  259  260  261   262   263 */
    const char *vocab[2 + 256 + 6 + 1];
    static char names[256][8];
    int n = 0;
    for (int i = 0; base[i]; i++) vocab[n++] = base[i];
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof(names[b]), "<0x%02X>", b);
        vocab[n++] = names[b];
    }
    for (int i = 0; pieces[i]; i++) vocab[n++] = pieces[i];
    vocab[n] = NULL;
    const char *merges[] = {"▁ a", "▁ b", NULL};
    json_t *root = bpe_json(vocab, merges);
    set_model(root, "byte_fallback", json_true());
    set_model(root, "unk_token", json_string("<unk>"));
    set_model(root, "fuse_unk", json_true());
    add_token(root, 0, "<unk>", 1, 0, 0, 0, 0);
    add_token(root, 1, "<s>", 1, 0, 0, 0, 0);
    json_object_set_new(root, "normalizer",
                        json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers",
                                  "type", "Prepend", "prepend", "▁", "type", "Replace", "pattern", "String", " ",
                                  "content", "▁"));
    json_object_set_new(root, "decoder",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type",
                                  "Sequence", "decoders", "type", "Replace", "pattern", "String", "▁", "content", " ",
                                  "type", "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", 1,
                                  "stop", 0));
    json_object_set_new(root, "post_processor",
                        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                                  "{s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                                  "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
                                  "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>", "type_id",
                                  0, "Sequence", "id", "A", "type_id", 0, "Sequence", "id", "B", "type_id", 1,
                                  "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>"));
    json_t *copy = json_deep_copy(root);
    ltri_tokenizer *tok = load_ok(root);
    if (!tok) {
        json_decref(copy);
        return;
    }
    CHECK(tokenizer_bos_id(tok) == 1);
    /* "a b" -> "▁a▁b" -> ▁a ▁b */
    CHECK_ENCODE(tok, "a b", 261, 262);
    CHECK_ENCODE_BOS(tok, "a b", 1, 261, 262);
    /* "aé" -> ▁a é; "aè": è (C3 A8) is not in the vocabulary -> bytes */
    CHECK_ENCODE(tok, "aé", 261, 263);
    CHECK_ENCODE(tok, "aè", 261, 2 + 0xC3, 2 + 0xA8);
    /* "<s>a": the normalizer runs on "a" alone -> <s> ▁a */
    CHECK_ENCODE(tok, "<s>a", 1, 261);
    CHECK_DECODE(tok, 0, "a b", 261, 262);         /* Strip removes the leading space */
    CHECK_DECODE(tok, 0, "<s> a", 1, 261);         /* ... which is not leading here */
    CHECK_DECODE(tok, 1, "a", 1, 261);
    CHECK_DECODE(tok, 0, "aè", 261, 2 + 0xC3, 2 + 0xA8);
    CHECK_DECODE(tok, 0, "a\xEF\xBF\xBD", 261, 2 + 0xC3);           /* a lone lead byte */
    CHECK_DECODE(tok, 0, "\xEF\xBF\xBD\xEF\xBF\xBD", 2 + 0xC3, 2 + 0x28); /* one U+FFFD per byte */
    int len = 0;
    const char *s = tokenizer_token_bytes(tok, 261, &len);
    CHECK(s && len == 2 && !memcmp(s, " a", 2));
    s = tokenizer_token_bytes(tok, 2 + 0xC3, &len);
    CHECK(s && len == 1 && (unsigned char)s[0] == 0xC3);
    tokenizer_free(tok);

    /* Without byte_fallback the unknown character becomes <unk>; fuse_unk
     * joins neighbouring unknowns into one. */
    set_model(copy, "byte_fallback", json_false());
    tok = load_ok(copy);
    if (!tok) return;
    CHECK_ENCODE(tok, "aèè", 261, 0);
    CHECK_ENCODE(tok, "èaè", 258, 0, 259, 0); /* "▁è" -> ▁ is known, then è */
    tokenizer_free(tok);
}

/* The five delimiter behaviours of Split, and invert, on the example of
 * tokenizers' normalizer.rs: "the-final--countdown". ignore_merges makes each
 * piece that is in the vocabulary one token, so the ids spell the pieces. */
static void test_split_behaviors(void) {
    const char *vocab[] = {"the", "final", "countdown", "-", "the-", "final-", "-final", "-countdown", "--", NULL};
    /*                     0      1        2            3    4       5         6         7             8 */
    const char *behaviors[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const int32_t want[5][8] = {
        {0, 1, 2, -1},
        {0, 3, 1, 3, 3, 2, -1},
        {4, 5, 3, 2, -1},
        {0, 6, 3, 7, -1},
        {0, 3, 1, 8, 2, -1},
    };
    for (int b = 0; b < 5; b++) {
        json_t *root = bpe_json(vocab, NULL);
        set_model(root, "ignore_merges", json_true());
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "String", "-",
                                      "behavior", behaviors[b], "invert", 0));
        ltri_tokenizer *tok = load_ok(root);
        if (!tok) continue;
        fprintf(stderr, "  split behavior %s\n", behaviors[b]);
        check_encode_at(__FILE__, __LINE__, tok, "the-final--countdown", 0, want[b]);
        tokenizer_free(tok);
    }
    /* invert: the regex names the words, so Removed drops what lies between. */
    json_t *root = bpe_json(vocab, NULL);
    set_model(root, "ignore_merges", json_true());
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", "\\p{L}+",
                                  "behavior", "Removed", "invert", 1));
    ltri_tokenizer *tok = load_ok(root);
    if (tok) {
        CHECK_ENCODE(tok, "the-final--countdown", 0, 1, 2);
        tokenizer_free(tok);
    }
}

/* Metaspace's prepend_scheme "first" prepends only at the start of the text,
 * "always" at the start of every stretch between added tokens. */
static void test_metaspace(void) {
    const char *vocab[] = {"▁", "a", "▁a", "<s>", NULL};
    const char *merges[] = {"▁ a", NULL};
    for (int first = 0; first < 2; first++) {
        json_t *root = bpe_json(vocab, merges);
        add_token(root, 3, "<s>", 1, 0, 0, 0, 0);
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "▁",
                                      "prepend_scheme", first ? "first" : "always", "split", 1));
        json_object_set_new(root, "decoder",
                            json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "▁",
                                      "prepend_scheme", first ? "first" : "always", "split", 1));
        ltri_tokenizer *tok = load_ok(root);
        if (!tok) continue;
        CHECK_ENCODE(tok, "a a", 2, 2);
        if (first) CHECK_ENCODE(tok, "a<s>a", 2, 3, 1);
        else CHECK_ENCODE(tok, "a<s>a", 2, 3, 2);
        CHECK_DECODE(tok, 0, "a a", 2, 2);
        tokenizer_free(tok);
    }
}

/* A byte-level tokenizer: the 256 byte characters and a few merges, the GPT-2
 * pre-tokenizer, the ByteLevel decoder. */
static ltri_tokenizer *byte_level_tokenizer(int add_prefix_space) {
    static char chars[256][4];
    const char *vocab[256 + 4];
    for (int b = 0; b < 256; b++) {
        uint32_t cp = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) ? (uint32_t)b
                      : b <= 0x20                                                                   ? 256u + (uint32_t)b
                      : b <= 0xA0                                                                   ? 256u + 33u + (uint32_t)(b - 0x7F)
                                                                                                    : 256u + 67u;
        if (cp < 0x80) {
            chars[b][0] = (char)cp;
            chars[b][1] = 0;
        } else {
            chars[b][0] = (char)(0xC0 | (cp >> 6));
            chars[b][1] = (char)(0x80 | (cp & 0x3F));
            chars[b][2] = 0;
        }
        vocab[b] = chars[b];
    }
    vocab[256] = "Ġh"; /* 256 */
    vocab[257] = "Ġhi"; /* 257 */
    vocab[258] = "<|end|>"; /* 258, also an added token */
    vocab[259] = NULL;
    const char *merges[] = {"Ġ h", "Ġh i", NULL};
    json_t *root = bpe_json(vocab, merges);
    add_token(root, 258, "<|end|>", 1, 0, 0, 0, 0);
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", add_prefix_space,
                                  "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(root, "decoder",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1,
                                  "trim_offsets", 1, "use_regex", 1));
    return load_ok(root);
}

static void test_byte_level(void) {
    ltri_tokenizer *tok = byte_level_tokenizer(0);
    if (!tok) return;
    /* "hi hi": pieces "hi", " hi" -> h i, Ġhi */
    CHECK_ENCODE(tok, "hi hi", 'h', 'i', 257);
    CHECK_ENCODE(tok, "\n", 10); /* byte 0x0A is id 10 */
    CHECK_ENCODE(tok, "é", 0xC3, 0xA9);
    CHECK_DECODE(tok, 0, "hi hi", 'h', 'i', 257);
    CHECK_DECODE(tok, 0, "é<|end|>", 0xC3, 0xA9, 258);
    CHECK_DECODE(tok, 1, "é", 0xC3, 0xA9, 258);
    /* Lossy UTF-8 like Rust: E2 82 (truncated) -> one U+FFFD; F0 80 -> two
     * (F0 cannot be followed by 80); FF -> one. */
    CHECK_DECODE(tok, 0, "\xEF\xBF\xBD" "A", 0xE2, 0x82, 'A');
    CHECK_DECODE(tok, 0, "\xEF\xBF\xBD\xEF\xBF\xBD", 0xF0, 0x80);
    CHECK_DECODE(tok, 0, "x\xEF\xBF\xBD", 'x', 0xFF);
    CHECK_DECODE(tok, 0, "ab", 'a', 99999, 'b'); /* unknown ids are dropped */
    int len = 0;
    const char *s = tokenizer_token_bytes(tok, 257, &len);
    CHECK(s && len == 3 && !memcmp(s, " hi", 3));
    s = tokenizer_token_bytes(tok, 0xE2, &len);
    CHECK(s && len == 1 && (unsigned char)s[0] == 0xE2);
    CHECK(tokenizer_bos_id(tok) == -1);
    tokenizer_free(tok);

    tok = byte_level_tokenizer(1); /* add_prefix_space: "hi" -> " hi" */
    if (!tok) return;
    CHECK_ENCODE(tok, "hi", 257);
    CHECK_ENCODE(tok, " hi", 257);
    CHECK_ENCODE(tok, "hi<|end|>hi", 257, 258, 257);
    tokenizer_free(tok);
}

/* decode(encode(s)) == s for random valid UTF-8 through a byte-level
 * tokenizer. */
static void test_round_trip(uint64_t seed) {
    ltri_tokenizer *tok = byte_level_tokenizer(0);
    if (!tok) return;
    ltri_rng rng;
    ltri_rng_seed(&rng, seed);
    char text[1024];
    for (int iter = 0; iter < 500; iter++) {
        size_t n = 0;
        int n_chars = 1 + (int)(ltri_rng_u32(&rng) % 60);
        for (int c = 0; c < n_chars; c++) {
            uint32_t r = ltri_rng_u32(&rng) % 100, cp;
            if (r < 40) cp = 0x20 + ltri_rng_u32(&rng) % 0x5F;           /* ASCII */
            else if (r < 50) cp = ltri_rng_u32(&rng) % 0x20;             /* controls, \0 included */
            else if (r < 65) cp = 0x80 + ltri_rng_u32(&rng) % 0x780;     /* 2 bytes */
            else if (r < 85) cp = 0x800 + ltri_rng_u32(&rng) % 0xF800;   /* 3 bytes */
            else cp = 0x10000 + ltri_rng_u32(&rng) % 0x100000;           /* 4 bytes */
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = ' ';
            if (cp < 0x80) text[n++] = (char)cp;
            else if (cp < 0x800) {
                text[n++] = (char)(0xC0 | (cp >> 6));
                text[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                text[n++] = (char)(0xE0 | (cp >> 12));
                text[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                text[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                text[n++] = (char)(0xF0 | (cp >> 18));
                text[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                text[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                text[n++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        ltri_error err = {{0}};
        int32_t *ids = NULL;
        int n_ids = 0;
        char *back = NULL;
        if (tokenizer_encode(tok, text, n, 0, &ids, &n_ids, &err) != 0) {
            CHECK_MSG(0, "iteration %d: encode failed: %s", iter, err.msg);
            break;
        }
        int len = tokenizer_decode(tok, ids, n_ids, 0, &back, &err);
        CHECK_MSG(len == (int)n && back && memcmp(back, text, n) == 0, "iteration %d (seed %llu): round trip differs",
                  iter, (unsigned long long)seed);
        /* The token bytes, concatenated, are the text too. */
        size_t at = 0;
        int same = 1;
        for (int i = 0; i < n_ids && same; i++) {
            int k = 0;
            const char *s = tokenizer_token_bytes(tok, ids[i], &k);
            same = s && at + (size_t)k <= n && !memcmp(text + at, s, (size_t)k);
            at += (size_t)k;
        }
        CHECK_MSG(same && at == n, "iteration %d (seed %llu): token bytes differ", iter, (unsigned long long)seed);
        free(ids);
        free(back);
        if (g_test_failures) break;
    }
    tokenizer_free(tok);
}

static void test_invalid_input(void) {
    const char *vocab[] = {"a", "b", NULL};
    ltri_tokenizer *tok = load_ok(bpe_json(vocab, NULL));
    if (!tok) return;
    const char *bad[] = {"ab\xff", "ab\xc3", "a\xed\xa0\x80", "\xc0\xaf", "ab\xf4\x90\x80\x80"};
    const char *at[] = {"at byte 2", "at byte 2", "at byte 1", "at byte 0", "at byte 2"};
    for (int i = 0; i < 5; i++) {
        ltri_error err = {{0}};
        int32_t *ids = (int32_t *)&err;
        int n = 7;
        int rc = tokenizer_encode(tok, bad[i], strlen(bad[i]), 0, &ids, &n, &err);
        CHECK_MSG(rc == -1 && ids == NULL && n == 0, "case %d: rc %d", i, rc);
        CHECK_MSG(strstr(err.msg, "not valid UTF-8") && strstr(err.msg, at[i]), "case %d: \"%s\"", i, err.msg);
    }
    /* An empty prompt is no error: no ids. */
    ltri_error err = {{0}};
    int32_t *ids = NULL;
    int n = -1;
    CHECK(tokenizer_encode(tok, "", 0, 1, &ids, &n, &err) == 0 && n == 0);
    free(ids);
    tokenizer_free(tok);
}

static void test_malformed_files(void) {
    const char *vocab[] = {"a", "b", "ab", NULL};
    const char *merges[] = {"a b", NULL};
    ltri_error err;
    json_t *root;

    memset(&err, 0, sizeof(err));
    CHECK_LOAD_ERROR(load_text("{\"model\": ", &err), &err, "tok");
    CHECK_LOAD_ERROR(tokenizer_load("/nonexistent/tokenizer.json", &err), &err, "/nonexistent/tokenizer.json");

    root = bpe_json(vocab, merges);
    json_object_del(root, "model");
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model");

    root = bpe_json(vocab, merges);
    set_model(root, "type", json_string("Unigram"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.type", "Unigram");

    root = bpe_json(vocab, merges);
    json_array_append_new(json_object_get(json_object_get(root, "model"), "merges"), json_string("ab"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.merges[1]");

    root = bpe_json(vocab, merges);
    json_array_append_new(json_object_get(json_object_get(root, "model"), "merges"), json_pack("[i, i]", 1, 2));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.merges[1]");

    root = bpe_json(vocab, merges);
    json_array_append_new(json_object_get(json_object_get(root, "model"), "merges"), json_pack("[s, s]", "a", "z"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.merges[1]", "\"z\"", "vocabulary");

    root = bpe_json(vocab, merges);
    json_array_append_new(json_object_get(json_object_get(root, "model"), "merges"), json_string("b a"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.merges[1]", "\"ba\"");

    root = bpe_json(vocab, merges);
    set_model(root, "vocab", json_pack("{s:s}", "a", "zero"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "model.vocab");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "pre_tokenizer", json_pack("{s:s}", "type", "Whitespace"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "pre_tokenizer", "Whitespace");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}]}", "type", "Sequence", "pretokenizers", "type",
                                  "Split", "pattern", "Regex", "(unclosed", "behavior", "Isolated"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "pre_tokenizer.pretokenizers[0].pattern", "regex");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:{s:s}, s:s}", "type", "Split", "pattern", "String", "-", "behavior", "Odd"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "pre_tokenizer.behavior", "Odd");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "Lowercase"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "normalizer", "Lowercase");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "decoder", json_pack("{s:s}", "type", "WordPiece"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "decoder", "WordPiece");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "post_processor", json_pack("{s:s}", "type", "BertProcessing"));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "post_processor", "BertProcessing");

    root = bpe_json(vocab, merges);
    add_token(root, 5, "<x>", 1, 0, 0, 0, 0);
    json_object_del(json_array_get(json_object_get(root, "added_tokens"), 0), "content");
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "added_tokens[0].content");

    root = bpe_json(vocab, merges);
    json_object_set_new(root, "truncation", json_pack("{s:i}", "max_length", 8));
    CHECK_LOAD_ERROR(load_json(root, &err), &err, "truncation");

    /* An unk_token missing from the vocabulary fails when it is needed. */
    root = bpe_json(vocab, merges);
    set_model(root, "unk_token", json_string("<unk>"));
    ltri_tokenizer *tok = load_ok(root);
    if (tok) {
        int32_t *ids = NULL;
        int n = 0;
        CHECK(tokenizer_encode(tok, "ab", 2, 0, &ids, &n, &err) == 0 && n == 1 && ids[0] == 2);
        free(ids);
        CHECK(tokenizer_encode(tok, "az", 2, 0, &ids, &n, &err) == -1 && strstr(err.msg, "unk_token"));
        tokenizer_free(tok);
    }
}

/* ---- golden tests ------------------------------------------------------------------ */

static int ids_equal(const int32_t *ids, int n, const json_t *want) {
    if (!json_is_array(want) || json_array_size(want) != (size_t)n) return 0;
    for (int i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, (size_t)i)) != ids[i]) return 0;
    return 1;
}

/* Prints want and got around their first difference. */
static void print_id_diff(const json_t *want, const int32_t *got, int n_got) {
    int n_want = (int)json_array_size(want), at = 0;
    while (at < n_want && at < n_got && json_integer_value(json_array_get(want, (size_t)at)) == got[at]) at++;
    int from = at > 5 ? at - 5 : 0;
    fprintf(stderr, "    first difference at index %d (want %d ids, got %d)\n    want:", at, n_want, n_got);
    for (int i = from; i < n_want && i < from + 20; i++)
        fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, (size_t)i)));
    fprintf(stderr, "\n    got: ");
    for (int i = from; i < n_got && i < from + 20; i++) fprintf(stderr, " %d", got[i]);
    fprintf(stderr, "\n");
}

/* Runs one golden set; returns the number of cases checked. */
static int golden_set(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/tokenizer.json", dir, name);
    ltri_error err = {{0}};
    ltri_tokenizer *tok = tokenizer_load(path, &err);
    if (!tok) {
        CHECK_MSG(0, "%s: %s", name, err.msg);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/%s/cases.json", dir, name);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    const json_t *cases = json_object_get(root, "cases");
    if (!json_is_array(cases)) {
        CHECK_MSG(0, "%s: no \"cases\" array (%s)", path, root ? "" : je.text);
        json_decref(root);
        tokenizer_free(tok);
        return 0;
    }
    const json_t *bos = json_object_get(root, "bos_id");
    if (bos) CHECK_MSG(tokenizer_bos_id(tok) == (json_is_integer(bos) ? json_integer_value(bos) : -1),
                       "%s: bos id %d", name, tokenizer_bos_id(tok));
    int n_fail = 0, n_cases = (int)json_array_size(cases);
    for (int c = 0; c < n_cases; c++) {
        const json_t *k = json_array_get(cases, (size_t)c);
        const json_t *text = json_object_get(k, "text");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text);
        int before = g_test_failures;
        for (int add = 0; add < 2; add++) {
            const json_t *want = json_object_get(k, add ? "ids_with_bos" : "ids");
            if (!want) continue;
            int32_t *ids = NULL;
            int n = 0;
            if (tokenizer_encode(tok, s, len, add, &ids, &n, &err) != 0) {
                CHECK_MSG(0, "%s case %d: encode failed: %s", name, c, err.msg);
                continue;
            }
            if (!ids_equal(ids, n, want)) {
                CHECK_MSG(0, "%s case %d (add_bos %d): ids differ for text \"%.200s\"", name, c, add, s);
                print_id_diff(want, ids, n);
            }
            free(ids);
        }
        const json_t *ids_j = json_object_get(k, "ids");
        int n = (int)json_array_size(ids_j);
        int32_t *ids = malloc(((size_t)n + 1) * sizeof(int32_t));
        for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(ids_j, (size_t)i));
        for (int skip = 0; skip < 2; skip++) {
            const json_t *want = json_object_get(k, skip ? "decoded_skip_special" : "decoded");
            if (!want) continue;
            char *out = NULL;
            int got = tokenizer_decode(tok, ids, n, skip, &out, &err);
            if (got < 0) {
                CHECK_MSG(0, "%s case %d: decode failed: %s", name, c, err.msg);
                continue;
            }
            if ((size_t)got != json_string_length(want) || memcmp(out, json_string_value(want), (size_t)got) != 0)
                CHECK_MSG(0, "%s case %d (skip_special %d): decoded \"%.200s\", want \"%.200s\"", name, c, skip, out,
                          json_string_value(want));
            free(out);
        }
        free(ids);
        if (g_test_failures != before && ++n_fail >= 10) {
            fprintf(stderr, "%s: stopping after 10 failing cases\n", name);
            break;
        }
    }
    fprintf(stderr, "  golden %s: %d cases\n", name, n_cases);
    json_decref(root);
    tokenizer_free(tok);
    return n_cases;
}

static void test_golden(const char *dir) {
    DIR *d = opendir(dir);
    int n_sets = 0;
    if (d) {
        struct dirent *e;
        char **names = NULL;
        int n = 0;
        while ((e = readdir(d))) {
            char path[1024];
            struct stat st;
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof(path), "%s/%s/tokenizer.json", dir, e->d_name);
            if (stat(path, &st) != 0) continue;
            names = realloc(names, (size_t)(n + 1) * sizeof(*names));
            names[n++] = strdup(e->d_name);
        }
        closedir(d);
        for (int i = 0; i < n; i++) {
            if (golden_set(dir, names[i]) > 0) n_sets++;
            free(names[i]);
        }
        free(names);
    }
    /* No golden data is a failure, not a skip: the unit tests alone do not show
     * that real vocabularies tokenize like `tokenizers`. */
    CHECK_MSG(n_sets > 0,
              "no golden tokenizer data under %s: expected <name>/tokenizer.json and <name>/cases.json written "
              "from the `tokenizers` library (see the header of tests/test_tokenizer.c)",
              dir);
}

static void remove_tmpdir(void) {
    for (int i = 0; i < g_n_files; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/tok%d.json", g_tmpdir, i);
        unlink(path);
    }
    rmdir(g_tmpdir);
}

int main(int argc, char **argv) {
    uint64_t seed = test_seed(20240611);
    snprintf(g_tmpdir, sizeof(g_tmpdir), "%s/ltri_tok_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_merge_order();
    test_long_word();
    test_nul_key();
    test_ignore_merges();
    test_added_tokens();
    test_sentencepiece();
    test_split_behaviors();
    test_metaspace();
    test_byte_level();
    test_round_trip(seed);
    test_invalid_input();
    test_malformed_files();
    test_golden(argc > 1 ? argv[1] : LTRI_TEST_DATA "/tokenizers");
    if (getenv("LTRI_TOK_KEEP")) fprintf(stderr, "kept %s\n", g_tmpdir);
    else remove_tmpdir();
    return test_finish("test_tokenizer");
}
