/* config.json (and generation_config.json) -> ltri_model_config.
 *
 * Keys and defaults follow transformers' LlamaConfig, MistralConfig and
 * Qwen2Config; RoPE follows modeling_rope_utils.py (ROPE_INIT_FUNCTIONS). A
 * key with a wrong type or value is an error naming the key and what was found:
 * a checkpoint we misread would generate plausible garbage, which is worse
 * than refusing it. */
#include "model/config.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

/* ---- typed getters --------------------------------------------------------- */

static const char *cfg_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Absent and null both mean "use the default", as in transformers, where a
 * null in config.json becomes the attribute's None. */
static const json_t *cfg_get(const json_t *obj, const char *key) {
    const json_t *v = obj ? json_object_get(obj, key) : NULL;
    return json_is_null(v) ? NULL : v;
}

/* An int >= min. where: "" or "rope_scaling." (for messages). */
static int cfg_int(const char *path, const json_t *obj, const char *where, const char *key, int required, int dflt,
                   int min, int *out, ltri_error *err) {
    const json_t *v = cfg_get(obj, key);
    const char *what = min > 0 ? "a positive integer" : "a non-negative integer";
    if (!v) {
        if (required) return ltri_fail(err, "%s: missing required key '%s%s'", path, where, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return ltri_fail(err, "%s: '%s%s' must be %s, got %s", path, where, key, what, cfg_type_name(v));
    json_int_t x = json_integer_value(v);
    if (x < min || x > INT_MAX)
        return ltri_fail(err, "%s: '%s%s' must be %s, got %lld", path, where, key, what, (long long)x);
    *out = (int)x;
    return 0;
}

/* A number (integer or real) > 0. */
static int cfg_positive(const char *path, const json_t *obj, const char *where, const char *key, int required,
                        double dflt, double *out, ltri_error *err) {
    const json_t *v = cfg_get(obj, key);
    if (!v) {
        if (required) return ltri_fail(err, "%s: missing required key '%s%s'", path, where, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v))
        return ltri_fail(err, "%s: '%s%s' must be a positive number, got %s", path, where, key, cfg_type_name(v));
    double x = json_number_value(v);
    if (!(x > 0) || !isfinite(x))
        return ltri_fail(err, "%s: '%s%s' must be a positive number, got %g", path, where, key, x);
    *out = x;
    return 0;
}

static int cfg_bool(const char *path, const json_t *obj, const char *key, int dflt, int *out, ltri_error *err) {
    const json_t *v = cfg_get(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return ltri_fail(err, "%s: '%s' must be true or false, got %s", path, key, cfg_type_name(v));
    *out = json_is_true(v);
    return 0;
}

static json_t *cfg_load_json(const char *path, ltri_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        /* jansson reports I/O failures (a missing file) with line -1. */
        if (jerr.line < 0) ltri_fail(err, "%s: %s", path, jerr.text);
        else ltri_fail(err, "%s: invalid JSON at line %d, column %d: %s", path, jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        ltri_fail(err, "%s: must be a JSON object, got %s", path, cfg_type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

/* ---- token ids ------------------------------------------------------------- */

static int cfg_add_eos(ltri_model_config *cfg, const char *path, json_int_t id, ltri_error *err) {
    if (id < 0 || id > INT_MAX) return ltri_fail(err, "%s: eos_token_id %lld is not a token id", path, (long long)id);
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] == (int)id) return 0;
    if (cfg->n_eos == LTRI_MAX_EOS)
        return ltri_fail(err, "%s: more than %d distinct eos_token_id values", path, LTRI_MAX_EOS);
    cfg->eos_token_ids[cfg->n_eos++] = (int)id;
    return 0;
}

/* eos_token_id: an int, a list of ints, or null. */
static int cfg_read_eos(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    const json_t *v = cfg_get(root, "eos_token_id");
    if (!v) return 0;
    if (json_is_integer(v)) return cfg_add_eos(cfg, path, json_integer_value(v), err);
    if (!json_is_array(v))
        return ltri_fail(err, "%s: 'eos_token_id' must be an integer or a list of integers, got %s", path,
                         cfg_type_name(v));
    size_t i;
    const json_t *id;
    json_array_foreach(v, i, id) {
        if (!json_is_integer(id))
            return ltri_fail(err, "%s: 'eos_token_id'[%zu] must be an integer, got %s", path, i, cfg_type_name(id));
        if (cfg_add_eos(cfg, path, json_integer_value(id), err) != 0) return -1;
    }
    return 0;
}

static int cfg_read_bos(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    int bos;
    if (cfg_int(path, root, "", "bos_token_id", 0, -1, 0, &bos, err) != 0) return -1;
    if (bos >= 0) cfg->bos_token_id = bos;
    return 0;
}

/* ---- RoPE ------------------------------------------------------------------ */

/* transformers 4: rope_theta + rope_scaling {"rope_type" (or the older
 * "type"), factor, ...}; transformers 5: rope_parameters {"rope_type",
 * "rope_theta", factor, ...}. rope_parameters wins when both are present. */
static int cfg_read_rope(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    double theta;
    if (cfg_positive(path, root, "", "rope_theta", 0, 10000.0, &theta, err) != 0) return -1;
    const json_t *params = cfg_get(root, "rope_parameters");
    const char *where = "rope_parameters.";
    if (!params) {
        params = cfg_get(root, "rope_scaling");
        where = "rope_scaling.";
    }
    cfg->rope_type = LTRI_ROPE_DEFAULT;
    cfg->rope_factor = 1.0f;
    cfg->rope_low_freq_factor = 1.0f;
    cfg->rope_high_freq_factor = 1.0f;
    cfg->rope_original_max_position = 0;
    if (!params) {
        cfg->rope_theta = (float)theta;
        return 0;
    }
    if (!json_is_object(params))
        return ltri_fail(err, "%s: '%.*s' must be an object, got %s", path, (int)strlen(where) - 1, where,
                         cfg_type_name(params));
    if (cfg_positive(path, params, where, "rope_theta", 0, theta, &theta, err) != 0) return -1;
    cfg->rope_theta = (float)theta;

    const json_t *type = cfg_get(params, "rope_type");
    if (!type) type = cfg_get(params, "type");
    const char *name = "default";
    if (type) {
        if (!json_is_string(type))
            return ltri_fail(err, "%s: '%srope_type' must be a string, got %s", path, where, cfg_type_name(type));
        name = json_string_value(type);
    }
    double factor = 1.0, low = 1.0, high = 1.0;
    if (strcmp(name, "default") == 0) return 0;
    if (strcmp(name, "linear") == 0) {
        cfg->rope_type = LTRI_ROPE_LINEAR;
        if (cfg_positive(path, params, where, "factor", 1, 1.0, &factor, err) != 0) return -1;
        cfg->rope_factor = (float)factor;
        return 0;
    }
    if (strcmp(name, "llama3") == 0) {
        cfg->rope_type = LTRI_ROPE_LLAMA3;
        if (cfg_positive(path, params, where, "factor", 1, 1.0, &factor, err) != 0 ||
            cfg_positive(path, params, where, "low_freq_factor", 1, 1.0, &low, err) != 0 ||
            cfg_positive(path, params, where, "high_freq_factor", 1, 1.0, &high, err) != 0 ||
            cfg_int(path, params, where, "original_max_position_embeddings", 1, 0, 1,
                    &cfg->rope_original_max_position, err) != 0)
            return -1;
        /* The smoothing divides by (high - low). */
        if (!(high > low))
            return ltri_fail(err, "%s: '%shigh_freq_factor' (%g) must be greater than 'low_freq_factor' (%g)", path,
                             where, high, low);
        cfg->rope_factor = (float)factor;
        cfg->rope_low_freq_factor = (float)low;
        cfg->rope_high_freq_factor = (float)high;
        return 0;
    }
    return ltri_fail(err, "%s: '%srope_type' '%s' is not supported (supported: default, linear, llama3)", path, where,
                     name);
}

/* ---- architecture ---------------------------------------------------------- */

static const struct {
    const char *class_name;
    const char *model_type;
    ltri_arch arch;
} cfg_archs[] = {
    {"LlamaForCausalLM", "llama", LTRI_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", LTRI_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", LTRI_ARCH_QWEN2},
};
#define CFG_SUPPORTED "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"

/* architectures[0] names the class transformers instantiates; model_type is
 * the fallback for configs written without it. */
static int cfg_read_arch(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    const json_t *archs = cfg_get(root, "architectures");
    const char *name = NULL;
    int by_class = 1;
    if (archs) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
            return ltri_fail(err, "%s: 'architectures' must be a non-empty list of strings", path);
        name = json_string_value(json_array_get(archs, 0));
    } else {
        const json_t *type = cfg_get(root, "model_type");
        if (!type) return ltri_fail(err, "%s: no 'architectures' or 'model_type'", path);
        if (!json_is_string(type))
            return ltri_fail(err, "%s: 'model_type' must be a string, got %s", path, cfg_type_name(type));
        name = json_string_value(type);
        by_class = 0;
    }
    for (size_t i = 0; i < sizeof(cfg_archs) / sizeof(cfg_archs[0]); i++) {
        if (strcmp(name, by_class ? cfg_archs[i].class_name : cfg_archs[i].model_type) == 0) {
            cfg->arch = cfg_archs[i].arch;
            snprintf(cfg->arch_name, sizeof(cfg->arch_name), "%s", name);
            return 0;
        }
    }
    return ltri_fail(err, "%s: unsupported architecture '%s' (supported: " CFG_SUPPORTED ")", path, name);
}

/* Which projections carry biases and whether attention is windowed. */
static int cfg_read_arch_options(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    cfg->qkv_bias = cfg->o_bias = cfg->mlp_bias = 0;
    cfg->sliding_window = 0;
    switch (cfg->arch) {
    case LTRI_ARCH_LLAMA: {
        int attention_bias = 0;
        if (cfg_bool(path, root, "attention_bias", 0, &attention_bias, err) != 0 ||
            cfg_bool(path, root, "mlp_bias", 0, &cfg->mlp_bias, err) != 0)
            return -1;
        cfg->qkv_bias = cfg->o_bias = attention_bias;
        return 0;
    }
    case LTRI_ARCH_MISTRAL:
        return cfg_int(path, root, "", "sliding_window", 0, 0, 0, &cfg->sliding_window, err);
    case LTRI_ARCH_QWEN2: {
        /* Qwen2Attention: q/k/v always have biases, o_proj never. The window
         * exists only with use_sliding_window (and then, in transformers, only
         * on layers >= max_window_layers; we record the width only). */
        cfg->qkv_bias = 1;
        int use_window = 0;
        if (cfg_bool(path, root, "use_sliding_window", 0, &use_window, err) != 0) return -1;
        if (use_window) return cfg_int(path, root, "", "sliding_window", 0, 0, 0, &cfg->sliding_window, err);
        return 0;
    }
    }
    return 0;
}

/* ---- the config ------------------------------------------------------------ */

static int cfg_parse(ltri_model_config *cfg, const char *path, const json_t *root, ltri_error *err) {
    if (cfg_read_arch(cfg, path, root, err) != 0) return -1;
    if (cfg_int(path, root, "", "hidden_size", 1, 0, 1, &cfg->dim, err) != 0 ||
        cfg_int(path, root, "", "intermediate_size", 1, 0, 1, &cfg->hidden_dim, err) != 0 ||
        cfg_int(path, root, "", "num_hidden_layers", 1, 0, 1, &cfg->n_layers, err) != 0 ||
        cfg_int(path, root, "", "num_attention_heads", 1, 0, 1, &cfg->n_heads, err) != 0 ||
        cfg_int(path, root, "", "vocab_size", 1, 0, 1, &cfg->vocab_size, err) != 0 ||
        cfg_int(path, root, "", "num_key_value_heads", 0, cfg->n_heads, 1, &cfg->n_kv_heads, err) != 0 ||
        cfg_int(path, root, "", "max_position_embeddings", 0, 2048, 1, &cfg->max_position_embeddings, err) != 0 ||
        cfg_bool(path, root, "tie_word_embeddings", 0, &cfg->tie_embeddings, err) != 0)
        return -1;
    if (!cfg_get(root, "head_dim") && cfg->dim % cfg->n_heads != 0)
        return ltri_fail(err, "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and no head_dim is given",
                         path, cfg->dim, cfg->n_heads);
    if (cfg_int(path, root, "", "head_dim", 0, cfg->dim / cfg->n_heads, 1, &cfg->head_dim, err) != 0) return -1;
    double eps;
    if (cfg_positive(path, root, "", "rms_norm_eps", 0, 1e-6, &eps, err) != 0) return -1;
    cfg->norm_eps = (float)eps;

    const json_t *act = cfg_get(root, "hidden_act");
    if (act && !json_is_string(act))
        return ltri_fail(err, "%s: 'hidden_act' must be \"silu\", got %s", path, cfg_type_name(act));
    if (act && strcmp(json_string_value(act), "silu") != 0)
        return ltri_fail(err, "%s: 'hidden_act' must be \"silu\", got \"%s\"", path, json_string_value(act));
    if (cfg_read_arch_options(cfg, path, root, err) != 0 || cfg_read_rope(cfg, path, root, err) != 0 ||
        cfg_read_bos(cfg, path, root, err) != 0 || cfg_read_eos(cfg, path, root, err) != 0)
        return -1;

    /* Invariants the engine relies on. */
    if (cfg->n_kv_heads > cfg->n_heads || cfg->n_heads % cfg->n_kv_heads != 0)
        return ltri_fail(err, "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
                         cfg->n_heads, cfg->n_kv_heads);
    if (cfg->head_dim % 2 != 0)
        return ltri_fail(err, "%s: head_dim %d must be even (RoPE rotates pairs)", path, cfg->head_dim);
    if ((long long)cfg->n_heads * cfg->head_dim > INT_MAX)
        return ltri_fail(err, "%s: num_attention_heads x head_dim (%d x %d) is too large", path, cfg->n_heads,
                         cfg->head_dim);
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_token_ids[i] >= cfg->vocab_size)
            LOG_WARN("%s: eos_token_id %d is outside vocab_size %d", path, cfg->eos_token_ids[i], cfg->vocab_size);
    return 0;
}

int model_config_load(ltri_model_config *cfg, const char *path, ltri_error *err) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->bos_token_id = -1;
    json_t *root = cfg_load_json(path, err);
    if (!root) return -1;
    int rc = cfg_parse(cfg, path, root, err);
    json_decref(root);
    return rc;
}

int model_config_merge_generation(ltri_model_config *cfg, const char *path, ltri_error *err) {
    json_t *root = cfg_load_json(path, err);
    if (!root) return -1;
    int rc = 0;
    if (cfg->bos_token_id < 0) rc = cfg_read_bos(cfg, path, root, err);
    if (rc == 0) rc = cfg_read_eos(cfg, path, root, err);
    json_decref(root);
    return rc;
}

/* transformers computes inv_freq in float32 on the CPU, op by op:
 *   default: inv = 1 / base ** (arange(0, dim, 2).float() / dim)
 *   linear:  inv /= factor
 *   llama3:  wavelen = 2*pi / inv; low/high wavelengths = old_len / low/high;
 *            long waves (wavelen > low_wl) get inv / factor; short waves
 *            (wavelen < high_wl) keep inv; the middle band is blended with
 *            smooth = (old_len / wavelen - low) / (high - low):
 *            (1 - smooth) * inv / factor + smooth * inv.
 * We repeat every float32 rounding torch makes (Python scalars become float32
 * operands; `s / t` is torch's reciprocal(t) * s), so the results match torch
 * except for the power, which we take in double and round once (torch's powf
 * is within 1 ulp of that). */
void model_config_rope_inv_freq(const ltri_model_config *cfg, float *inv_freq) {
    const int half = cfg->head_dim / 2;
    const float dim = (float)cfg->head_dim;
    const float base = cfg->rope_theta;
    for (int i = 0; i < half; i++) {
        float exponent = (float)(2 * i) / dim;
        float power = (float)pow((double)base, (double)exponent);
        inv_freq[i] = 1.0f / power;
    }
    if (cfg->rope_type == LTRI_ROPE_LINEAR) {
        for (int i = 0; i < half; i++) inv_freq[i] = inv_freq[i] / cfg->rope_factor;
    } else if (cfg->rope_type == LTRI_ROPE_LLAMA3) {
        const float factor = cfg->rope_factor;
        const float low = cfg->rope_low_freq_factor, high = cfg->rope_high_freq_factor;
        const double old_len = (double)cfg->rope_original_max_position;
        const float low_wavelen = (float)(old_len / low);
        const float high_wavelen = (float)(old_len / high);
        const float two_pi = (float)(2.0 * M_PI);
        const float band = (float)((double)high - (double)low);
        for (int i = 0; i < half; i++) {
            float inv = inv_freq[i];
            float wavelen = (1.0f / inv) * two_pi;
            float scaled = wavelen > low_wavelen ? inv / factor : inv;
            float smooth = ((1.0f / wavelen) * (float)old_len - low) / band;
            float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
            int medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
            inv_freq[i] = medium ? smoothed : scaled;
        }
    }
}

void model_config_describe(const ltri_model_config *cfg, char *buf, int len) {
    static const char *rope_names[] = {"default", "linear", "llama3"};
    if (len <= 0) return;
    snprintf(buf, (size_t)len,
             "%s: %d layers, dim %d, ffn %d, %d heads (%d kv, head_dim %d), vocab %d, rope %s theta %g factor %g, "
             "eps %g, tied %s, bias qkv/o/mlp %d/%d/%d, sliding window %d, max positions %d",
             cfg->arch_name, cfg->n_layers, cfg->dim, cfg->hidden_dim, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim,
             cfg->vocab_size, rope_names[cfg->rope_type], (double)cfg->rope_theta, (double)cfg->rope_factor,
             (double)cfg->norm_eps, cfg->tie_embeddings ? "yes" : "no", cfg->qkv_bias, cfg->o_bias, cfg->mlp_bias,
             cfg->sliding_window, cfg->max_position_embeddings);
}
