#include "worker/attention_flags.h"

#include <string.h>

int attn_flags_parse(attn_flag_set *f, const char *arg, const char *value, ltri_error *err) {
    if (strncmp(arg, "--", 2) != 0) return 0;
    const char *name = arg + 2;
    int param = -1;
    if (strcmp(name, "attn") != 0) {
        for (int i = 0; attn_param_names[i] && param < 0; i++) {
            const char *a = attn_param_names[i], *b = name;
            while (*a && *b && (*a == *b || (*a == '_' && *b == '-'))) a++, b++;
            if (!*a && !*b) param = i;
        }
        if (param < 0) return 0;
    }
    if (!value) return ltri_fail(err, "%s needs a value", arg);
    if (param < 0) {
        f->mode = value;
        return 2;
    }
    if (f->n == ATTN_FLAGS_MAX) return ltri_fail(err, "too many attention flags");
    f->param[f->n] = param;
    f->value[f->n++] = value;
    return 2;
}

int attn_flags_apply(const attn_flag_set *f, int mode, ltri_attn_params *p, ltri_error *err) {
    if (mode < 0) {
        mode = f->mode ? attn_mode_parse(f->mode) : LTRI_ATTN_FULL;
        if (mode < 0) return ltri_fail(err, "--attn '%s' is not one of full, streaming, infllm, ltri", f->mode);
    }
    attn_params_default(p, (ltri_attn_mode)mode);
    for (int i = 0; i < f->n; i++)
        if (attn_params_set(p, attn_param_names[f->param[i]], f->value[i], err)) return -1;
    return attn_params_check(p, err);
}

int attn_flags_longopts(struct option *table, int cap, const struct option *base, int n_base,
                        attn_flag_names *names, int val) {
    int n_params = 0;
    while (attn_param_names[n_params]) n_params++;
    if (n_params + 1 > ATTN_FLAGS_GETOPT || n_base < 0 || n_base + n_params + 2 > cap) return -1;
    for (int i = 0; i < n_base; i++) table[i] = base[i];
    struct option *opts = table + n_base;
    snprintf(names->name[0], sizeof(names->name[0]), "attn");
    opts[0] = (struct option){names->name[0], required_argument, 0, val};
    for (int n = 1; n <= n_params; n++) {
        snprintf(names->name[n], sizeof(names->name[0]), "%s", attn_param_names[n - 1]);
        for (char *ch = names->name[n]; *ch; ch++)
            if (*ch == '_') *ch = '-';
        opts[n] = (struct option){names->name[n], required_argument, 0, val};
    }
    opts[n_params + 1] = (struct option){0, 0, 0, 0};
    return 0;
}

int attn_flags_take(attn_flag_set *f, const char *name, const char *value, ltri_error *err) {
    char flag[40];
    snprintf(flag, sizeof(flag), "--%s", name);
    return attn_flags_parse(f, flag, value, err) < 0 ? -1 : 0;
}

void attn_flags_usage(FILE *out) {
    fprintf(out,
            "attention (docs/ARCHITECTURE.md explains each; defaults in brackets):\n"
            "  --attn MODE            full, streaming, infllm or ltri [full]\n"
            "  --n-sink N [128]  --n-local N [4096]  --budget TOKENS [2048]  --max-spans N [64; infllm 16]\n"
            "  --page-size N [64]                     span store page in tokens\n"
            "  --device-pages N [0 = all]             span pages kept on the device per layer; the rest live in\n"
            "                                         (pinned) host memory and are fetched when retrieved\n"
            "  infllm: --block-size N [128]  --n-repr N [4]  --band N [256]\n"
            "  ltri:   --span-min N [8]  --span-max N [128]  --theta X [0.006]  --select dp|nms [dp]\n"
            "          --band N [256]  --repr-min N [1]  --repr-max N [4]\n"
            "          --persist N [4]  --persist-budget TOKENS [-1 = budget/4]\n"
            "          --vote-heads N [8; -1 = all]  --vote-k N [4]  --vote-min N [0 = max(2, voters/8)]\n");
}
