/* Hugging Face tokenizer.json, byte-level BPE (GPT-2, Llama 3, Qwen2, Mistral-Nemo)
 * and SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B).
 *
 * Encode: split out added tokens (special or not) first; normalize (NFC if the
 * file asks for it); pre-tokenize with the file's Split regex (PCRE2, the same
 * patterns Oniguruma runs in tokenizers) and/or ByteLevel(use_regex); map bytes
 * to the GPT-2 byte alphabet; apply BPE merges by rank (ignore_merges: a word
 * already in the vocabulary is one token). Decode: the inverse byte map.
 * Results equal the `tokenizers` library's; tests/test_tokenizer.c checks that
 * against ids it produced. */
#ifndef LTRI_MODEL_TOKENIZER_H
#define LTRI_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct ltri_tokenizer ltri_tokenizer;

/* Loads path (a tokenizer.json). NULL + err on failure. */
ltri_tokenizer *tokenizer_load(const char *path, ltri_error *err);
void tokenizer_free(ltri_tokenizer *tok);

/* Encodes len bytes of text. add_bos: prepend the BOS token the file's
 * post_processor adds (TemplateProcessing), if any. *ids is malloc'ed and owned
 * by the caller. Invalid UTF-8 is an error, not a crash. */
int tokenizer_encode(const ltri_tokenizer *tok, const char *text, size_t len, int add_bos, int32_t **ids,
                     int *n_ids, ltri_error *err);

/* Decodes ids into a malloc'ed NUL-terminated string. skip_special drops special
 * added tokens. Returns the number of bytes (excluding NUL) or -1. */
int tokenizer_decode(const ltri_tokenizer *tok, const int32_t *ids, int n_ids, int skip_special, char **text,
                     ltri_error *err);

/* The raw bytes one token stands for (for streaming output). NULL for an id out
 * of range. Special tokens return their content. SentencePiece vocabularies:
 * "\u2581" reads as a space and "<0xXX>" as its byte; the one leading space that
 * tokenizer_decode() strips from the whole text is kept here. */
const char *tokenizer_token_bytes(const ltri_tokenizer *tok, int32_t id, int *len);

/* Id of a token given its exact content ("<|eot_id|>"), or -1. */
int32_t tokenizer_token_id(const ltri_tokenizer *tok, const char *content);

/* 1 if id is a special added token. */
int tokenizer_is_special(const ltri_tokenizer *tok, int32_t id);

/* Largest id + 1. */
int tokenizer_vocab_size(const ltri_tokenizer *tok);

/* The BOS id the post_processor adds, or -1. */
int32_t tokenizer_bos_id(const ltri_tokenizer *tok);

#endif
