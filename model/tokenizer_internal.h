/* Internals shared by the tokenizer_*.c files; nothing outside model/ includes
 * this. The public API is model/tokenizer.h.
 *
 * Encoding runs the same stages as the Hugging Face `tokenizers` library
 * (tokenizer/mod.rs, encode_single_sequence):
 *   1. added tokens are cut out of the raw text (tokenizer_added.c);
 *   2. each remaining segment is normalized, then cut again on the added
 *      tokens whose content is matched after normalization;
 *   3. the pre-tokenizer splits each segment into pieces (tokenizer_pretok.c);
 *   4. the BPE model turns each piece into ids (tokenizer_bpe.c);
 *   5. the post-processor's template adds BOS (and whatever else it names).
 * Decoding maps ids to token strings and runs the decoder chain
 * (tokenizer_decode.c). Split/Replace patterns (PCRE2) are in
 * tokenizer_pattern.c, reading the JSON in tokenizer_json.c, UTF-8 and the
 * GPT-2 byte alphabet in tokenizer_text.c; tokenizer.c loads and runs it all. Every structure here is read-only after tokenizer_load();
 * scratch memory belongs to one encode or decode call (tok_scratch), so one
 * tokenizer can serve several threads. */
#ifndef LTRI_MODEL_TOKENIZER_INTERNAL_H
#define LTRI_MODEL_TOKENIZER_INTERNAL_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "model/tokenizer.h"

/* ---- growable buffers --------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} tok_buf;

/* A list of byte strings stored back to back in one buffer: the pieces of a
 * pre-tokenized segment, or the token strings a decoder works on. at_start
 * marks a piece that begins at byte 0 of the original text (Metaspace's
 * prepend_scheme "first" looks at that). */
typedef struct {
    size_t off, len;
    int at_start;
} tok_piece;

typedef struct {
    tok_buf text;
    tok_piece *items;
    size_t n, cap;
} tok_pieces;

typedef struct {
    int32_t *data;
    size_t len, cap;
} tok_ids;

int tok_buf_append(tok_buf *b, const void *p, size_t n);
void tok_buf_free(tok_buf *b);
/* Appends a piece whose bytes are p[0..n) (copied into l->text). */
int tok_pieces_push(tok_pieces *l, const void *p, size_t n, int at_start);
void tok_pieces_clear(tok_pieces *l);
void tok_pieces_free(tok_pieces *l);
static inline const char *tok_piece_text(const tok_pieces *l, size_t i) { return l->text.data + l->items[i].off; }
int tok_ids_push(tok_ids *v, int32_t id);
void tok_ids_free(tok_ids *v);

/* ---- UTF-8 and the byte-level alphabet (tokenizer_text.c) --------------- */

/* Decodes one code point at s[0..n), n >= 1. Returns the bytes consumed. When
 * the bytes there are not valid UTF-8, *cp is -1 and the return value is the
 * length of the maximal invalid subpart (at least 1), which is what Rust's
 * String::from_utf8_lossy replaces with one U+FFFD. */
size_t tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp);
/* Offset of the first invalid byte, or -1 if s is valid UTF-8. */
long tok_utf8_invalid_at(const char *s, size_t n);
/* Appends the UTF-8 encoding of cp. */
int tok_utf8_put(tok_buf *b, uint32_t cp);
/* Appends s with each invalid sequence replaced by U+FFFD. */
int tok_utf8_append_lossy(tok_buf *b, const char *s, size_t n);
/* Length in bytes of the UTF-8 character starting with lead byte c (1 for a
 * stray byte). Only for text already known to be valid. */
static inline size_t tok_utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* GPT-2's bytes_to_unicode(): the code point each byte stands for. */
uint32_t tok_byte_to_unicode(unsigned char b);
/* The inverse: the byte a code point stands for, or -1. */
int tok_unicode_to_byte(int32_t cp);

/* Unicode classes as Rust's `regex` crate defines \s and \w (added tokens'
 * lstrip/rstrip/single_word are written with those). */
int tok_is_white_space(uint32_t cp);
int tok_is_word_char(uint32_t cp);

/* ---- patterns: a literal string or a PCRE2 regex ----------------------- */

typedef struct {
    int is_regex;
    char *literal; /* String pattern: matched literally, as tokenizers escapes it */
    size_t literal_len;
    pcre2_code *code; /* Regex pattern */
    int jit;          /* pcre2_jit_compile succeeded */
} tok_pattern;

/* A match or a gap between matches, covering the input in order. */
typedef struct {
    size_t start, end;
    int is_match;
} tok_span;

typedef struct {
    tok_span *items;
    size_t n, cap;
} tok_spans;

/* Per-call scratch: PCRE2 match data, span lists and buffers reused across the
 * pieces of one encode or decode. */
typedef struct {
    pcre2_match_data *match;
    tok_spans spans;
    tok_buf buf[2];
    ltri_error *err;
} tok_scratch;

/* what: the JSON path for messages ("pre_tokenizer.pattern"). */
int tok_pattern_compile(tok_pattern *p, const char *regex, size_t regex_len, const char *what, ltri_error *err);
int tok_pattern_literal(tok_pattern *p, const char *s, size_t n, ltri_error *err);
/* Reads {"String": "..."} or {"Regex": "..."}. */
int tok_pattern_from_json(tok_pattern *p, const json_t *j, const char *what, ltri_error *err);
void tok_pattern_free(tok_pattern *p);
/* Fills sc->spans with the matches of p in s[0..n) and the gaps between them,
 * as tokenizers' Pattern::find_matches does (empty input: one empty gap). */
int tok_pattern_find(const tok_pattern *p, tok_scratch *sc, const char *s, size_t n);
/* out = s with every match of p replaced by content (NormalizedString::replace;
 * also the Replace decoder). Clobbers sc->spans. */
int tok_replace_all(const tok_pattern *p, const char *content, size_t content_len, tok_scratch *sc, const char *s,
                    size_t n, tok_buf *out);

/* ---- normalizers and pre-tokenizers (tokenizer_pretok.c) --------------- */

typedef enum {
    TOK_NORM_NFC,
    TOK_NORM_NFD,
    TOK_NORM_NFKC,
    TOK_NORM_NFKD,
    TOK_NORM_PREPEND,
    TOK_NORM_REPLACE,
    TOK_NORM_SEQUENCE,
} tok_norm_type;

typedef struct tok_normalizer {
    tok_norm_type type;
    char *content; /* Prepend: the prefix; Replace: the replacement */
    size_t content_len;
    tok_pattern pattern; /* Replace */
    struct tok_normalizer *children;
    int n_children;
} tok_normalizer;

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum {
    TOK_PRETOK_SPLIT,
    TOK_PRETOK_BYTE_LEVEL,
    TOK_PRETOK_METASPACE,
    TOK_PRETOK_SEQUENCE,
} tok_pretok_type;

typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_pretok {
    tok_pretok_type type;
    /* Split; ByteLevel with use_regex holds the GPT-2 pattern here */
    tok_pattern pattern;
    tok_split_behavior behavior;
    int invert;
    /* ByteLevel */
    int add_prefix_space, use_regex;
    /* Metaspace */
    char replacement[8];
    size_t replacement_len;
    tok_prepend_scheme prepend_scheme;
    int split;
    struct tok_pretok *children;
    int n_children;
} tok_pretok;

/* j may be NULL or JSON null (no normalizer): *out stays NULL then. */
int tok_normalizer_parse(tok_normalizer **out, const json_t *j, const char *what, ltri_error *err);
void tok_normalizer_free(tok_normalizer *n);
/* Normalizes s[0..n) into out (cleared first). */
int tok_normalize(const tok_normalizer *norm, tok_scratch *sc, const char *s, size_t n, tok_buf *out);

int tok_pretok_parse(tok_pretok **out, const json_t *j, const char *what, ltri_error *err);
void tok_pretok_free(tok_pretok *p);
/* Pre-tokenizes the pieces in *cur; the result is left in *cur (the two lists
 * are swapped as stages run). Empty pieces are dropped, as tokenizers does. */
int tok_pretokenize(const tok_pretok *p, tok_scratch *sc, tok_pieces **cur, tok_pieces **spare);

/* ---- the BPE model (tokenizer_bpe.c) ------------------------------------ */

/* Open addressing: string -> id. Keys point into the model's string arena. */
typedef struct {
    uint32_t off, len; /* key bytes: arena[off .. off+len) */
    int32_t value;     /* -1: empty slot */
} tok_str_slot;

typedef struct {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX: empty */
    int32_t rank, new_id;
} tok_merge_slot;

typedef struct {
    tok_buf arena; /* every vocab string, back to back */
    tok_str_slot *vocab;
    size_t vocab_mask;
    size_t vocab_count;
    int32_t max_id;       /* largest id in the vocab, -1 if empty */
    uint32_t *id_off;     /* id -> string in arena; id_len[id] == UINT32_MAX: no such id */
    uint32_t *id_len;
    tok_merge_slot *merges;
    size_t merges_mask;
    char *unk_token; /* NULL: none */
    int32_t unk_id;  /* -1 when unk_token is absent from the vocab */
    int fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix; NULL: none */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256]; /* ids of "<0x00>".."<0xFF>", -1 where absent */
} tok_bpe;

/* nul_keys: vocabulary keys spell NUL as U+10FFFF (tokenizer.c, tok_read_json). */
int tok_bpe_parse(tok_bpe *m, const json_t *model, int nul_keys, ltri_error *err);
void tok_bpe_free(tok_bpe *m);
int32_t tok_bpe_lookup(const tok_bpe *m, const char *s, size_t n);
/* The vocab string of id (NULL if the model has no such id). */
const char *tok_bpe_token(const tok_bpe *m, int32_t id, size_t *len);

/* Scratch for merging one word (reused across the words of one call). */
typedef struct tok_bpe_work tok_bpe_work;
tok_bpe_work *tok_bpe_work_new(void);
void tok_bpe_work_free(tok_bpe_work *w);
/* Appends the ids of one pre-token w[0..n) to out. */
int tok_bpe_encode_word(const tok_bpe *m, tok_bpe_work *w, const char *s, size_t n, tok_ids *out, ltri_error *err);

/* ---- added tokens (tokenizer_added.c) ----------------------------------- */

typedef struct {
    int32_t id;
    char *content;
    size_t len;
    int single_word, lstrip, rstrip, normalized, special;
} tok_added;

/* A byte trie over the contents of a set of added tokens. */
typedef struct {
    int32_t first_child, next_sibling;
    int32_t token; /* index into the added tokens, -1: no token ends here */
    unsigned char byte;
} tok_trie_node;

typedef struct {
    tok_trie_node *nodes;
    size_t n, cap;
    uint8_t first_byte[32]; /* bitmap: bytes that start some token */
} tok_trie;

int tok_trie_add(tok_trie *t, const char *s, size_t n, int32_t token);
void tok_trie_free(tok_trie *t);

/* A segment of text: either an added token (token >= 0, an index into the
 * added tokens) or text left for the model (token == -1). */
typedef struct {
    size_t start, end;
    int32_t token;
} tok_segment;

typedef struct {
    tok_segment *items;
    size_t n, cap;
} tok_segments;

/* Splits s[0..n) on the tokens of trie (leftmost-longest, then the token's
 * single_word / lstrip / rstrip rules) into out (cleared first). Empty text
 * segments are not emitted. */
int tok_added_split(const tok_trie *trie, const tok_added *added, const char *s, size_t n, tok_segments *out,
                    ltri_error *err);
void tok_segments_free(tok_segments *s);

/* ---- decoders (tokenizer_decode.c) -------------------------------------- */

typedef enum {
    TOK_DEC_BYTE_LEVEL,
    TOK_DEC_REPLACE,
    TOK_DEC_BYTE_FALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
    TOK_DEC_SEQUENCE,
} tok_dec_type;

typedef struct tok_decoder {
    tok_dec_type type;
    tok_pattern pattern; /* Replace */
    char *content;       /* Replace: replacement; Strip: the character */
    size_t content_len;
    int start, stop; /* Strip */
    char replacement[8];
    size_t replacement_len;
    tok_prepend_scheme prepend_scheme; /* Metaspace */
    struct tok_decoder *children;
    int n_children;
} tok_decoder;

int tok_decoder_parse(tok_decoder **out, const json_t *j, const char *what, ltri_error *err);
void tok_decoder_free(tok_decoder *d);
/* Runs the decoder chain over the token strings in *cur; the result is left in
 * *cur. */
int tok_decode_chain(const tok_decoder *d, tok_scratch *sc, tok_pieces **cur, tok_pieces **spare);
/* The bytes one token stands for on its own (streaming): the per-token steps of
 * the chain (byte map, Replace, ByteFallback, Metaspace's replacement) without
 * the steps that look at neighbours (Fuse, Strip, lossy UTF-8). */
int tok_decoder_token_bytes(const tok_decoder *d, tok_scratch *sc, const char *s, size_t n, tok_buf *out);

/* ---- the tokenizer ------------------------------------------------------ */

struct ltri_tokenizer {
    char *path; /* for messages */
    tok_bpe bpe;
    tok_added *added;
    int n_added;
    int32_t *added_of_id; /* id -> index into added, -1: not an added token */
    tok_trie trie_raw;    /* added tokens matched on the raw text (normalized: false) */
    tok_trie trie_norm;   /* added tokens matched after normalization, by normalized content */
    tok_normalizer *normalizer;
    tok_pretok *pretok;
    tok_decoder *decoder;
    tok_ids template_prefix, template_suffix; /* TemplateProcessing "single" around $A */
    int vocab_size;                           /* largest id + 1 */
    /* tokenizer_token_bytes(): per id, into token_bytes */
    tok_buf token_bytes;
    uint32_t *tb_off, *tb_len; /* tb_len == UINT32_MAX: no such id */
};

int tok_scratch_init(tok_scratch *sc, ltri_error *err);
void tok_scratch_free(tok_scratch *sc);

/* ---- reading tokenizer.json (tokenizer_json.c) ------------------------- */

/* Parses the file. *nul_keys: object keys spelled NUL as "\u0000", which
 * jansson refuses; they arrive as U+10FFFF instead (tok_bpe_parse undoes it). */
json_t *tok_read_json(const char *path, int *nul_keys, ltri_error *err);

const char *tok_json_type_name(const json_t *v);
/* A string field; absent/null -> *out NULL when !required. */
int tok_json_string(const json_t *obj, const char *key, const char *what, int required, const char **out,
                    size_t *len, ltri_error *err);
int tok_json_bool(const json_t *obj, const char *key, const char *what, int dflt, int *out, ltri_error *err);
/* The "type" of a component object. */
int tok_json_type(const json_t *obj, const char *what, const char **type, ltri_error *err);
char *tok_strndup(const char *s, size_t n);

#endif
