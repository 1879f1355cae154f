/* A model's config.json, read into the numbers the engine needs.
 *
 * Architectures: Llama 2/3/3.1 (LlamaForCausalLM, rope_scaling type llama3 or
 * linear), Mistral (MistralForCausalLM) and Qwen2 (Qwen2ForCausalLM: q/k/v
 * biases). Both the transformers 4 keys (rope_theta, rope_scaling) and the
 * transformers 5 key (rope_parameters) are understood. */
#ifndef LTRI_MODEL_CONFIG_H
#define LTRI_MODEL_CONFIG_H

#include "core/error.h"

#define LTRI_MAX_EOS 8

typedef enum {
    LTRI_ARCH_LLAMA = 0,
    LTRI_ARCH_MISTRAL = 1,
    LTRI_ARCH_QWEN2 = 2,
} ltri_arch;

typedef enum {
    LTRI_ROPE_DEFAULT = 0,
    LTRI_ROPE_LINEAR = 1,
    LTRI_ROPE_LLAMA3 = 2,
} ltri_rope_type;

typedef struct {
    ltri_arch arch;
    char arch_name[64]; /* as written in config.json, e.g. "LlamaForCausalLM" */
    int dim;            /* hidden_size */
    int hidden_dim;     /* intermediate_size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int max_position_embeddings;
    float norm_eps;
    int tie_embeddings;
    int qkv_bias; /* q/k/v projections have biases (Qwen2; Llama with attention_bias) */
    int o_bias;   /* o_proj has a bias (Llama with attention_bias) */
    int mlp_bias; /* gate/up/down have biases (Llama with mlp_bias) */
    /* RoPE */
    float rope_theta;
    ltri_rope_type rope_type;
    float rope_factor;
    float rope_low_freq_factor;
    float rope_high_freq_factor;
    int rope_original_max_position;
    int sliding_window; /* 0 = none; recorded, see docs/ARCHITECTURE.md */
    /* Token ids; -1 when absent. */
    int bos_token_id;
    int eos_token_ids[LTRI_MAX_EOS];
    int n_eos;
} ltri_model_config;

/* Reads and validates path (a config.json). On error the message names the file
 * and the key. */
int model_config_load(ltri_model_config *cfg, const char *path, ltri_error *err);

/* Merges generation_config.json (path) into cfg: its eos_token_id(s) are added
 * to cfg's (deduplicated, at most LTRI_MAX_EOS), its bos_token_id fills a
 * missing one. transformers' generate() stops on the generation config's ids,
 * which for chat models (Llama 3 Instruct) include <|eot_id|>. */
int model_config_merge_generation(ltri_model_config *cfg, const char *path, ltri_error *err);

/* The head_dim/2 inverse frequencies of RoPE with the config's scaling applied,
 * computed as transformers' ROPE_INIT_FUNCTIONS do (fp32 results). */
void model_config_rope_inv_freq(const ltri_model_config *cfg, float *inv_freq);

/* One line describing the config, for logs. */
void model_config_describe(const ltri_model_config *cfg, char *buf, int len);

#endif
