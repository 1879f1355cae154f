/* config.json parsing: the configs of the architectures we support (as their
 * Hugging Face repos write them, transformers 4 and 5 styles), RoPE inverse
 * frequencies against an independent double-precision computation, and
 * configs that must be refused with a message naming the file and the key. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/config.h"
#include "test_util.h"

static char g_path[512]; /* dir/config.json, set once by main() */
static char g_gen_path[512];

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (!f) return;
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    CHECK(fclose(f) == 0);
}

static int load(const char *text, ltri_model_config *cfg, ltri_error *err) {
    write_text(g_path, text);
    memset(err, 0, sizeof(*err));
    return model_config_load(cfg, g_path, err);
}

/* A tiny Llama; extra is appended inside the object. */
#define TINY_LLAMA(extra)                                                                                        \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "            \
    "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 100" extra \
    "}"

static void expect_error(const char *text, const char *want, const char *what) {
    ltri_model_config cfg;
    ltri_error err;
    int rc = load(text, &cfg, &err);
    CHECK_MSG(rc == -1, "%s: config accepted", what);
    CHECK_MSG(strstr(err.msg, "config.json") != NULL, "%s: message does not name the file: %s", what, err.msg);
    CHECK_MSG(strstr(err.msg, want) != NULL, "%s: message lacks '%s': %s", what, want, err.msg);
}

/* ---- RoPE references, in double, straight from the formulas --------------- */

static double ref_default(double theta, int head_dim, int i) { return 1.0 / pow(theta, 2.0 * i / head_dim); }

/* Llama 3.1 (Meta's apply_scaling; transformers _compute_llama3_parameters). */
static double ref_llama3(double theta, int head_dim, int i, double factor, double low, double high, double old_len) {
    double inv = ref_default(theta, head_dim, i);
    double wavelen = 2.0 * M_PI / inv;
    if (wavelen < old_len / high) return inv;
    if (wavelen > old_len / low) return inv / factor;
    double smooth = (old_len / wavelen - low) / (high - low);
    return (1.0 - smooth) * inv / factor + smooth * inv;
}

/* Largest per-element |got - ref| / |ref|. */
static double max_rel_error(const float *got, const double *ref, int n) {
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / fabs(ref[i]);
        if (!(e == e)) return INFINITY;
        if (e > worst) worst = e;
    }
    return worst;
}

static void check_llama3_inv_freq(const ltri_model_config *cfg, const char *what) {
    float inv[64];
    double ref[64];
    CHECK(cfg->head_dim == 128);
    model_config_rope_inv_freq(cfg, inv);
    int n_long = 0, n_short = 0, n_medium = 0;
    for (int i = 0; i < 64; i++) {
        ref[i] = ref_llama3(500000.0, 128, i, 8.0, 1.0, 4.0, 8192.0);
        double wavelen = 2.0 * M_PI / ref_default(500000.0, 128, i);
        if (wavelen < 2048.0) n_short++;
        else if (wavelen > 8192.0) n_long++;
        else n_medium++;
    }
    /* The Llama 3.1 values exercise all three bands. */
    CHECK_MSG(n_short > 0 && n_long > 0 && n_medium > 0, "bands %d/%d/%d", n_short, n_medium, n_long);
    double e = max_rel_error(inv, ref, 64);
    CHECK_MSG(e < 1e-6, "%s: llama3 inv_freq max relative error %g", what, e);
    CHECK(inv[0] == 1.0f);
    /* The longest wavelength is scaled by exactly 1/factor. */
    CHECK_MSG(fabs(inv[63] * 8.0 - ref_default(500000.0, 128, 63)) / ref_default(500000.0, 128, 63) < 1e-6,
              "%s: inv[63] = %g", what, (double)inv[63]);
}

/* ---- configs that load ----------------------------------------------------- */

/* meta-llama/Llama-3.1-8B-Instruct's config.json (transformers 4 keys). */
static void test_llama31(void) {
    ltri_model_config cfg;
    ltri_error err;
    int rc = load("{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
                  " \"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"head_dim\": 128,"
                  " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
                  " \"intermediate_size\": 14336, \"max_position_embeddings\": 131072, \"mlp_bias\": false,"
                  " \"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_hidden_layers\": 32,"
                  " \"num_key_value_heads\": 8, \"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05,"
                  " \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                  " \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
                  " \"rope_theta\": 500000.0, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
                  " \"transformers_version\": \"4.43.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}",
                  &cfg, &err);
    CHECK_MSG(rc == 0, "llama 3.1: %s", err.msg);
    if (rc != 0) return;
    CHECK(cfg.arch == LTRI_ARCH_LLAMA && strcmp(cfg.arch_name, "LlamaForCausalLM") == 0);
    CHECK(cfg.dim == 4096 && cfg.hidden_dim == 14336 && cfg.n_layers == 32);
    CHECK(cfg.n_heads == 32 && cfg.n_kv_heads == 8 && cfg.head_dim == 128);
    CHECK(cfg.vocab_size == 128256 && cfg.max_position_embeddings == 131072);
    CHECK(cfg.norm_eps == 1e-5f && !cfg.tie_embeddings);
    CHECK(!cfg.qkv_bias && !cfg.o_bias && !cfg.mlp_bias && cfg.sliding_window == 0);
    CHECK(cfg.rope_type == LTRI_ROPE_LLAMA3 && cfg.rope_theta == 500000.0f && cfg.rope_factor == 8.0f);
    CHECK(cfg.rope_low_freq_factor == 1.0f && cfg.rope_high_freq_factor == 4.0f);
    CHECK(cfg.rope_original_max_position == 8192);
    CHECK(cfg.bos_token_id == 128000);
    CHECK(cfg.n_eos == 3 && cfg.eos_token_ids[0] == 128001 && cfg.eos_token_ids[2] == 128009);
    check_llama3_inv_freq(&cfg, "rope_scaling");
    char desc[512];
    model_config_describe(&cfg, desc, sizeof(desc));
    CHECK_MSG(strstr(desc, "LlamaForCausalLM") && strstr(desc, "llama3"), "describe: %s", desc);

    /* generation_config.json adds its ids, without duplicates. */
    write_text(g_gen_path, "{\"bos_token_id\": 128000, \"eos_token_id\": [128009, 128001, 7], \"do_sample\": true}");
    rc = model_config_merge_generation(&cfg, g_gen_path, &err);
    CHECK_MSG(rc == 0, "generation config: %s", err.msg);
    CHECK(cfg.n_eos == 4 && cfg.eos_token_ids[3] == 7);
    write_text(g_gen_path, "{\"eos_token_id\": [10, 11, 12, 13, 14]}");
    rc = model_config_merge_generation(&cfg, g_gen_path, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, "generation_config.json") && strstr(err.msg, "more than 8"),
              "too many eos: %s", err.msg);
    write_text(g_gen_path, "{\"eos_token_id\": \"2\"}");
    rc = model_config_merge_generation(&cfg, g_gen_path, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, "generation_config.json") && strstr(err.msg, "eos_token_id"),
              "eos string: %s", err.msg);
}

/* transformers 5 writes rope_parameters (with rope_theta inside) instead. */
static void test_transformers5(void) {
    ltri_model_config cfg;
    ltri_error err;
    int rc = load("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": 14336,"
                  " \"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8,"
                  " \"vocab_size\": 128256, \"rms_norm_eps\": 1e-05, \"dtype\": \"bfloat16\","
                  " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0,"
                  " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192},"
                  " \"transformers_version\": \"5.0.0\"}",
                  &cfg, &err);
    CHECK_MSG(rc == 0, "transformers 5: %s", err.msg);
    if (rc == 0) {
        CHECK(cfg.rope_type == LTRI_ROPE_LLAMA3 && cfg.rope_theta == 500000.0f && cfg.head_dim == 128);
        check_llama3_inv_freq(&cfg, "rope_parameters");
    }

    /* rope_parameters wins over stale transformers 4 keys. */
    rc = load(TINY_LLAMA(", \"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0},"
                         " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}"),
              &cfg, &err);
    CHECK_MSG(rc == 0, "rope_parameters wins: %s", err.msg);
    CHECK(rc != 0 || (cfg.rope_type == LTRI_ROPE_DEFAULT && cfg.rope_theta == 1000000.0f));
}

static void test_rope_default_and_linear(void) {
    ltri_model_config cfg;
    ltri_error err;
    /* head_dim 96: 2i/96 is not exact in binary, unlike 2i/128. */
    int rc = load(TINY_LLAMA(", \"head_dim\": 96, \"rope_theta\": 1000000.0"), &cfg, &err);
    CHECK_MSG(rc == 0, "default rope: %s", err.msg);
    if (rc == 0) {
        float inv[48];
        double ref[48];
        model_config_rope_inv_freq(&cfg, inv);
        for (int i = 0; i < 48; i++) ref[i] = ref_default(1e6, 96, i);
        double e = max_rel_error(inv, ref, 48);
        CHECK_MSG(e < 1e-6, "default inv_freq max relative error %g", e);
    }
    /* The older "type" key (Llama 2 era configs). */
    rc = load(TINY_LLAMA(", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"), &cfg, &err);
    CHECK_MSG(rc == 0, "linear rope: %s", err.msg);
    if (rc == 0) {
        CHECK(cfg.rope_type == LTRI_ROPE_LINEAR && cfg.rope_factor == 2.0f && cfg.rope_theta == 10000.0f);
        float inv[8];
        double ref[8];
        model_config_rope_inv_freq(&cfg, inv);
        for (int i = 0; i < 8; i++) ref[i] = ref_default(10000.0, 16, i) / 2.0;
        double e = max_rel_error(inv, ref, 8);
        CHECK_MSG(e < 1e-6, "linear inv_freq max relative error %g", e);
    }
}

/* Qwen/Qwen2.5-0.5B-Instruct's config.json: q/k/v biases, tied embeddings, a
 * sliding_window that is off. */
static void test_qwen2(void) {
    ltri_model_config cfg;
    ltri_error err;
    const char *qwen = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0,"
                       " \"bos_token_id\": 151643, \"eos_token_id\": 151645, \"hidden_act\": \"silu\","
                       " \"hidden_size\": 896, \"initializer_range\": 0.02, \"intermediate_size\": 4864,"
                       " \"max_position_embeddings\": 32768, \"max_window_layers\": 21, \"model_type\": \"qwen2\","
                       " \"num_attention_heads\": 14, \"num_hidden_layers\": 24, \"num_key_value_heads\": 2,"
                       " \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, \"rope_theta\": 1000000.0,"
                       " \"sliding_window\": 32768, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
                       " \"use_cache\": true, \"use_sliding_window\": %s, \"vocab_size\": 151936}";
    char text[2048];
    snprintf(text, sizeof(text), qwen, "false");
    int rc = load(text, &cfg, &err);
    CHECK_MSG(rc == 0, "qwen2: %s", err.msg);
    if (rc == 0) {
        CHECK(cfg.arch == LTRI_ARCH_QWEN2 && cfg.head_dim == 64 && cfg.n_kv_heads == 2);
        CHECK(cfg.qkv_bias == 1 && cfg.o_bias == 0 && cfg.mlp_bias == 0);
        CHECK(cfg.tie_embeddings == 1 && cfg.sliding_window == 0);
        CHECK(cfg.rope_type == LTRI_ROPE_DEFAULT && cfg.rope_theta == 1e6f);
        CHECK(cfg.bos_token_id == 151643 && cfg.n_eos == 1 && cfg.eos_token_ids[0] == 151645);
    }
    snprintf(text, sizeof(text), qwen, "true");
    rc = load(text, &cfg, &err);
    CHECK_MSG(rc == 0 && cfg.sliding_window == 32768, "qwen2 with window: %s", err.msg);
}

/* mistralai/Mistral-7B-v0.1's config.json. */
static void test_mistral(void) {
    ltri_model_config cfg;
    ltri_error err;
    int rc = load("{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2,"
                  " \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
                  " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\","
                  " \"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8,"
                  " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"sliding_window\": 4096,"
                  " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"use_cache\": true,"
                  " \"vocab_size\": 32000}",
                  &cfg, &err);
    CHECK_MSG(rc == 0, "mistral: %s", err.msg);
    if (rc == 0) {
        CHECK(cfg.arch == LTRI_ARCH_MISTRAL && cfg.sliding_window == 4096);
        CHECK(!cfg.qkv_bias && !cfg.o_bias && !cfg.mlp_bias);
        CHECK(cfg.bos_token_id == 1 && cfg.n_eos == 1 && cfg.eos_token_ids[0] == 2);
    }
    /* Mistral v0.2+: no window. */
    rc = load("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128,"
              " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100, \"sliding_window\": null}",
              &cfg, &err);
    CHECK_MSG(rc == 0 && cfg.sliding_window == 0 && cfg.n_kv_heads == 4, "mistral null window: %s", err.msg);
}

static void test_defaults_and_options(void) {
    ltri_model_config cfg;
    ltri_error err;
    int rc = load(TINY_LLAMA(""), &cfg, &err);
    CHECK_MSG(rc == 0, "tiny llama: %s", err.msg);
    if (rc == 0) {
        CHECK(cfg.head_dim == 16 && cfg.norm_eps == 1e-6f && cfg.max_position_embeddings == 2048);
        CHECK(cfg.rope_theta == 10000.0f && cfg.rope_type == LTRI_ROPE_DEFAULT && !cfg.tie_embeddings);
        CHECK(cfg.bos_token_id == -1 && cfg.n_eos == 0);
    }
    /* model_type instead of architectures; head_dim given and != hidden/heads. */
    rc = load("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 1,"
              " \"num_attention_heads\": 2, \"head_dim\": 48, \"vocab_size\": 10}",
              &cfg, &err);
    CHECK_MSG(rc == 0, "explicit head_dim: %s", err.msg);
    CHECK(rc != 0 || (cfg.head_dim == 48 && cfg.n_kv_heads == 2 && strcmp(cfg.arch_name, "llama") == 0));
    rc = load(TINY_LLAMA(", \"head_dim\": null, \"bos_token_id\": null, \"eos_token_id\": null"), &cfg, &err);
    CHECK_MSG(rc == 0 && cfg.head_dim == 16 && cfg.bos_token_id == -1 && cfg.n_eos == 0, "nulls: %s", err.msg);
    /* eos as a list with a repeat. */
    rc = load(TINY_LLAMA(", \"eos_token_id\": [5, 6, 5, 7]"), &cfg, &err);
    CHECK_MSG(rc == 0 && cfg.n_eos == 3 && cfg.eos_token_ids[2] == 7, "eos list: %s", err.msg);
    rc = load(TINY_LLAMA(", \"attention_bias\": true, \"mlp_bias\": true, \"tie_word_embeddings\": true"), &cfg, &err);
    CHECK_MSG(rc == 0 && cfg.qkv_bias && cfg.o_bias && cfg.mlp_bias && cfg.tie_embeddings, "llama biases: %s",
              err.msg);
}

/* ---- configs that must be refused ------------------------------------------ */

static void test_errors(const char *dir) {
    ltri_model_config cfg;
    ltri_error err;
    char missing[600];
    snprintf(missing, sizeof(missing), "%s/nope/config.json", dir);
    CHECK(model_config_load(&cfg, missing, &err) == -1);
    CHECK_MSG(strstr(err.msg, missing) != NULL, "missing file: %s", err.msg);

    expect_error("{\n  \"hidden_size\": 64,\n  oops\n}", "line 3", "malformed JSON");
    expect_error("{\n  \"hidden_size\": 64,\n  oops\n}", "column", "malformed JSON column");
    expect_error("[1]", "must be a JSON object", "array");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 4}",
                 "missing required key 'vocab_size'", "missing key");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\", \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}",
                 "'hidden_size' must be a positive integer, got string", "wrong type");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 0, \"num_attention_heads\": 4, \"vocab_size\": 100}",
                 "'num_hidden_layers' must be a positive integer, got 0", "zero layers");
    expect_error("{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 64}",
                 "unsupported architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM", "unknown architecture");
    expect_error("{\"model_type\": \"gemma\"}", "unsupported architecture 'gemma'", "unknown model_type");
    expect_error("{\"hidden_size\": 64}", "no 'architectures' or 'model_type'", "no architecture");
    expect_error(TINY_LLAMA(", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}"),
                 "'rope_scaling.rope_type' 'yarn' is not supported", "yarn");
    expect_error(TINY_LLAMA(", \"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 2.0}"),
                 "'dynamic' is not supported", "dynamic");
    expect_error(TINY_LLAMA(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0,"
                            " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}"),
                 "missing required key 'rope_scaling.low_freq_factor'", "llama3 incomplete");
    expect_error(TINY_LLAMA(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 4.0,"
                            " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}"),
                 "must be greater than", "llama3 high == low");
    expect_error(TINY_LLAMA(", \"rope_theta\": -1"), "'rope_theta' must be a positive number", "negative theta");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 3,"
                 " \"vocab_size\": 100}",
                 "num_attention_heads (4) must be a multiple of num_key_value_heads (3)", "heads % kv");
    expect_error(TINY_LLAMA(", \"hidden_act\": \"gelu\""), "'hidden_act' must be \"silu\", got \"gelu\"", "gelu");
    expect_error(TINY_LLAMA(", \"head_dim\": 15"), "head_dim 15 must be even", "odd head_dim");
    expect_error(TINY_LLAMA(", \"tie_word_embeddings\": \"yes\""), "'tie_word_embeddings' must be true or false",
                 "tie not bool");
    expect_error(TINY_LLAMA(", \"eos_token_id\": \"2\""), "'eos_token_id' must be an integer or a list", "eos string");
    expect_error(TINY_LLAMA(", \"eos_token_id\": [1, 2, 3, 4, 5, 6, 7, 8, 9]"), "more than 8", "too many eos");
    expect_error(TINY_LLAMA(", \"eos_token_id\": -3"), "eos_token_id -3", "negative eos");
    expect_error(TINY_LLAMA(", \"rope_scaling\": 3"), "'rope_scaling' must be an object", "rope_scaling int");
    expect_error(TINY_LLAMA(", \"sliding_window\": 4096, \"architectures\": 5"), "'architectures' must be",
                 "architectures not a list");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 60, \"intermediate_size\": 128,"
                 " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"vocab_size\": 100}",
                 "not a multiple of num_attention_heads", "hidden % heads");
}

int main(void) {
    char dir[] = "/tmp/ltri_test_config_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof(g_path), "%s/config.json", dir);
    snprintf(g_gen_path, sizeof(g_gen_path), "%s/generation_config.json", dir);

    test_llama31();
    test_transformers5();
    test_rope_default_and_linear();
    test_qwen2();
    test_mistral();
    test_defaults_and_options();
    test_errors(dir);

    CHECK(unlink(g_path) == 0);
    CHECK(unlink(g_gen_path) == 0);
    CHECK(rmdir(dir) == 0);
    return test_finish("test_config");
}
