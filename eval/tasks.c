#include "eval/tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "eval/document.h"

/* ------------------------------------------------------------ templates */

/* models/ltri-tiny/README.md, "Task templates": character for character. */
static const char PASSKEY_INTRO[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.\n";
static const char PASSKEY_NEEDLE[] = "The pass key is %s. Remember it. %s is the pass key.";
static const char PASSKEY_QUESTION[] = "What is the pass key? The pass key is";
static const char NIAH_INTRO[] =
    "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the numbers afterwards.\n";
static const char NIAH_NEEDLE[] = "One of the special magic numbers for %s is: %s.";
static const char NIAH_QUESTION[] = "What is the special magic number for %s mentioned in the provided text? "
                                    "The special magic number for %s mentioned in the provided text is";
static const char NIAH_QUESTION_MULTIVALUE[] =
    "What are all the special magic numbers for %s mentioned in the provided text? "
    "The special magic numbers for %s mentioned in the provided text are";
static const char KV_INTRO[] = "Below is a list of records. Each line holds a key and its value.\n";
static const char KV_QUESTION[] = "The value of %s is";
static const char VT_INTRO[] = "Memorize and track the chain of variable assignments hidden in the following text.\n";
static const char VT_FIRST[] = "VAR %s = %s.";
static const char VT_LINK[] = "VAR %s = VAR %s.";
static const char VT_QUESTION[] = "Which variables are assigned the value %s? Answer:";
static const char *const NOISE[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                    "There and back again."};
#define N_NOISE 5

/* Not trained: RULER's wording (its synthetic/constants.py) in the same layout. */
static const char CWE_INTRO[] = "Below is a numbered list of words. In these words, some appear more often than "
                                "others. Memorize the ones that appear most often.\n";
static const char CWE_QUESTION[] = "What are the 5 most common words in the above list? Answer: The top 5 words "
                                   "that appear most often in the list are:";
static const char FWE_INTRO[] = "Read the following coded text and track the frequency of each coded word. Find "
                                "the three most frequently appeared coded words.\n";
static const char FWE_QUESTION[] = "What are the three most frequently appeared words in the above coded text? "
                                   "Answer: According to the coded text above, the three most frequently appeared "
                                   "words are:";
/* Not trained: a fact planted like a NIAH needle and asked back in NIAH's style. */
static const char QA_INTRO[] = "Some facts are hidden within the following text. Make sure to memorize them. I "
                               "will quiz you about the facts afterwards.\n";
static const char QA_NEEDLE[] = "The capital of %s is %s.";
static const char QA_QUESTION[] = "What is the capital of %s mentioned in the provided text? The capital of %s "
                                  "mentioned in the provided text is";

#define CWE_COMMON 5
#define FWE_DISTINCT 1024

/* ------------------------------------------------------------ the task table */

static const struct {
    const char *name;
    int has_depth, trained, max_new;
    eval_answer_kind answer;
} TASKS[EVAL_N_TASKS] = {
    [EVAL_PASSKEY] = {"passkey", 1, 1, 12, EVAL_ANSWER_NUMBER},
    [EVAL_NIAH_SINGLE] = {"niah_single", 1, 1, 12, EVAL_ANSWER_NUMBER},
    [EVAL_NIAH_MULTIKEY] = {"niah_multikey", 1, 1, 12, EVAL_ANSWER_NUMBER},
    [EVAL_NIAH_MULTIVALUE] = {"niah_multivalue", 1, 1, 28, EVAL_ANSWER_NUMBERS},
    [EVAL_NIAH_MULTIQUERY] = {"niah_multiquery", 1, 1, 12, EVAL_ANSWER_NUMBER},
    [EVAL_KV] = {"kv", 1, 1, 12, EVAL_ANSWER_NUMBER},
    [EVAL_VT] = {"vt", 0, 1, 24, EVAL_ANSWER_WORDS},
    [EVAL_CWE] = {"cwe", 0, 0, 32, EVAL_ANSWER_WORD_SET},
    [EVAL_FWE] = {"fwe", 0, 0, 20, EVAL_ANSWER_WORD_SET},
    [EVAL_QA] = {"qa", 1, 0, 12, EVAL_ANSWER_WORD},
};

static int valid(eval_task t) { return (int)t >= 0 && t < EVAL_N_TASKS; }
const char *eval_task_name(eval_task t) { return valid(t) ? TASKS[t].name : "?"; }
int eval_task_has_depth(eval_task t) { return valid(t) && TASKS[t].has_depth; }
int eval_task_trained(eval_task t) { return valid(t) && TASKS[t].trained; }
eval_answer_kind eval_task_answer_kind(eval_task t) { return valid(t) ? TASKS[t].answer : EVAL_ANSWER_NUMBER; }
int eval_task_max_new_tokens(eval_task t) { return valid(t) ? TASKS[t].max_new : 12; }

int eval_task_parse(const char *name) {
    for (int t = 0; t < EVAL_N_TASKS; t++)
        if (strcmp(name, TASKS[t].name) == 0) return t;
    return -1;
}

/* ------------------------------------------------------------ random content */

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

uint64_t eval_sample_seed(uint64_t run_seed, eval_task task, int target_tokens, int depth_index, int sample) {
    uint64_t h = mix64(run_seed ^ 0x6c7472692d65766cULL);
    h = mix64(h ^ (uint64_t)task);
    h = mix64(h ^ (uint64_t)(uint32_t)target_tokens);
    h = mix64(h ^ (uint64_t)(uint32_t)depth_index);
    return mix64(h ^ (uint64_t)(uint32_t)sample);
}

static uint32_t below(ltri_rng *r, uint32_t n) { return (uint32_t)(((uint64_t)ltri_rng_u32(r) * n) >> 32); }
static double uniform(ltri_rng *r) { return ltri_rng_u32(r) / 4294967296.0; }

static void number(ltri_rng *r, int digits, char *out, size_t len) {
    uint32_t lo = 1;
    for (int i = 1; i < digits; i++) lo *= 10;
    snprintf(out, len, "%u", lo + below(r, 9 * lo));
}

static void shuffle_ptrs(ltri_rng *r, const char **a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)below(r, (uint32_t)i + 1);
        const char *t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* A made-up proper name from syllables, capitalised ("Velmora"). */
static void made_up_name(ltri_rng *r, int syllables, const char *suffix, char *out, size_t len) {
    static const char *const syl[] = {"ka", "lo", "mi", "ra", "ven", "tor", "sel", "dun", "bri", "quo",
                                      "fa", "nel", "zar", "ith", "mor", "bel", "cas", "dor", "ul", "gan"};
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < syllables; i++) n += (size_t)snprintf(out + n, len - n, "%s", syl[below(r, 20)]);
    snprintf(out + n, len - n, "%s", suffix);
    if (out[0] >= 'a' && out[0] <= 'z') out[0] = (char)(out[0] - 'a' + 'A');
}

/* ------------------------------------------------------------ haystacks */

typedef struct {
    const eval_data *data;
    uint64_t seed;
    int line_start, first_line_start;
    char needle[DOC_MAX_NEEDLES][768]; /* roomy: GCC cannot bound a key picked by index */
    char question[EVAL_MAX_QUESTIONS][400];
    char answer[EVAL_MAX_QUESTIONS][128];
    char unit[256]; /* the unit being rendered */
    /* cwe and fwe: the list of an n-item document */
    const char **items;
    int cap_items;
    const char **words; /* cwe: shuffled key words; fwe: coded words by rank */
    char (*coded)[8];
    int n_words, cap_words;
} task_ctx;

static const char *noise_unit(doc_spec *d, int i) { return NOISE[i % N_NOISE]; }

/* Consecutive lines of the held-out text from a random start (wrapping at the
 * end), as train_tiny's haystack() takes whole lines of a random window. */
static const char *line_unit(doc_spec *d, int i) {
    const task_ctx *c = d->ctx;
    return c->data->lines[(c->line_start + (long)i) % c->data->n_lines];
}

/* Record i of the filler records: from a hash of (seed, i), so that any n
 * records are the same first n. */
static const char *kv_unit(doc_spec *d, int i) {
    task_ctx *c = d->ctx;
    ltri_rng r;
    ltri_rng_seed(&r, mix64(c->seed ^ mix64((uint64_t)i + 1)));
    uint32_t a = ltri_rng_u32(&r), b = below(&r, 65536);
    char value[16];
    number(&r, 7, value, sizeof(value));
    snprintf(c->unit, sizeof(c->unit), "%08x-%04x: %s", a, b, value);
    return c->unit;
}

static int grow_items(task_ctx *c, int n, ltri_error *err) {
    if (n <= c->cap_items) return 0;
    const char **p = realloc(c->items, sizeof(*p) * (size_t)n);
    if (!p) return ltri_fail(err, "eval: out of memory");
    c->items = p;
    c->cap_items = n;
    return 0;
}

/* ------------------------------------------------------------ the tasks */

/* Restart k of a corpus haystack: a start drawn from a hash of (seed, k). */
static void restart_lines(doc_spec *d, int attempt) {
    task_ctx *c = d->ctx;
    if (attempt == 0) {
        c->line_start = c->first_line_start;
        return;
    }
    ltri_rng r;
    ltri_rng_seed(&r, mix64(c->seed ^ mix64(0x20000u + (uint64_t)attempt)));
    c->line_start = (int)below(&r, (uint32_t)c->data->n_lines);
}

static void set_corpus(doc_spec *d, task_ctx *c, ltri_rng *r) {
    c->line_start = c->first_line_start = (int)below(r, (uint32_t)c->data->n_lines);
    d->joiner = "\n";
    d->unit = line_unit;
    d->restart = restart_lines;
    d->tokens_per_unit = 12.0;
}

static void set_noise(doc_spec *d) {
    d->joiner = " ";
    d->unit = noise_unit;
    d->tokens_per_unit = 5.0;
}

static void passkey(doc_spec *d, task_ctx *c, ltri_rng *r, double depth) {
    char value[16];
    number(r, 5, value, sizeof(value));
    snprintf(c->needle[0], sizeof(c->needle[0]), PASSKEY_NEEDLE, value, value);
    snprintf(c->answer[0], sizeof(c->answer[0]), "%s", value);
    d->intro = PASSKEY_INTRO;
    set_noise(d);
    d->n_needles = 1, d->needle_depth[0] = depth, d->needle[0] = c->needle[0], d->anchor = 0;
    d->n_qa = 1, d->question[0] = PASSKEY_QUESTION;
}

/* RULER's niah: n_queries asked keys with n_values numbers each among
 * n_distract keys not asked about; key 0's first needle sits at `depth`, the
 * others at uniform depths; values are answered in text order. */
static void niah(doc_spec *d, task_ctx *c, ltri_rng *r, double depth, int n_distract, int n_values, int n_queries) {
    char keys[8][80];
    char values[DOC_MAX_NEEDLES][16];
    int n_keys = 0, n = 0, owner[DOC_MAX_NEEDLES];
    while (n_keys < n_queries + n_distract) {
        const eval_data *t = c->data;
        snprintf(keys[n_keys], sizeof(keys[0]), "%.38s-%.38s", t->keywords[below(r, (uint32_t)t->n_keywords)],
                 t->keywords[below(r, (uint32_t)t->n_keywords)]);
        int dup = 0;
        for (int i = 0; i < n_keys; i++) dup |= strcmp(keys[i], keys[n_keys]) == 0;
        n_keys += !dup;
    }
    for (int k = 0; k < n_keys; k++)
        for (int v = 0; v < (k < n_queries ? n_values : 1); v++, n++) {
            for (int dup = 1; dup;) {
                number(r, 7, values[n], sizeof(values[0]));
                dup = 0;
                for (int i = 0; i < n; i++) dup |= strcmp(values[i], values[n]) == 0;
            }
            owner[n] = k;
            d->needle_depth[n] = n == 0 ? depth : uniform(r);
            snprintf(c->needle[n], sizeof(c->needle[0]), NIAH_NEEDLE, keys[k], values[n]);
            d->needle[n] = c->needle[n];
        }
    d->n_needles = n, d->anchor = 0;
    int asked[8];
    for (int q = 0; q < n_queries; q++) asked[q] = q;
    for (int q = n_queries - 1; q > 0; q--) { /* train_tiny shuffles the questions */
        int j = (int)below(r, (uint32_t)q + 1), t = asked[q];
        asked[q] = asked[j], asked[j] = t;
    }
    for (int q = 0; q < n_queries; q++) {
        const char *key = keys[asked[q]];
        snprintf(c->question[q], sizeof(c->question[0]), n_values == 1 ? NIAH_QUESTION : NIAH_QUESTION_MULTIVALUE,
                 key, key);
        d->question[q] = c->question[q];
        /* this key's values by (depth, list index): the order place() leaves them in */
        int idx[DOC_MAX_NEEDLES], m = 0;
        for (int i = 0; i < n; i++)
            if (owner[i] == asked[q]) {
                int j = m++;
                for (; j > 0 && d->needle_depth[idx[j - 1]] > d->needle_depth[i]; j--) idx[j] = idx[j - 1];
                idx[j] = i;
            }
        size_t len = 0;
        for (int i = 0; i < m; i++)
            len += (size_t)snprintf(c->answer[q] + len, sizeof(c->answer[0]) - len, "%s%s", i ? ", " : "",
                                    values[idx[i]]);
    }
    d->n_qa = n_queries;
    d->intro = NIAH_INTRO;
    set_corpus(d, c, r);
}

/* The asked record is the needle among filler records (KV_RECORD lines). */
static void kv(doc_spec *d, task_ctx *c, ltri_rng *r, double depth) {
    char key[32], value[16];
    snprintf(key, sizeof(key), "%08x-%04x", ltri_rng_u32(r), below(r, 65536));
    number(r, 7, value, sizeof(value));
    snprintf(c->needle[0], sizeof(c->needle[0]), "%s: %s", key, value);
    snprintf(c->question[0], sizeof(c->question[0]), KV_QUESTION, key);
    snprintf(c->answer[0], sizeof(c->answer[0]), "%s", value);
    d->intro = KV_INTRO;
    d->joiner = "\n";
    d->unit = kv_unit;
    d->tokens_per_unit = 11.0;
    d->n_needles = 1, d->needle_depth[0] = depth, d->needle[0] = c->needle[0], d->anchor = 0;
    d->n_qa = 1, d->question[0] = c->question[0];
}

/* A chain of 2-4 names at sorted uniform depths in the NOISE haystack (RULER's vt haystack). */
static void vt(doc_spec *d, task_ctx *c, ltri_rng *r) {
    int hops = 2 + (int)below(r, 3);
    char names[4][8], value[16];
    for (int n = 0; n < hops;) {
        for (int i = 0; i < 5; i++) names[n][i] = (char)('A' + below(r, 26));
        names[n][5] = '\0';
        int dup = 0;
        for (int i = 0; i < n; i++) dup |= strcmp(names[i], names[n]) == 0;
        n += !dup;
    }
    number(r, 5, value, sizeof(value));
    double depths[4];
    for (int i = 0; i < hops; i++) {
        double x = uniform(r);
        int j = i;
        for (; j > 0 && depths[j - 1] > x; j--) depths[j] = depths[j - 1];
        depths[j] = x;
    }
    size_t len = 0;
    for (int i = 0; i < hops; i++) {
        if (i == 0) snprintf(c->needle[i], sizeof(c->needle[0]), VT_FIRST, names[0], value);
        else snprintf(c->needle[i], sizeof(c->needle[0]), VT_LINK, names[i], names[i - 1]);
        d->needle[i] = c->needle[i];
        d->needle_depth[i] = depths[i];
        len += (size_t)snprintf(c->answer[0] + len, sizeof(c->answer[0]) - len, "%s%s", i ? " " : "", names[i]);
    }
    snprintf(c->question[0], sizeof(c->question[0]), VT_QUESTION, value);
    d->intro = VT_INTRO;
    set_noise(d);
    d->n_needles = hops, d->anchor = -1;
    d->n_qa = 1, d->question[0] = c->question[0];
}

/* RULER's cwe: CWE_COMMON words f_c times each (30 at most, fewer in short
 * lists) among words that appear 3 times (more only when the key words run
 * out), always fewer times than f_c; numbered, shuffled. */
static int cwe_prepare(doc_spec *d, int n, ltri_error *err) {
    task_ctx *c = d->ctx;
    if (grow_items(c, n, err)) return -1;
    int f_c = (int)(0.4 * n / CWE_COMMON), rest, n_ucw, c_max;
    f_c = f_c < 4 ? 4 : f_c > 30 ? 30 : f_c;
    if (CWE_COMMON * f_c > n) f_c = n / CWE_COMMON;
    for (;;) {
        rest = n - CWE_COMMON * f_c;
        n_ucw = (rest + 2) / 3;
        if (n_ucw > c->n_words - CWE_COMMON) n_ucw = c->n_words - CWE_COMMON;
        c_max = n_ucw ? (rest + n_ucw - 1) / n_ucw : 0;
        if (c_max < f_c) break;
        f_c++;
    }
    int k = 0;
    for (int w = 0; w < CWE_COMMON; w++)
        for (int i = 0; i < f_c; i++) c->items[k++] = c->words[w];
    for (int i = 0; i < rest; i++) c->items[k++] = c->words[CWE_COMMON + i % n_ucw];
    ltri_rng r;
    ltri_rng_seed(&r, mix64(c->seed ^ (uint64_t)n));
    shuffle_ptrs(&r, c->items, n);
    return 0;
}

static const char *cwe_unit(doc_spec *d, int i) {
    task_ctx *c = d->ctx;
    snprintf(c->unit, sizeof(c->unit), "%d. %s", i + 1, c->items[i]);
    return c->unit;
}

static int cwe(doc_spec *d, task_ctx *c, ltri_rng *r, ltri_error *err) {
    c->n_words = c->data->n_keywords;
    if (!(c->words = malloc(sizeof(char *) * (size_t)c->n_words))) return ltri_fail(err, "eval: out of memory");
    for (int i = 0; i < c->n_words; i++) c->words[i] = c->data->keywords[i];
    shuffle_ptrs(r, c->words, c->n_words);
    size_t len = 0;
    for (int i = 0; i < CWE_COMMON; i++)
        len += (size_t)snprintf(c->answer[0] + len, sizeof(c->answer[0]) - len, "%s%s", i ? ", " : "", c->words[i]);
    d->intro = CWE_INTRO;
    d->joiner = " ";
    d->unit = cwe_unit;
    d->prepare = cwe_prepare;
    d->min_units = 5 * CWE_COMMON;
    d->tokens_per_unit = 4.0;
    d->anchor = -1;
    d->n_qa = 1, d->question[0] = CWE_QUESTION;
    return 0;
}

/* Coded word of rank k: 3-6 random letters from a hash of (seed, k), redrawn
 * while it repeats one of the first FWE_DISTINCT ranks (the ones whose counts
 * decide the answer; a rare repeat among the words of count 1 is harmless). */
static int fwe_words(task_ctx *c, int n, ltri_error *err) {
    if (n > c->cap_words) {
        int cap = n * 2;
        char(*p)[8] = realloc(c->coded, sizeof(*p) * (size_t)cap);
        const char **w = p ? realloc(c->words, sizeof(*w) * (size_t)cap) : NULL;
        if (p) c->coded = p;
        if (!w) return ltri_fail(err, "eval: out of memory");
        c->words = w;
        c->cap_words = cap;
    }
    for (; c->n_words < n; c->n_words++) {
        ltri_rng r;
        ltri_rng_seed(&r, mix64(c->seed ^ mix64(0x10000u + (uint64_t)c->n_words)));
        char *w = c->coded[c->n_words];
        for (int dup = 1; dup;) {
            int len = 3 + (int)below(&r, 4);
            for (int i = 0; i < len; i++) w[i] = (char)('a' + below(&r, 26));
            w[len] = '\0';
            dup = 0;
            for (int i = 0; i < c->n_words && i < FWE_DISTINCT && !dup; i++) dup = strcmp(c->coded[i], w) == 0;
        }
    }
    for (int i = 0; i < n; i++) c->words[i] = c->coded[i];
    return 0;
}

/* RULER's fwe: Zipf counts (alpha 2) over coded words, floor(k0 / rank^2) >= 2 with
 * k0 = n / zeta(2), the remainder as words of count 1; shuffled. Ranks 1-3
 * then have distinct counts above every other word's. */
static int fwe_prepare(doc_spec *d, int n, ltri_error *err) {
    task_ctx *c = d->ctx;
    double k0 = n / 1.6449340668;
    int total = 0, ranks = 0;
    for (int count; (count = (int)(k0 / ((double)(ranks + 1) * (ranks + 1)))) >= 2; ranks++) total += count;
    int words = ranks + (n - total);
    if (grow_items(c, n, err) || fwe_words(c, words, err)) return -1;
    int k = 0;
    for (int w = 0; w < ranks; w++)
        for (int i = (int)(k0 / ((double)(w + 1) * (w + 1))); i > 0; i--) c->items[k++] = c->words[w];
    for (int w = ranks; k < n; w++) c->items[k++] = c->words[w];
    ltri_rng r;
    ltri_rng_seed(&r, mix64(c->seed ^ (uint64_t)n));
    shuffle_ptrs(&r, c->items, n);
    return 0;
}

static const char *fwe_unit(doc_spec *d, int i) { return ((task_ctx *)d->ctx)->items[i]; }

static int fwe(doc_spec *d, task_ctx *c, ltri_error *err) {
    if (fwe_words(c, 3, err)) return -1;
    snprintf(c->answer[0], sizeof(c->answer[0]), "%s, %s, %s", c->coded[0], c->coded[1], c->coded[2]);
    d->intro = FWE_INTRO;
    d->joiner = " ";
    d->unit = fwe_unit;
    d->prepare = fwe_prepare;
    d->min_units = 60; /* k0 >= 36: counts 36, 9, 4, then 2 and less */
    d->tokens_per_unit = 3.0;
    d->anchor = -1;
    d->n_qa = 1, d->question[0] = FWE_QUESTION;
    return 0;
}

static void qa(doc_spec *d, task_ctx *c, ltri_rng *r, double depth) {
    static const char *const suffix[] = {"ia", "land", "stan", "ora", "esh"};
    char country[64], city[64];
    made_up_name(r, 2, suffix[below(r, 5)], country, sizeof(country));
    do made_up_name(r, 2 + (int)below(r, 2), "", city, sizeof(city));
    while (strcmp(city, country) == 0);
    snprintf(c->needle[0], sizeof(c->needle[0]), QA_NEEDLE, country, city);
    snprintf(c->question[0], sizeof(c->question[0]), QA_QUESTION, country, country);
    snprintf(c->answer[0], sizeof(c->answer[0]), "%s", city);
    d->intro = QA_INTRO;
    d->n_needles = 1, d->needle_depth[0] = depth, d->needle[0] = c->needle[0], d->anchor = 0;
    d->n_qa = 1, d->question[0] = c->question[0];
    set_corpus(d, c, r);
}

/* ------------------------------------------------------------ samples */

int eval_sample_make(eval_sample *s, const eval_data *d, const ltri_tokenizer *tok, eval_task task,
                     int target_tokens, double depth, uint64_t seed, ltri_error *err) {
    memset(s, 0, sizeof(*s));
    if (!valid(task)) return ltri_fail(err, "eval: unknown task %d", (int)task);
    if (target_tokens < 16) return ltri_fail(err, "eval: a length of %d tokens is too short", target_tokens);
    if (TASKS[task].has_depth && !(depth >= 0.0 && depth <= 1.0))
        return ltri_fail(err, "eval: depth %g is outside [0, 1]", depth);
    s->task = task;
    s->target_tokens = target_tokens;
    s->depth = TASKS[task].has_depth ? depth : -1.0;
    s->seed = seed;
    s->needle_unit = -1;

    task_ctx *c = calloc(1, sizeof(*c));
    if (!c) return ltri_fail(err, "eval: out of memory");
    c->data = d;
    c->seed = seed;
    doc_spec spec = {.ctx = c, .anchor = -1, .min_units = 1};
    ltri_rng r;
    ltri_rng_seed(&r, seed);
    int rc = 0;
    switch (task) {
    case EVAL_PASSKEY: passkey(&spec, c, &r, depth); break;
    case EVAL_NIAH_SINGLE: niah(&spec, c, &r, depth, 0, 1, 1); break;
    case EVAL_NIAH_MULTIKEY: niah(&spec, c, &r, depth, 3, 1, 1); break;
    case EVAL_NIAH_MULTIVALUE: niah(&spec, c, &r, depth, 0, 2 + (int)below(&r, 3), 1); break;
    case EVAL_NIAH_MULTIQUERY: niah(&spec, c, &r, depth, 0, 1, 2 + (int)below(&r, 2)); break;
    case EVAL_KV: kv(&spec, c, &r, depth); break;
    case EVAL_VT: vt(&spec, c, &r); break;
    case EVAL_CWE: rc = cwe(&spec, c, &r, err); break;
    case EVAL_FWE: rc = fwe(&spec, c, err); break;
    case EVAL_QA: qa(&spec, c, &r, depth); break;
    default: break;
    }
    for (int q = 0; q < spec.n_qa; q++) spec.answer[q] = c->answer[q];
    if (rc == 0) rc = doc_fit(&spec, tok, target_tokens, s, err);
    if (rc) ltri_fail_prefix(err, "%s at %d tokens: ", TASKS[task].name, target_tokens);
    free(c->items);
    free(c->words);
    free(c->coded);
    free(c);
    return rc;
}

void eval_sample_free(eval_sample *s) {
    free(s->text);
    for (int j = 0; j < EVAL_MAX_QUESTIONS; j++) free(s->answer[j]);
    memset(s, 0, sizeof(*s));
}
