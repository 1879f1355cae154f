/* Reading tokenizer.json: the file into a jansson tree, and typed getters
 * whose messages name the field. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model/tokenizer_internal.h"

const char *tok_json_type_name(const json_t *v) {
    if (!v) return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

int tok_json_string(const json_t *obj, const char *key, const char *what, int required, const char **out,
                    size_t *len, ltri_error *err) {
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (len) *len = 0;
    if (!v || json_is_null(v)) return required ? ltri_fail(err, "%s.%s: missing", what, key) : 0;
    if (!json_is_string(v)) return ltri_fail(err, "%s.%s: expected a string, got %s", what, key, tok_json_type_name(v));
    *out = json_string_value(v);
    if (len) *len = json_string_length(v);
    return 0;
}

int tok_json_bool(const json_t *obj, const char *key, const char *what, int dflt, int *out, ltri_error *err) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return ltri_fail(err, "%s.%s: expected a boolean, got %s", what, key, tok_json_type_name(v));
    *out = json_is_true(v);
    return 0;
}

int tok_json_type(const json_t *obj, const char *what, const char **type, ltri_error *err) {
    if (!json_is_object(obj)) return ltri_fail(err, "%s: expected an object, got %s", what, tok_json_type_name(obj));
    return tok_json_string(obj, "type", what, 1, type, NULL, err);
}

char *tok_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* jansson refuses "\u0000" inside object keys (load.c: "NUL byte in object key
 * not supported"), yet a vocabulary trained on text with NUL bytes has the key
 * "\u0000". Such escapes in keys are rewritten to U+10FFFF before parsing and
 * turned back into NUL where the vocabulary is read (tok_bpe_parse). A key
 * holding U+10FFFF itself would then be ambiguous and is refused. This is the
 * only place that looks at the JSON text; everything else goes through
 * jansson. */
static const char tok_nul_escape[] = "\\uDBFF\\uDFFF"; /* U+10FFFF */

static int tok_key_has_max_char(const char *s, size_t n) {
    for (size_t i = 0; i + 4 <= n; i++) {
        if (!memcmp(s + i, "\xF4\x8F\xBF\xBF", 4)) return 1;
        if (i + 12 <= n && s[i] == '\\' && !strncasecmp(s + i, "\\udbff\\udfff", 12)) return 1;
    }
    return 0;
}

static int tok_patch_nul_keys(const char *s, size_t n, tok_buf *out, int *nul_keys, ltri_error *err) {
    int max_char = 0;
    size_t i = 0, copied = 0;
    while (i < n) {
        if (s[i] != '"') {
            i++;
            continue;
        }
        size_t j = i + 1; /* find the closing quote */
        while (j < n && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
        if (j >= n) break; /* unterminated: jansson will say so */
        size_t k = j + 1;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r')) k++;
        if (k < n && s[k] == ':') { /* an object key */
            max_char |= tok_key_has_max_char(s + i, j - i);
            for (size_t p = i + 1; p < j;) {
                if (s[p] == '\\' && p + 6 <= j && !memcmp(s + p, "\\u0000", 6)) {
                    if (tok_buf_append(out, s + copied, p - copied) ||
                        tok_buf_append(out, tok_nul_escape, sizeof(tok_nul_escape) - 1))
                        return ltri_fail(err, "out of memory");
                    *nul_keys = 1;
                    p += 6;
                    copied = p;
                } else {
                    p += s[p] == '\\' ? 2 : 1;
                }
            }
        }
        i = j + 1;
    }
    if (*nul_keys && max_char)
        return ltri_fail(err, "object keys hold both U+0000 and U+10FFFF; this loader cannot tell them apart");
    return tok_buf_append(out, s + copied, n - copied) ? ltri_fail(err, "out of memory") : 0;
}

json_t *tok_read_json(const char *path, int *nul_keys, ltri_error *err) {
    *nul_keys = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        ltri_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    tok_buf text = {0}, patched = {0};
    char chunk[1 << 16];
    size_t got;
    int rc = 0;
    while (!rc && (got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (tok_buf_append(&text, chunk, got)) rc = ltri_fail(err, "%s: out of memory", path);
    if (!rc && ferror(f)) rc = ltri_fail(err, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    json_t *root = NULL;
    int has_nul_escape = 0;
    for (size_t i = 0; !rc && i + 6 <= text.len && !has_nul_escape; i++)
        has_nul_escape = text.data[i] == '\\' && !memcmp(text.data + i, "\\u0000", 6);
    if (has_nul_escape) {
        rc = tok_patch_nul_keys(text.data, text.len, &patched, nul_keys, err);
        if (rc) ltri_fail_prefix(err, "%s: ", path);
    }
    if (!rc) {
        const tok_buf *b = *nul_keys ? &patched : &text;
        json_error_t je;
        root = json_loadb(b->data ? b->data : "", b->len, JSON_ALLOW_NUL, &je);
        if (!root) ltri_fail(err, "%s: %s (line %d, column %d)", path, je.text, je.line, je.column);
    }
    tok_buf_free(&text);
    tok_buf_free(&patched);
    return root;
}
