/* tokenizer.json: loading, encode, decode (the API of model/tokenizer.h).
 *
 * The stages and the files that implement them are listed in
 * tokenizer_internal.h. This file reads the top of tokenizer.json (model,
 * added_tokens, post_processor; the other components parse themselves), runs
 * the encode pipeline of tokenizers' TokenizerImpl::encode_single_sequence and
 * the decode of TokenizerImpl::decode. A field this code does not implement is
 * an error that names it, never a silent approximation. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_internal.h"

/* Ids above this are refused, as in tokenizer_bpe.c. */
#define TOK_MAX_ID (1 << 26)
/* Ovector pairs for PCRE2: only the whole match is read; a pattern with more
 * groups still reports it (pcre2_match returns 0 then). */
#define TOK_MATCH_PAIRS 16

/* ---- scratch -------------------------------------------------------------- */

int tok_scratch_init(tok_scratch *sc, ltri_error *err) {
    memset(sc, 0, sizeof(*sc));
    sc->err = err;
    sc->match = pcre2_match_data_create(TOK_MATCH_PAIRS, NULL);
    if (!sc->match) return ltri_fail(err, "out of memory");
    return 0;
}

void tok_scratch_free(tok_scratch *sc) {
    if (sc->match) pcre2_match_data_free(sc->match);
    free(sc->spans.items);
    tok_buf_free(&sc->buf[0]);
    tok_buf_free(&sc->buf[1]);
    memset(sc, 0, sizeof(*sc));
}

/* ---- loading -------------------------------------------------------------- */

static int tok_added_parse(ltri_tokenizer *tok, const json_t *list, ltri_error *err) {
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list)) return ltri_fail(err, "added_tokens: expected an array, got %s", tok_json_type_name(list));
    size_t n = json_array_size(list);
    if (n && !(tok->added = calloc(n, sizeof(*tok->added)))) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(list, i);
        tok_added *a = &tok->added[i];
        char what[64];
        snprintf(what, sizeof(what), "added_tokens[%zu]", i);
        tok->n_added = (int)i + 1;
        if (!json_is_object(e)) return ltri_fail(err, "%s: expected an object, got %s", what, tok_json_type_name(e));
        const json_t *id = json_object_get(e, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= TOK_MAX_ID)
            return ltri_fail(err, "%s.id: expected an id in [0, %d)", what, TOK_MAX_ID);
        a->id = (int32_t)json_integer_value(id);
        const char *content;
        if (tok_json_string(e, "content", what, 1, &content, &a->len, err)) return -1;
        if (!(a->content = tok_strndup(content, a->len))) return ltri_fail(err, "out of memory");
        if (tok_json_bool(e, "special", what, 0, &a->special, err) ||
            tok_json_bool(e, "single_word", what, 0, &a->single_word, err) ||
            tok_json_bool(e, "lstrip", what, 0, &a->lstrip, err) ||
            tok_json_bool(e, "rstrip", what, 0, &a->rstrip, err) ||
            tok_json_bool(e, "normalized", what, !a->special, &a->normalized, err))
            return -1;
    }
    return 0;
}

/* Tries for the two matching passes. added_vocabulary.rs lists the special
 * tokens before the others; the order only matters for equal contents. */
static int tok_added_tries(ltri_tokenizer *tok, ltri_error *err) {
    tok_scratch sc;
    tok_buf norm = {0};
    if (tok_scratch_init(&sc, err)) return -1;
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (int i = 0; i < tok->n_added && !rc; i++) {
            const tok_added *a = &tok->added[i];
            if (a->special != (pass == 0)) continue;
            if (!a->normalized) {
                if (tok_trie_add(&tok->trie_raw, a->content, a->len, i)) rc = ltri_fail(err, "out of memory");
                continue;
            }
            /* A normalized token is looked for by its normalized content. */
            if (tok_normalize(tok->normalizer, &sc, a->content, a->len, &norm)) {
                rc = ltri_fail_prefix(err, "added_tokens[%d]: ", i);
                break;
            }
            if (tok_trie_add(&tok->trie_norm, norm.data, norm.len, i)) rc = ltri_fail(err, "out of memory");
        }
    }
    tok_buf_free(&norm);
    tok_scratch_free(&sc);
    return rc;
}

/* The ids of one TemplateProcessing special token. */
static int tok_template_ids(const json_t *specials, const char *name, tok_ids *out, const char *what,
                            ltri_error *err) {
    const json_t *sp = json_object_get(specials, name);
    const json_t *ids = json_object_get(sp, "ids");
    if (!json_is_array(ids))
        return ltri_fail(err, "%s.special_tokens: no entry with \"ids\" for \"%s\"", what, name);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= TOK_MAX_ID)
            return ltri_fail(err, "%s.special_tokens[\"%s\"].ids[%zu]: expected an id", what, name, i);
        if (tok_ids_push(out, (int32_t)json_integer_value(v))) return ltri_fail(err, "out of memory");
    }
    return 0;
}

static int tok_post_parse(ltri_tokenizer *tok, const json_t *j, const char *what, int *have_template,
                          ltri_error *err) {
    if (!j || json_is_null(j)) return 0;
    const char *type;
    if (tok_json_type(j, what, &type, err)) return -1;
    if (!strcmp(type, "ByteLevel")) return 0; /* it only trims offsets */
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(j, "processors");
        if (!json_is_array(list)) return ltri_fail(err, "%s.processors: expected an array", what);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char w[128];
            snprintf(w, sizeof(w), "%s.processors[%zu]", what, i);
            if (tok_post_parse(tok, json_array_get(list, i), w, have_template, err)) return -1;
        }
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return ltri_fail(err, "%s: post_processor type \"%s\" is not supported (TemplateProcessing, ByteLevel, "
                              "Sequence are)", what, type);
    if (*have_template) return ltri_fail(err, "%s: more than one TemplateProcessing", what);
    *have_template = 1;
    const json_t *single = json_object_get(j, "single");
    const json_t *specials = json_object_get(j, "special_tokens");
    if (!json_is_array(single)) return ltri_fail(err, "%s.single: expected an array", what);
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *item = json_array_get(single, i);
        const json_t *sp = json_object_get(item, "SpecialToken");
        const json_t *seq = json_object_get(item, "Sequence");
        char w[128];
        snprintf(w, sizeof(w), "%s.single[%zu]", what, i);
        if (sp) {
            const char *name;
            if (tok_json_string(sp, "id", w, 1, &name, NULL, err)) return -1;
            if (tok_template_ids(specials, name, seen_a ? &tok->template_suffix : &tok->template_prefix, what, err))
                return -1;
        } else if (seq) {
            const char *name;
            if (tok_json_string(seq, "id", w, 1, &name, NULL, err)) return -1;
            if (strcmp(name, "A") || seen_a)
                return ltri_fail(err, "%s: a single-sequence template holds sequence A once, got \"%s\"", w, name);
            seen_a = 1;
        } else {
            return ltri_fail(err, "%s: expected {\"SpecialToken\": ...} or {\"Sequence\": ...}", w);
        }
    }
    if (!seen_a) return ltri_fail(err, "%s.single: sequence A is missing", what);
    return 0;
}

/* tokenizer_token_bytes() answers from a table built here. */
static int tok_build_token_bytes(ltri_tokenizer *tok, ltri_error *err) {
    size_t n = (size_t)tok->vocab_size;
    tok->tb_off = malloc((n ? n : 1) * sizeof(uint32_t));
    tok->tb_len = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!tok->tb_off || !tok->tb_len) return ltri_fail(err, "out of memory");
    tok_scratch sc;
    if (tok_scratch_init(&sc, err)) return -1;
    int rc = 0;
    for (size_t id = 0; id < n && !rc; id++) {
        const char *s = NULL;
        size_t len = 0;
        int32_t a = tok->added_of_id[id];
        if (a >= 0) {
            s = tok->added[a].content;
            len = tok->added[a].len;
        } else {
            s = tok_bpe_token(&tok->bpe, (int32_t)id, &len);
        }
        tok->tb_len[id] = UINT32_MAX;
        if (!s) continue;
        size_t off = tok->token_bytes.len;
        if (tok_decoder_token_bytes(tok->decoder, &sc, s, len, &tok->token_bytes)) rc = -1;
        else if (tok->token_bytes.len >= UINT32_MAX) rc = ltri_fail(err, "token table too large");
        tok->tb_off[id] = (uint32_t)off;
        tok->tb_len[id] = (uint32_t)(tok->token_bytes.len - off);
    }
    tok_scratch_free(&sc);
    return rc;
}

static int tok_load_json(ltri_tokenizer *tok, const json_t *root, int nul_keys, ltri_error *err) {
    if (!json_is_object(root)) return ltri_fail(err, "expected a JSON object at the top");
    const char *fields[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, fields[i]);
        if (v && !json_is_null(v))
            return ltri_fail(err, "%s: is set; truncation and padding are not supported (must be null)", fields[i]);
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return ltri_fail(err, "model: missing or not an object");
    const char *type;
    if (tok_json_string(model, "type", "model", 0, &type, NULL, err)) return -1;
    if (type && strcmp(type, "BPE"))
        return ltri_fail(err, "model.type: model type \"%s\" is not supported (only BPE is)", type);
    if (tok_bpe_parse(&tok->bpe, model, nul_keys, err)) return -1;
    if (tok_normalizer_parse(&tok->normalizer, json_object_get(root, "normalizer"), "normalizer", err)) return -1;
    if (tok_pretok_parse(&tok->pretok, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", err)) return -1;
    if (tok_decoder_parse(&tok->decoder, json_object_get(root, "decoder"), "decoder", err)) return -1;
    int have_template = 0;
    if (tok_post_parse(tok, json_object_get(root, "post_processor"), "post_processor", &have_template, err))
        return -1;
    if (tok_added_parse(tok, json_object_get(root, "added_tokens"), err)) return -1;

    int32_t max_id = tok->bpe.max_id;
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].id > max_id) max_id = tok->added[i].id;
    tok->vocab_size = max_id + 1;
    size_t n = (size_t)tok->vocab_size;
    if (!(tok->added_of_id = malloc((n ? n : 1) * sizeof(int32_t)))) return ltri_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) tok->added_of_id[i] = -1;
    for (int i = 0; i < tok->n_added; i++) tok->added_of_id[tok->added[i].id] = i;
    for (size_t i = 0; i < tok->template_prefix.len + tok->template_suffix.len; i++) {
        int32_t id = i < tok->template_prefix.len ? tok->template_prefix.data[i]
                                                  : tok->template_suffix.data[i - tok->template_prefix.len];
        if (id >= tok->vocab_size) return ltri_fail(err, "post_processor: special token id %d is not in the vocabulary", id);
    }
    if (tok_added_tries(tok, err)) return -1;
    return tok_build_token_bytes(tok, err);
}

ltri_tokenizer *tokenizer_load(const char *path, ltri_error *err) {
    int nul_keys;
    json_t *root = tok_read_json(path, &nul_keys, err);
    if (!root) return NULL;
    ltri_tokenizer *tok = calloc(1, sizeof(*tok));
    int rc = tok ? tok_load_json(tok, root, nul_keys, err) : ltri_fail(err, "out of memory");
    json_decref(root);
    if (rc) {
        ltri_fail_prefix(err, "%s: ", path);
        tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

void tokenizer_free(ltri_tokenizer *tok) {
    if (!tok) return;
    tok_bpe_free(&tok->bpe);
    for (int i = 0; i < tok->n_added; i++) free(tok->added[i].content);
    free(tok->added);
    free(tok->added_of_id);
    tok_trie_free(&tok->trie_raw);
    tok_trie_free(&tok->trie_norm);
    tok_normalizer_free(tok->normalizer);
    tok_pretok_free(tok->pretok);
    tok_decoder_free(tok->decoder);
    tok_ids_free(&tok->template_prefix);
    tok_ids_free(&tok->template_suffix);
    tok_buf_free(&tok->token_bytes);
    free(tok->tb_off);
    free(tok->tb_len);
    free(tok);
}

/* ---- encode ----------------------------------------------------------------- */

typedef struct {
    tok_scratch sc;
    tok_segments raw, norm_segs;
    tok_buf norm;
    tok_pieces a, b;
    tok_bpe_work *work;
    tok_ids ids;
} tok_encode_state;

static void tok_encode_state_free(tok_encode_state *st) {
    tok_scratch_free(&st->sc);
    tok_segments_free(&st->raw);
    tok_segments_free(&st->norm_segs);
    tok_buf_free(&st->norm);
    tok_pieces_free(&st->a);
    tok_pieces_free(&st->b);
    tok_bpe_work_free(st->work);
    tok_ids_free(&st->ids);
}

static int tok_push_all(tok_ids *v, const tok_ids *src, ltri_error *err) {
    for (size_t i = 0; i < src->len; i++)
        if (tok_ids_push(v, src->data[i])) return ltri_fail(err, "out of memory");
    return 0;
}

/* Normalizes, splits and BPEs one stretch of text between added tokens.
 * at_start: the stretch begins the original text. */
static int tok_encode_text(const ltri_tokenizer *tok, tok_encode_state *st, const char *s, size_t n, int at_start,
                           ltri_error *err) {
    if (tok_normalize(tok->normalizer, &st->sc, s, n, &st->norm)) return -1;
    if (tok_added_split(&tok->trie_norm, tok->added, st->norm.data, st->norm.len, &st->norm_segs, err)) return -1;
    for (size_t k = 0; k < st->norm_segs.n; k++) {
        const tok_segment *g = &st->norm_segs.items[k];
        if (g->token >= 0) {
            if (tok_ids_push(&st->ids, tok->added[g->token].id)) return ltri_fail(err, "out of memory");
            continue;
        }
        tok_pieces *cur = &st->a, *spare = &st->b;
        tok_pieces_clear(cur);
        if (tok_pieces_push(cur, st->norm.data + g->start, g->end - g->start, at_start && g->start == 0))
            return ltri_fail(err, "out of memory");
        if (tok_pretokenize(tok->pretok, &st->sc, &cur, &spare)) return -1;
        for (size_t i = 0; i < cur->n; i++)
            if (tok_bpe_encode_word(&tok->bpe, st->work, tok_piece_text(cur, i), cur->items[i].len, &st->ids, err))
                return -1;
    }
    return 0;
}

int tokenizer_encode(const ltri_tokenizer *tok, const char *text, size_t len, int add_bos, int32_t **ids,
                     int *n_ids, ltri_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!tok) return ltri_fail(err, "tokenizer_encode: no tokenizer");
    if (!text && len) return ltri_fail(err, "tokenizer_encode: text is NULL");
    if (len > (size_t)INT_MAX / 2) return ltri_fail(err, "prompt is too long (%zu bytes)", len);
    long bad = tok_utf8_invalid_at(text, len);
    if (bad >= 0) return ltri_fail(err, "prompt is not valid UTF-8 at byte %ld", bad);

    tok_encode_state st;
    memset(&st, 0, sizeof(st));
    int rc = tok_scratch_init(&st.sc, err);
    if (!rc && !(st.work = tok_bpe_work_new())) rc = ltri_fail(err, "out of memory");
    if (!rc && add_bos) rc = tok_push_all(&st.ids, &tok->template_prefix, err);
    if (!rc) rc = tok_added_split(&tok->trie_raw, tok->added, text, len, &st.raw, err);
    for (size_t k = 0; !rc && k < st.raw.n; k++) {
        const tok_segment *g = &st.raw.items[k];
        if (g->token >= 0) {
            if (tok_ids_push(&st.ids, tok->added[g->token].id)) rc = ltri_fail(err, "out of memory");
        } else {
            rc = tok_encode_text(tok, &st, text + g->start, g->end - g->start, g->start == 0, err);
        }
    }
    if (!rc && add_bos) rc = tok_push_all(&st.ids, &tok->template_suffix, err);
    if (!rc && !st.ids.data && !(st.ids.data = malloc(sizeof(int32_t)))) rc = ltri_fail(err, "out of memory");
    if (!rc) { /* the array is handed out even when empty */
        *n_ids = (int)st.ids.len;
        *ids = st.ids.data;
        st.ids.data = NULL;
    }
    tok_encode_state_free(&st);
    return rc;
}

/* ---- decode ----------------------------------------------------------------- */

int tokenizer_decode(const ltri_tokenizer *tok, const int32_t *ids, int n_ids, int skip_special, char **text,
                     ltri_error *err) {
    *text = NULL;
    if (!tok) return ltri_fail(err, "tokenizer_decode: no tokenizer");
    if (n_ids < 0 || (!ids && n_ids)) return ltri_fail(err, "tokenizer_decode: bad id array");
    tok_scratch sc;
    if (tok_scratch_init(&sc, err)) return -1;
    tok_pieces a = {0}, b = {0}, *cur = &a, *spare = &b;
    tok_buf out = {0};
    int rc = 0;
    /* TokenizerImpl::decode: added tokens decode to their content, other ids
     * to their vocabulary string; ids that are neither are dropped. */
    for (int i = 0; i < n_ids && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->vocab_size) continue;
        const char *s;
        size_t len;
        int32_t ai = tok->added_of_id[id];
        if (ai >= 0) {
            if (skip_special && tok->added[ai].special) continue;
            s = tok->added[ai].content;
            len = tok->added[ai].len;
        } else if (!(s = tok_bpe_token(&tok->bpe, id, &len))) {
            continue;
        }
        if (tok_pieces_push(cur, s, len, 0)) rc = ltri_fail(err, "out of memory");
    }
    if (!rc && tok->decoder) rc = tok_decode_chain(tok->decoder, &sc, &cur, &spare);
    /* Without a decoder the tokens are joined with spaces. */
    for (size_t i = 0; !rc && i < cur->n; i++)
        if ((!tok->decoder && i > 0 && tok_buf_append(&out, " ", 1)) ||
            tok_buf_append(&out, tok_piece_text(cur, i), cur->items[i].len))
            rc = ltri_fail(err, "out of memory");
    if (!rc && tok_buf_append(&out, "", 0)) rc = ltri_fail(err, "out of memory");
    if (!rc && out.len > (size_t)INT_MAX) rc = ltri_fail(err, "decoded text is too long");
    if (!rc) {
        out.data[out.len] = 0;
        *text = out.data;
        rc = (int)out.len;
    } else {
        tok_buf_free(&out);
    }
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    tok_scratch_free(&sc);
    return rc;
}

/* ---- lookups ---------------------------------------------------------------- */

const char *tokenizer_token_bytes(const ltri_tokenizer *tok, int32_t id, int *len) {
    if (!tok || id < 0 || id >= tok->vocab_size || tok->tb_len[id] == UINT32_MAX) return NULL;
    if (len) *len = (int)tok->tb_len[id];
    return tok->token_bytes.data ? tok->token_bytes.data + tok->tb_off[id] : "";
}

int32_t tokenizer_token_id(const ltri_tokenizer *tok, const char *content) {
    if (!tok || !content) return -1;
    size_t n = strlen(content);
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == n && !memcmp(tok->added[i].content, content, n)) return tok->added[i].id;
    return tok_bpe_lookup(&tok->bpe, content, n);
}

int tokenizer_is_special(const ltri_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->vocab_size) return 0;
    int32_t a = tok->added_of_id[id];
    return a >= 0 && tok->added[a].special;
}

int tokenizer_vocab_size(const ltri_tokenizer *tok) { return tok ? tok->vocab_size : 0; }

int32_t tokenizer_bos_id(const ltri_tokenizer *tok) {
    return tok && tok->template_prefix.len ? tok->template_prefix.data[0] : -1;
}
