/* model_open(): a Hugging Face model directory checked against its config.
 *
 * Every tensor the architecture needs is looked up by its transformers name
 * (LlamaForCausalLM's state dict; Mistral and Qwen2 use the same names) and its
 * shape and dtype are checked against config.json before the engine touches
 * it, so a wrong or truncated checkpoint is an error that names the tensor, the
 * file and what the config expected, never a read out of bounds later. */
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/rng.h"

/* What a tensor must look like: its shape and the config keys that set it
 * (quoted in the message when the file disagrees). */
typedef struct {
    int ndim;
    int64_t shape[2];
    const char *why;
    const char *if_missing; /* why the config wants it, for optional tensors */
} model_expect;

static void model_format_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && n < len; d++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* The file(s) a missing tensor should have been in, for the message. */
static const char *model_checkpoint_name(const ltri_model *m, char *buf, size_t len) {
    if (m->st.n_files == 1) return m->st.paths[0];
    snprintf(buf, len, "%s/model.safetensors.index.json and its %d shards", m->dir, m->st.n_files);
    return buf;
}

/* Finds name and checks it against want. Weights must be floating point: the
 * backends convert F32/BF16/F16 on upload and nothing else. */
/* model_open_random: a made-up tensor of the wanted shape over the shared buffers. */
static const st_tensor *model_random_tensor(ltri_model *m, const char *name, model_expect want, ltri_error *err) {
    if (m->n_random == m->cap_random) {
        ltri_fail(err, "random model: more tensors than expected (%s)", name);
        return NULL;
    }
    st_tensor *t = &m->random_tensors[m->n_random++];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    t->dtype = LTRI_BF16;
    t->dtype_name = "BF16";
    t->ndim = want.ndim;
    size_t n = 1;
    for (int d = 0; d < want.ndim; d++) n *= (size_t)(t->shape[d] = want.shape[d]);
    t->data = want.ndim == 1 ? m->random_vec : m->random_mat;
    t->nbytes = n * 2;
    t->file = -1;
    return t->name ? t : NULL;
}

static const st_tensor *model_tensor(ltri_model *m, const char *name, model_expect want, ltri_error *err) {
    if (m->random) return model_random_tensor(m, name, want, err);
    const st_tensor *t = st_find(&m->st, name);
    if (!t) {
        char buf[4200];
        ltri_fail(err, "tensor %s not found in %s%s%s%s", name, model_checkpoint_name(m, buf, sizeof(buf)),
                  want.if_missing ? " (" : "", want.if_missing ? want.if_missing : "", want.if_missing ? ")" : "");
        return NULL;
    }
    const char *file = st_tensor_path(&m->st, t);
    if (t->unsupported || (t->dtype != LTRI_F32 && t->dtype != LTRI_BF16 && t->dtype != LTRI_F16)) {
        ltri_fail(err, "%s in %s: dtype %s, but weights must be F32, BF16 or F16", name, file, t->dtype_name);
        return NULL;
    }
    int same = t->ndim == want.ndim;
    for (int d = 0; same && d < want.ndim; d++) same = t->shape[d] == want.shape[d];
    if (!same) {
        char have[256], need[64];
        model_format_shape(have, sizeof(have), t->ndim, t->shape);
        model_format_shape(need, sizeof(need), want.ndim, want.shape);
        ltri_fail(err, "%s in %s: shape %s but config (%s) needs %s", name, file, have, want.why, need);
        return NULL;
    }
    return t;
}

#define MODEL_TENSOR(out, want, ...)                                                                             \
    do {                                                                                                         \
        char name_[256];                                                                                         \
        snprintf(name_, sizeof(name_), __VA_ARGS__);                                                             \
        if (!((out) = model_tensor(m, name_, (want), err))) return -1;                                           \
    } while (0)

static model_expect model_vec(int64_t n, const char *why) { return (model_expect){1, {n, 0}, why, NULL}; }
static model_expect model_mat(int64_t rows, int64_t cols, const char *why) {
    return (model_expect){2, {rows, cols}, why, NULL};
}
static model_expect model_bias(int64_t n, const char *why, const char *if_missing) {
    return (model_expect){1, {n, 0}, why, if_missing};
}

static int model_bind_layer(ltri_model *m, int i, ltri_error *err) {
    const ltri_model_config *c = &m->cfg;
    model_layer_tensors *l = &m->layers[i];
    char why_q[160], why_kv[160], why_o[160], why_dim[64], why_ffn[96], why_down[96];
    snprintf(why_q, sizeof(why_q), "num_attention_heads=%d, head_dim=%d, hidden_size=%d", c->n_heads, c->head_dim,
             c->dim);
    snprintf(why_kv, sizeof(why_kv), "num_key_value_heads=%d, head_dim=%d, hidden_size=%d", c->n_kv_heads,
             c->head_dim, c->dim);
    snprintf(why_o, sizeof(why_o), "hidden_size=%d, num_attention_heads=%d, head_dim=%d", c->dim, c->n_heads,
             c->head_dim);
    snprintf(why_dim, sizeof(why_dim), "hidden_size=%d", c->dim);
    snprintf(why_ffn, sizeof(why_ffn), "intermediate_size=%d, hidden_size=%d", c->hidden_dim, c->dim);
    snprintf(why_down, sizeof(why_down), "hidden_size=%d, intermediate_size=%d", c->dim, c->hidden_dim);
    const int64_t q_out = (int64_t)c->n_heads * c->head_dim, kv_out = (int64_t)c->n_kv_heads * c->head_dim;
    char attn_bias[128], mlp_bias[128];
    snprintf(attn_bias, sizeof(attn_bias), "%s: %s", c->arch_name,
             c->arch == LTRI_ARCH_QWEN2 ? "q/k/v projections always have biases" : "attention_bias is true");
    snprintf(mlp_bias, sizeof(mlp_bias), "%s: mlp_bias is true", c->arch_name);

    MODEL_TENSOR(l->attn_norm, model_vec(c->dim, why_dim), "model.layers.%d.input_layernorm.weight", i);
    MODEL_TENSOR(l->wq, model_mat(q_out, c->dim, why_q), "model.layers.%d.self_attn.q_proj.weight", i);
    MODEL_TENSOR(l->wk, model_mat(kv_out, c->dim, why_kv), "model.layers.%d.self_attn.k_proj.weight", i);
    MODEL_TENSOR(l->wv, model_mat(kv_out, c->dim, why_kv), "model.layers.%d.self_attn.v_proj.weight", i);
    MODEL_TENSOR(l->wo, model_mat(c->dim, q_out, why_o), "model.layers.%d.self_attn.o_proj.weight", i);
    if (c->qkv_bias) {
        MODEL_TENSOR(l->bq, model_bias(q_out, why_q, attn_bias), "model.layers.%d.self_attn.q_proj.bias", i);
        MODEL_TENSOR(l->bk, model_bias(kv_out, why_kv, attn_bias), "model.layers.%d.self_attn.k_proj.bias", i);
        MODEL_TENSOR(l->bv, model_bias(kv_out, why_kv, attn_bias), "model.layers.%d.self_attn.v_proj.bias", i);
    }
    if (c->o_bias)
        MODEL_TENSOR(l->bo, model_bias(c->dim, why_dim, attn_bias), "model.layers.%d.self_attn.o_proj.bias", i);
    MODEL_TENSOR(l->ffn_norm, model_vec(c->dim, why_dim), "model.layers.%d.post_attention_layernorm.weight", i);
    MODEL_TENSOR(l->w_gate, model_mat(c->hidden_dim, c->dim, why_ffn), "model.layers.%d.mlp.gate_proj.weight", i);
    MODEL_TENSOR(l->w_up, model_mat(c->hidden_dim, c->dim, why_ffn), "model.layers.%d.mlp.up_proj.weight", i);
    MODEL_TENSOR(l->w_down, model_mat(c->dim, c->hidden_dim, why_down), "model.layers.%d.mlp.down_proj.weight", i);
    if (c->mlp_bias) {
        MODEL_TENSOR(l->b_gate, model_bias(c->hidden_dim, why_ffn, mlp_bias), "model.layers.%d.mlp.gate_proj.bias",
                     i);
        MODEL_TENSOR(l->b_up, model_bias(c->hidden_dim, why_ffn, mlp_bias), "model.layers.%d.mlp.up_proj.bias", i);
        MODEL_TENSOR(l->b_down, model_bias(c->dim, why_dim, mlp_bias), "model.layers.%d.mlp.down_proj.bias", i);
    }
    return 0;
}

static int model_bind(ltri_model *m, ltri_error *err) {
    const ltri_model_config *c = &m->cfg;
    char why_vocab[96], why_dim[64];
    snprintf(why_vocab, sizeof(why_vocab), "vocab_size=%d, hidden_size=%d", c->vocab_size, c->dim);
    snprintf(why_dim, sizeof(why_dim), "hidden_size=%d", c->dim);
    MODEL_TENSOR(m->embed, model_mat(c->vocab_size, c->dim, why_vocab), "model.embed_tokens.weight");
    MODEL_TENSOR(m->final_norm, model_vec(c->dim, why_dim), "model.norm.weight");
    /* Tied: transformers ties lm_head to the embedding and ignores any stored
     * lm_head.weight; so do we. */
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if (!m->random && !st_find(&m->st, "lm_head.weight")) {
        return ltri_fail(err, "%s: tensor lm_head.weight not found and tie_word_embeddings is false", m->dir);
    } else {
        MODEL_TENSOR(m->lm_head, model_mat(c->vocab_size, c->dim, why_vocab), "lm_head.weight");
    }
    m->layers = calloc((size_t)c->n_layers, sizeof(*m->layers));
    if (!m->layers) return ltri_fail(err, "%s: out of memory for %d layers", m->dir, c->n_layers);
    for (int i = 0; i < c->n_layers; i++)
        if (model_bind_layer(m, i, err) != 0) return -1;
    return 0;
}

static int model_path(char *buf, size_t len, const char *dir, const char *name, ltri_error *err) {
    int n = snprintf(buf, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len) return ltri_fail(err, "%s: path too long", dir);
    return 0;
}

static int model_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* tokenizer.json: required when the caller must turn text into ids; otherwise
 * loaded when present, and a file we cannot read only costs the text output. */
static int model_open_tokenizer(ltri_model *m, int need_tokenizer, ltri_error *err) {
    char path[4200];
    if (model_path(path, sizeof(path), m->dir, "tokenizer.json", err) != 0) return -1;
    if (!model_exists(path)) {
        if (need_tokenizer) return ltri_fail(err, "%s: no tokenizer.json", m->dir);
        return 0;
    }
    ltri_error tok_err = {{0}};
    m->tokenizer = tokenizer_load(path, &tok_err);
    if (!m->tokenizer) {
        if (need_tokenizer) return ltri_fail(err, "%s", tok_err.msg);
        LOG_WARN("%s (continuing without a tokenizer)", tok_err.msg);
        return 0;
    }
    int n_tok = tokenizer_vocab_size(m->tokenizer);
    if (n_tok > m->cfg.vocab_size)
        LOG_WARN("%s: tokenizer.json has %d tokens but config vocab_size is %d; ids >= %d have no embedding", m->dir,
                 n_tok, m->cfg.vocab_size, m->cfg.vocab_size);
    return 0;
}

static int model_open_parts(ltri_model *m, const char *dir, int need_tokenizer, ltri_error *err) {
    struct stat sb;
    if (stat(dir, &sb) != 0) return ltri_fail(err, "%s: cannot open model directory: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return ltri_fail(err, "%s: not a directory (expected a model directory)", dir);
    int n = snprintf(m->dir, sizeof(m->dir), "%s", dir);
    if (n < 0 || (size_t)n >= sizeof(m->dir)) return ltri_fail(err, "%s: path too long", dir);

    char path[4200];
    if (model_path(path, sizeof(path), dir, "config.json", err) != 0) return -1;
    if (!model_exists(path)) return ltri_fail(err, "%s: no config.json", dir);
    if (model_config_load(&m->cfg, path, err) != 0) return -1;
    if (model_path(path, sizeof(path), dir, "generation_config.json", err) != 0) return -1;
    if (model_exists(path) && model_config_merge_generation(&m->cfg, path, err) != 0) return -1;

    if (st_open_dir(&m->st, dir, err) != 0) return -1;
    if (model_bind(m, err) != 0) return -1;
    if (model_open_tokenizer(m, need_tokenizer, err) != 0) return -1;

    char desc[512];
    model_config_describe(&m->cfg, desc, sizeof(desc));
    LOG_INFO("%s: %s; %d tensors in %d file(s)%s", dir, desc, m->st.n_tensors, m->st.n_files,
             m->tokenizer ? "" : "; no tokenizer");
    return 0;
}

int model_open(ltri_model *m, const char *dir, int need_tokenizer, ltri_error *err) {
    memset(m, 0, sizeof(*m));
    if (model_open_parts(m, dir, need_tokenizer, err) != 0) {
        model_close(m);
        return -1;
    }
    return 0;
}

int model_open_random(ltri_model *m, const char *config_path, uint64_t seed, ltri_error *err) {
    memset(m, 0, sizeof(*m));
    m->random = 1;
    snprintf(m->dir, sizeof(m->dir), "random weights for %s", config_path);
    if (model_config_load(&m->cfg, config_path, err) != 0) goto fail;
    const ltri_model_config *c = &m->cfg;
    size_t q_out = (size_t)c->n_heads * c->head_dim, mat = (size_t)c->vocab_size * c->dim;
    if ((size_t)c->hidden_dim * c->dim > mat) mat = (size_t)c->hidden_dim * c->dim;
    if (q_out * c->dim > mat) mat = q_out * c->dim;
    size_t vec = (size_t)c->dim;
    if ((size_t)c->hidden_dim > vec) vec = (size_t)c->hidden_dim;
    if (q_out > vec) vec = q_out;
    m->cap_random = 4 + 16 * c->n_layers;
    m->random_mat = malloc(mat * 2);
    m->random_vec = malloc(vec * 2);
    m->random_tensors = calloc((size_t)m->cap_random, sizeof(st_tensor));
    if (!m->random_mat || !m->random_vec || !m->random_tensors) {
        ltri_fail(err, "random model: out of host memory (%.1f GiB)", mat * 2.0 / (1 << 30));
        goto fail;
    }
    ltri_rng rng;
    ltri_rng_seed(&rng, seed);
    for (size_t i = 0; i < mat; i++) m->random_mat[i] = ltri_f32_to_bf16(ltri_rng_sym(&rng, 0.02f));
    for (size_t i = 0; i < vec; i++) m->random_vec[i] = ltri_f32_to_bf16(1.0f + ltri_rng_sym(&rng, 0.1f));
    if (model_bind(m, err) != 0) goto fail;
    return 0;
fail:
    model_close(m);
    return -1;
}

void model_close(ltri_model *m) {
    for (int i = 0; i < m->n_random; i++) free(m->random_tensors[i].name);
    free(m->random_tensors);
    free(m->random_mat);
    free(m->random_vec);
    if (m->tokenizer) tokenizer_free(m->tokenizer);
    free(m->layers);
    st_close(&m->st);
    memset(m, 0, sizeof(*m));
}
