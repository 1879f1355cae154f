/* A model directory opened and checked: config.json, the safetensors tensors
 * named as the architecture requires (shapes checked against the config), and
 * tokenizer.json. Nothing is copied: tensors point into the mappings, and the
 * engine converts them to the backend's weight type on upload. */
#ifndef LTRI_MODEL_MODEL_H
#define LTRI_MODEL_MODEL_H

#include "core/error.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

typedef struct {
    const st_tensor *attn_norm;
    const st_tensor *wq, *wk, *wv, *wo;
    const st_tensor *bq, *bk, *bv, *bo; /* NULL when the architecture has none */
    const st_tensor *ffn_norm;
    const st_tensor *w_gate, *w_up, *w_down;
    const st_tensor *b_gate, *b_up, *b_down;
} model_layer_tensors;

typedef struct {
    char dir[4096];
    ltri_model_config cfg;
    st_archive st;
    const st_tensor *embed;
    const st_tensor *final_norm;
    const st_tensor *lm_head; /* == embed when tied */
    model_layer_tensors *layers;
    ltri_tokenizer *tokenizer; /* NULL when opened without one */
    /* model_open_random: tensors made up, all pointing into two host buffers */
    int random;
    uint16_t *random_mat, *random_vec; /* bf16 */
    st_tensor *random_tensors;
    int n_random, cap_random;
} ltri_model;

/* Opens dir. need_tokenizer: fail when tokenizer.json is missing (the CLI needs
 * it; runs on token ids do not). */
int model_open(ltri_model *m, const char *dir, int need_tokenizer, ltri_error *err);
void model_close(ltri_model *m);

/* A model with the architecture of config_path (a config.json) and random bf16
 * weights (uniform, scale 0.02; norms near 1), for benchmarks of real sizes
 * without a checkpoint: no tensor files are read and all matrices share one
 * buffer. No tokenizer. */
int model_open_random(ltri_model *m, const char *config_path, uint64_t seed, ltri_error *err);

#endif
