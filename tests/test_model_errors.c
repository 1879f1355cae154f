/* model_open() on small model directories built here (config.json text plus
 * random tensors written with st_write_file): a good tiny Llama (one file and
 * two shards) opens, and every broken variant is refused with a message that
 * names the tensor or file at fault. */
#define _XOPEN_SOURCE 700 /* nftw() */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "model/model.h"
#include "test_util.h"

/* The tiny Llama: dim 16, 2 layers, 4 heads of 4, 2 kv heads, ffn 32. */
enum { DIM = 16, LAYERS = 2, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 4, FFN = 32, VOCAB = 50 };

#define LLAMA_CONFIG(extra)                                                                                      \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 16, \"intermediate_size\": 32,"              \
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 50,"   \
    " \"eos_token_id\": 2" extra "}"

/* ---- building model directories -------------------------------------------- */

#define MAX_TENSORS 64

typedef struct {
    int n;
    char names[MAX_TENSORS][96];
    ltri_dtype dtypes[MAX_TENSORS];
    int ndims[MAX_TENSORS];
    int64_t shapes[MAX_TENSORS][2];
} tensor_list;

static void list_add(tensor_list *l, int ndim, int64_t d0, int64_t d1, const char *fmt, int layer) {
    CHECK(l->n < MAX_TENSORS);
    if (l->n >= MAX_TENSORS) return;
    snprintf(l->names[l->n], sizeof(l->names[0]), fmt, layer);
    l->dtypes[l->n] = LTRI_F32;
    l->ndims[l->n] = ndim;
    l->shapes[l->n][0] = d0;
    l->shapes[l->n][1] = d1;
    l->n++;
}

static int list_index(const tensor_list *l, const char *name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0) return i;
    CHECK_MSG(0, "test bug: no tensor %s", name);
    return -1;
}

static void list_remove(tensor_list *l, const char *name) {
    int i = list_index(l, name);
    if (i < 0) return;
    l->n--;
    memmove(l->names[i], l->names[i + 1], (size_t)(l->n - i) * sizeof(l->names[0]));
    memmove(&l->dtypes[i], &l->dtypes[i + 1], (size_t)(l->n - i) * sizeof(l->dtypes[0]));
    memmove(&l->ndims[i], &l->ndims[i + 1], (size_t)(l->n - i) * sizeof(l->ndims[0]));
    memmove(l->shapes[i], l->shapes[i + 1], (size_t)(l->n - i) * sizeof(l->shapes[0]));
}

/* The state dict of LlamaForCausalLM (Qwen2: plus q/k/v biases). */
static void list_llama(tensor_list *l, int qkv_bias, int lm_head) {
    memset(l, 0, sizeof(*l));
    list_add(l, 2, VOCAB, DIM, "model.embed_tokens.weight", 0);
    for (int i = 0; i < LAYERS; i++) {
        list_add(l, 1, DIM, 0, "model.layers.%d.input_layernorm.weight", i);
        list_add(l, 2, HEADS * HEAD_DIM, DIM, "model.layers.%d.self_attn.q_proj.weight", i);
        list_add(l, 2, KV_HEADS * HEAD_DIM, DIM, "model.layers.%d.self_attn.k_proj.weight", i);
        list_add(l, 2, KV_HEADS * HEAD_DIM, DIM, "model.layers.%d.self_attn.v_proj.weight", i);
        list_add(l, 2, DIM, HEADS * HEAD_DIM, "model.layers.%d.self_attn.o_proj.weight", i);
        if (qkv_bias) {
            list_add(l, 1, HEADS * HEAD_DIM, 0, "model.layers.%d.self_attn.q_proj.bias", i);
            list_add(l, 1, KV_HEADS * HEAD_DIM, 0, "model.layers.%d.self_attn.k_proj.bias", i);
            list_add(l, 1, KV_HEADS * HEAD_DIM, 0, "model.layers.%d.self_attn.v_proj.bias", i);
        }
        list_add(l, 1, DIM, 0, "model.layers.%d.post_attention_layernorm.weight", i);
        list_add(l, 2, FFN, DIM, "model.layers.%d.mlp.gate_proj.weight", i);
        list_add(l, 2, FFN, DIM, "model.layers.%d.mlp.up_proj.weight", i);
        list_add(l, 2, DIM, FFN, "model.layers.%d.mlp.down_proj.weight", i);
    }
    list_add(l, 1, DIM, 0, "model.norm.weight", 0);
    if (lm_head) list_add(l, 2, VOCAB, DIM, "lm_head.weight", 0);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (!f) return;
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    CHECK(fclose(f) == 0);
}

/* Writes tensors [begin, end) of l with random values into dir/file. */
static void write_tensors(const char *dir, const char *file, const tensor_list *l, int begin, int end, ltri_rng *rng) {
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    const char *names[MAX_TENSORS];
    const int64_t *shapes[MAX_TENSORS];
    const void *data[MAX_TENSORS];
    void *owned[MAX_TENSORS];
    int n = end - begin;
    for (int i = 0; i < n; i++) {
        int t = begin + i;
        names[i] = l->names[t];
        shapes[i] = l->shapes[t];
        size_t count = 1;
        for (int d = 0; d < l->ndims[t]; d++) count *= (size_t)l->shapes[t][d];
        float *values = malloc(count * sizeof(float));
        owned[i] = malloc(count * ltri_dtype_size(l->dtypes[t]) + 1);
        test_fill_random(rng, values, count, 1.0f);
        if (l->dtypes[t] == LTRI_I32)
            for (size_t k = 0; k < count; k++) ((int32_t *)owned[i])[k] = (int32_t)(values[k] * 100);
        else
            ltri_convert(owned[i], l->dtypes[t], values, LTRI_F32, count);
        free(values);
        data[i] = owned[i];
    }
    ltri_error err = {{0}};
    int rc = st_write_file(path, n, names, &l->dtypes[begin], &l->ndims[begin], shapes, data, &err);
    CHECK_MSG(rc == 0, "st_write_file: %s", err.msg);
    for (int i = 0; i < n; i++) free(owned[i]);
}

/* A model directory: config.json and the tensors in one file, or split in two
 * shards with model.safetensors.index.json. */
static void make_model(const char *dir, const char *config, const tensor_list *l, int sharded, ltri_rng *rng) {
    CHECK_MSG(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    if (config) write_text(dir, "config.json", config);
    if (!sharded) {
        write_tensors(dir, "model.safetensors", l, 0, l->n, rng);
        return;
    }
    const char *shard[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    int half = l->n / 2;
    write_tensors(dir, shard[0], l, 0, half, rng);
    write_tensors(dir, shard[1], l, half, l->n, rng);
    char index[8192];
    size_t len = (size_t)snprintf(index, sizeof(index), "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < l->n; i++)
        len += (size_t)snprintf(index + len, sizeof(index) - len, "%s\"%s\": \"%s\"", i ? ", " : "", l->names[i],
                                shard[i >= half]);
    snprintf(index + len, sizeof(index) - len, "}}");
    write_text(dir, "model.safetensors.index.json", index);
}

/* model_open must fail with a message containing want1 (and want2), and leave
 * the struct zeroed. */
static void expect_open_error(const char *dir, int need_tokenizer, const char *want1, const char *want2,
                              const char *what) {
    ltri_model m;
    ltri_error err = {{0}};
    int rc = model_open(&m, dir, need_tokenizer, &err);
    CHECK_MSG(rc == -1, "%s: model opened", what);
    CHECK_MSG(strstr(err.msg, want1) != NULL, "%s: message lacks '%s': %s", what, want1, err.msg);
    CHECK_MSG(!want2 || strstr(err.msg, want2) != NULL, "%s: message lacks '%s': %s", what, want2, err.msg);
    CHECK_MSG(m.layers == NULL && m.st.n_files == 0 && m.tokenizer == NULL, "%s: not cleaned up", what);
    model_close(&m);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* ---- the cases ------------------------------------------------------------- */

static void test_good(const char *root, ltri_rng *rng) {
    char dir[600];
    tensor_list l;
    snprintf(dir, sizeof(dir), "%s/good", root);
    list_llama(&l, 0, 1);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    write_text(dir, "generation_config.json", "{\"eos_token_id\": [2, 7]}");
    ltri_model m;
    ltri_error err = {{0}};
    int rc = model_open(&m, dir, 0, &err);
    CHECK_MSG(rc == 0, "good model: %s", err.msg);
    if (rc == 0) {
        CHECK(m.cfg.n_layers == LAYERS && m.cfg.head_dim == HEAD_DIM && m.tokenizer == NULL);
        CHECK(m.cfg.n_eos == 2 && m.cfg.eos_token_ids[0] == 2 && m.cfg.eos_token_ids[1] == 7);
        CHECK(m.embed && m.embed->shape[0] == VOCAB && m.lm_head && m.lm_head != m.embed);
        CHECK(m.final_norm && m.final_norm->ndim == 1);
        for (int i = 0; i < LAYERS; i++) {
            const model_layer_tensors *t = &m.layers[i];
            CHECK(t->attn_norm && t->wq && t->wk && t->wv && t->wo && t->ffn_norm && t->w_gate && t->w_up &&
                  t->w_down);
            CHECK(!t->bq && !t->bk && !t->bv && !t->bo && !t->b_gate && !t->b_up && !t->b_down);
            CHECK(t->wk->shape[0] == KV_HEADS * HEAD_DIM && t->w_down->shape[1] == FFN);
        }
        char name[96];
        snprintf(name, sizeof(name), "model.layers.1.self_attn.v_proj.weight");
        CHECK(m.layers[1].wv == st_find(&m.st, name));
        model_close(&m);
        CHECK(m.layers == NULL && m.st.n_files == 0);
    }
    model_close(&m); /* closing twice is harmless */

    /* A broken tokenizer.json is only a warning when the caller does not need
     * one, and an error when it does. */
    write_text(dir, "tokenizer.json", "{}");
    rc = model_open(&m, dir, 0, &err);
    CHECK_MSG(rc == 0 && m.tokenizer == NULL, "broken tokenizer, not needed: %s", err.msg);
    model_close(&m);
    expect_open_error(dir, 1, "tokenizer.json", NULL, "broken tokenizer, needed");

    /* The same model in BF16, split in two shards. */
    snprintf(dir, sizeof(dir), "%s/sharded", root);
    for (int i = 0; i < l.n; i++) l.dtypes[i] = LTRI_BF16;
    make_model(dir, LLAMA_CONFIG(""), &l, 1, rng);
    rc = model_open(&m, dir, 0, &err);
    CHECK_MSG(rc == 0, "sharded model: %s", err.msg);
    if (rc == 0) {
        CHECK(m.st.n_files == 2 && m.embed->dtype == LTRI_BF16);
        CHECK(strstr(st_tensor_path(&m.st, m.embed), "model-00001-of-00002.safetensors") != NULL);
        CHECK(strstr(st_tensor_path(&m.st, m.lm_head), "model-00002-of-00002.safetensors") != NULL);
    }
    model_close(&m);
}

static void test_bad_dirs(const char *root, ltri_rng *rng) {
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/does_not_exist", root);
    expect_open_error(dir, 0, dir, "cannot open model directory", "nonexistent dir");

    snprintf(dir, sizeof(dir), "%s/good/config.json", root);
    expect_open_error(dir, 0, dir, "not a directory", "dir is a file");

    tensor_list l;
    list_llama(&l, 0, 1);
    snprintf(dir, sizeof(dir), "%s/no_config", root);
    make_model(dir, NULL, &l, 0, rng);
    expect_open_error(dir, 0, "no config.json", dir, "missing config.json");

    snprintf(dir, sizeof(dir), "%s/no_weights", root);
    CHECK(mkdir(dir, 0700) == 0);
    write_text(dir, "config.json", LLAMA_CONFIG(""));
    expect_open_error(dir, 0, "no model.safetensors or model.safetensors.index.json", dir, "no weights");

    snprintf(dir, sizeof(dir), "%s/bad_config", root);
    make_model(dir, LLAMA_CONFIG(", \"hidden_act\": \"gelu\""), &l, 0, rng);
    expect_open_error(dir, 0, "config.json", "hidden_act", "bad config");

    snprintf(dir, sizeof(dir), "%s/bad_generation_config", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    write_text(dir, "generation_config.json", "{\"eos_token_id\": ");
    expect_open_error(dir, 0, "generation_config.json", "line 1", "bad generation_config.json");

    snprintf(dir, sizeof(dir), "%s/no_tokenizer", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    char want[700];
    snprintf(want, sizeof(want), "%s: no tokenizer.json", dir);
    expect_open_error(dir, 1, want, NULL, "need_tokenizer without tokenizer.json");
}

static void test_bad_tensors(const char *root, ltri_rng *rng) {
    char dir[600];
    tensor_list l;

    list_llama(&l, 0, 1);
    list_remove(&l, "model.layers.1.mlp.up_proj.weight");
    snprintf(dir, sizeof(dir), "%s/missing_tensor", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    expect_open_error(dir, 0, "model.layers.1.mlp.up_proj.weight", "model.safetensors", "missing tensor");

    /* The example in model.h's spirit: a k_proj sized for all heads. */
    list_llama(&l, 0, 1);
    l.shapes[list_index(&l, "model.layers.0.self_attn.k_proj.weight")][0] = DIM;
    snprintf(dir, sizeof(dir), "%s/wrong_shape", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 1, rng);
    expect_open_error(dir, 0,
                      "model.layers.0.self_attn.k_proj.weight in ", "model-00001-of-00002.safetensors: shape [16, 16] "
                      "but config (num_key_value_heads=2, head_dim=4, hidden_size=16) needs [8, 16]",
                      "wrong shape");

    list_llama(&l, 0, 1);
    l.ndims[list_index(&l, "model.norm.weight")] = 2;
    l.shapes[list_index(&l, "model.norm.weight")][1] = 1;
    snprintf(dir, sizeof(dir), "%s/wrong_rank", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    expect_open_error(dir, 0, "model.norm.weight", "shape [16, 1] but config (hidden_size=16) needs [16]",
                      "wrong rank");

    list_llama(&l, 0, 1);
    l.dtypes[list_index(&l, "model.layers.0.self_attn.q_proj.weight")] = LTRI_I32;
    snprintf(dir, sizeof(dir), "%s/wrong_dtype", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    expect_open_error(dir, 0, "model.layers.0.self_attn.q_proj.weight", "dtype I32", "wrong dtype");

    /* lm_head.weight absent: an error unless the embeddings are tied. */
    list_llama(&l, 0, 0);
    snprintf(dir, sizeof(dir), "%s/no_lm_head", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 0, rng);
    expect_open_error(dir, 0, "lm_head.weight", "tie_word_embeddings", "no lm_head, untied");
    snprintf(dir, sizeof(dir), "%s/no_lm_head_tied", root);
    make_model(dir, LLAMA_CONFIG(", \"tie_word_embeddings\": true"), &l, 0, rng);
    ltri_model m;
    ltri_error err = {{0}};
    int rc = model_open(&m, dir, 0, &err);
    CHECK_MSG(rc == 0 && m.lm_head == m.embed, "no lm_head, tied: %s", err.msg);
    model_close(&m);

    /* Qwen2 needs q/k/v biases. */
    const char *qwen = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 16, \"intermediate_size\": 32,"
                       " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                       " \"vocab_size\": 50, \"tie_word_embeddings\": true}";
    list_llama(&l, 1, 0);
    snprintf(dir, sizeof(dir), "%s/qwen2", root);
    make_model(dir, qwen, &l, 0, rng);
    rc = model_open(&m, dir, 0, &err);
    CHECK_MSG(rc == 0, "qwen2: %s", err.msg);
    if (rc == 0) {
        CHECK(m.layers[0].bq && m.layers[0].bk && m.layers[0].bv && !m.layers[0].bo);
        CHECK(m.layers[1].bk->shape[0] == KV_HEADS * HEAD_DIM && m.lm_head == m.embed);
    }
    model_close(&m);
    list_remove(&l, "model.layers.0.self_attn.q_proj.bias");
    snprintf(dir, sizeof(dir), "%s/qwen2_no_bias", root);
    make_model(dir, qwen, &l, 0, rng);
    expect_open_error(dir, 0, "model.layers.0.self_attn.q_proj.bias not found in ",
                      "model.safetensors (Qwen2ForCausalLM: q/k/v projections always have biases)", "qwen2 without bias");

    /* Llama with attention_bias: o_proj has one too. */
    list_llama(&l, 1, 1);
    snprintf(dir, sizeof(dir), "%s/llama_attention_bias", root);
    make_model(dir, LLAMA_CONFIG(", \"attention_bias\": true"), &l, 0, rng);
    expect_open_error(dir, 0, "model.layers.0.self_attn.o_proj.bias not found", "attention_bias is true",
                      "llama attention_bias without o_proj.bias");

    /* A shard cut short. */
    list_llama(&l, 0, 1);
    snprintf(dir, sizeof(dir), "%s/truncated", root);
    make_model(dir, LLAMA_CONFIG(""), &l, 1, rng);
    char shard[700];
    snprintf(shard, sizeof(shard), "%s/model-00002-of-00002.safetensors", dir);
    struct stat sb;
    CHECK(stat(shard, &sb) == 0);
    CHECK(truncate(shard, sb.st_size - 100) == 0);
    expect_open_error(dir, 0, "model-00002-of-00002.safetensors", "exceed the data area", "truncated shard");
}

int main(void) {
    ltri_rng rng;
    ltri_rng_seed(&rng, test_seed(7));
    char root[] = "/tmp/ltri_test_model_XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    ltri_log_init(LTRI_LOG_WARN, -1); /* model_open's info lines are noise here */
    ltri_model zero;
    memset(&zero, 0, sizeof(zero));
    model_close(&zero); /* safe on a zeroed struct */

    test_good(root, &rng);
    test_bad_dirs(root, &rng);
    test_bad_tensors(root, &rng);

    CHECK(nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    return test_finish("test_model_errors");
}
