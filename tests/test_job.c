/* Job documents (coordinator/job.c) without Redis: every field parsed, the
 * attention rule (a job may only repeat the service's configuration), every
 * kind of bad document answered with a message naming the field, prompt +
 * question tokenized as one text, stop tokens resolved, and a seeded fuzz
 * loop of mutated documents that must each parse or fail with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/job.h"
#include "test_util.h"

#define MODEL LTRI_TEST_DATA "/models/llama3-gqa-bf16"

static coord_job_defaults defaults(ltri_attn_mode mode) {
    coord_job_defaults d = {.max_new_tokens = 128, .max_prompt_bytes = 4096};
    attn_params_default(&d.attn, mode);
    if (mode != LTRI_ATTN_FULL) d.attn.n_local = 512;
    return d;
}

static int parse(const char *json, const coord_job_defaults *d, coord_job *job, ltri_error *err) {
    return coord_job_parse(job, json, strlen(json), d, err);
}

static void expect_error(const char *json, const coord_job_defaults *d, const char *needle) {
    coord_job job;
    ltri_error err = {{0}};
    int rc = parse(json, d, &job, &err);
    CHECK_MSG(rc == -1 && strstr(err.msg, needle), "%s: rc %d, message '%s', expected '%s'", json, rc, err.msg, needle);
    coord_job_free(&job);
}

int main(void) {
    coord_job_defaults full = defaults(LTRI_ATTN_FULL), ltri = defaults(LTRI_ATTN_LTRI);
    ltri_error err = {{0}};
    coord_job job;

    /* every field */
    const char *good = "{\"prompt\": \"Hello\", \"question\": \" world\", \"max_new_tokens\": 7, \"temperature\": 0.5,"
                       " \"top_p\": 0.9, \"top_k\": 40, \"seed\": 12345678901, \"stop\": [\"<|eot_id|>\", 13],"
                       " \"ignore_eos\": true, \"no_bos\": false}";
    CHECK_MSG(parse(good, &full, &job, &err) == 0, "%s", err.msg);
    CHECK(!strcmp(job.prompt, "Hello") && !strcmp(job.question, " world") && job.max_new_tokens == 7);
    CHECK(job.sampling.temperature == 0.5f && job.sampling.top_p == 0.9f && job.sampling.top_k == 40);
    CHECK(job.sampling.seed == 12345678901ULL && job.n_stop == 2 && !strcmp(job.stop[1], "13"));
    CHECK(job.ignore_eos == 1 && job.no_bos == 0 && job.attn.mode == LTRI_ATTN_FULL);
    coord_job_free(&job);

    /* defaults */
    CHECK(parse("{\"prompt_file\": \"/tmp/x\"}", &full, &job, &err) == 0);
    CHECK(job.max_new_tokens == 128 && job.sampling.top_p == 1.0f && job.sampling.temperature == 0.0f);
    coord_job_free(&job);

    /* attention: repeating the service's configuration (or a part of it) is fine */
    CHECK_MSG(parse("{\"prompt\": \"x\", \"attn\": {\"mode\": \"ltri\", \"n_local\": 512}}", &ltri, &job, &err) == 0,
              "%s", err.msg);
    coord_job_free(&job);
    CHECK(parse("{\"prompt\": \"x\", \"attn\": {\"n_local\": 512, \"theta\": 0.006, \"select\": \"dp\"}}", &ltri, &job,
                &err) == 0);
    coord_job_free(&job);
    CHECK(parse("{\"prompt\": \"x\", \"attn\": {\"mode\": \"full\"}}", &full, &job, &err) == 0);
    coord_job_free(&job);
    expect_error("{\"prompt\": \"x\", \"attn\": {\"n_local\": 256}}", &ltri, "this service runs 'mode=ltri");
    expect_error("{\"prompt\": \"x\", \"attn\": {\"mode\": \"infllm\"}}", &ltri, "asks for 'mode=infllm");
    expect_error("{\"prompt\": \"x\", \"attn\": {\"mode\": \"ltri\", \"span_min\": 9, \"span_max\": 4}}", &ltri,
                 "span_min <= span_max");
    expect_error("{\"prompt\": \"x\", \"attn\": {\"select\": \"greedy\"}}", &ltri, "not dp or nms");
    expect_error("{\"prompt\": \"x\", \"attn\": {\"select\": 1}}", &ltri, "must be a string (dp or nms)");
    expect_error("{\"prompt\": \"x\", \"attn\": {\"mode\": 1}}", &ltri, "'attn.mode' must be a string");

    /* bad documents */
    expect_error("", &full, "not valid JSON");
    expect_error("null", &full, "not valid JSON");
    expect_error("\"prompt\"", &full, "not valid JSON");
    expect_error("{\"prompt\": \"x\", \"Prompt\": \"y\"}", &full, "unknown field 'Prompt'");
    expect_error("{\"prompt\": null}", &full, "'prompt' must be a string, got null");
    expect_error("{\"prompt\": [\"x\"]}", &full, "'prompt' must be a string, got an array");
    expect_error("{\"prompt\": \"x\", \"question\": {}}", &full, "'question' must be a string, got an object");
    expect_error("{\"prompt\": \"x\", \"max_new_tokens\": 100000001}", &full, "'max_new_tokens' is 100000001");
    expect_error("{\"prompt\": \"x\", \"temperature\": \"hot\"}", &full, "'temperature' must be a number");
    expect_error("{\"prompt\": \"x\", \"top_p\": 1.5}", &full, "'top_p' is 1.5");
    expect_error("{\"prompt\": \"x\", \"top_k\": -1}", &full, "'top_k' is -1");
    expect_error("{\"prompt\": \"x\", \"stop\": [1, 2, 3, 4, 5, 6, 7, 8, 9]}", &full, "at most 8");
    expect_error("{\"prompt\": \"x\", \"stop\": [\"\"]}", &full, "'stop' entry 0");
    expect_error("{\"prompt\": \"x\", \"stop\": [true]}", &full, "'stop' entry 0");
    expect_error("{\"prompt\": \"x\", \"no_bos\": 1}", &full, "'no_bos' must be true or false");
    expect_error("{\"prompt\": \"x\", \"context\": \"saved\"}", &full, "not supported yet");
    expect_error("{\"prompt_file\": \"~/p.txt\"}", &full, "absolute path");
    expect_error("{}", &full, "exactly one of 'prompt' and 'prompt_file'");
    char big[6000];
    snprintf(big, sizeof(big), "{\"prompt\": \"%04990d\"}", 7);
    expect_error(big, &full, "the service takes at most 4096");

    /* tokenizing: prompt + question is one text; limits */
    ltri_model model;
    if (model_open(&model, MODEL, 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t *a = NULL, *b = NULL;
    int na = 0, nb = 0;
    CHECK(parse("{\"prompt\": \"The pass key\", \"question\": \" is 1234.\", \"max_new_tokens\": 4}", &full, &job,
                &err) == 0);
    CHECK_MSG(coord_job_tokenize(&job, &model, &full, 100, &a, &na, &err) == 0, "%s", err.msg);
    coord_job_free(&job);
    CHECK(tokenizer_encode(model.tokenizer, "The pass key is 1234.", 21, 1, &b, &nb, &err) == 0);
    CHECK(na == nb && na > 0 && !memcmp(a, b, sizeof(int32_t) * (size_t)na));
    CHECK(parse("{\"prompt\": \"The pass key\", \"question\": \" is 1234.\", \"max_new_tokens\": 100}", &full, &job,
                &err) == 0);
    free(a);
    a = NULL;
    CHECK(coord_job_tokenize(&job, &model, &full, 100, &a, &na, &err) == -1 && strstr(err.msg, "context limit of 100"));
    CHECK(a == NULL);
    coord_job_free(&job);
    char path[] = "/tmp/ltri-test-job-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f) {
        fputs("The pass key", f);
        fclose(f);
    }
    char doc[256];
    snprintf(doc, sizeof(doc), "{\"prompt_file\": \"%s\", \"question\": \" is 1234.\"}", path);
    CHECK(parse(doc, &full, &job, &err) == 0);
    CHECK_MSG(coord_job_tokenize(&job, &model, &full, 1000, &a, &na, &err) == 0, "%s", err.msg);
    CHECK(na == nb && !memcmp(a, b, sizeof(int32_t) * (size_t)na));
    coord_job_free(&job);
    free(a);
    a = NULL;
    remove(path);
    CHECK(parse(doc, &full, &job, &err) == 0);
    CHECK(coord_job_tokenize(&job, &model, &full, 1000, &a, &na, &err) == -1 && strstr(err.msg, "cannot open"));
    coord_job_free(&job);

    /* stop tokens: EOS unless ignore_eos, then the job's (text or id) */
    int32_t stop[16];
    int ns = 0;
    CHECK(parse("{\"prompt\": \"x\", \"stop\": [5, \"5\"]}", &full, &job, &err) == 0);
    CHECK(coord_job_stop_ids(&job, &model, stop, 16, &ns, &err) == 0);
    int32_t five = tokenizer_token_id(model.tokenizer, "5"); /* the text "5" is a token of its own */
    CHECK(ns == model.cfg.n_eos + 2 && stop[ns - 2] == 5 && stop[ns - 1] == (five >= 0 ? five : 5));
    coord_job_free(&job);
    CHECK(parse("{\"prompt\": \"x\", \"ignore_eos\": true, \"stop\": [\"99999\"]}", &full, &job, &err) == 0);
    CHECK(coord_job_stop_ids(&job, &model, stop, 16, &ns, &err) == -1 && strstr(err.msg, "'99999'"));
    coord_job_free(&job);

    /* fuzz: mutated documents parse or fail with a message, never crash */
    uint64_t seed = test_seed(77);
    ltri_rng rng;
    ltri_rng_seed(&rng, seed);
    const char *alphabet = "{}[]\":,.-+0123456789eEtrufalsn \\/\xc3\xa9\xff";
    int failed = 0;
    for (int k = 0; k < 3000; k++) {
        char d[512];
        snprintf(d, sizeof(d), "%s", good);
        int edits = 1 + (int)(ltri_rng_u32(&rng) % 4);
        for (int e = 0; e < edits; e++) {
            size_t len = strlen(d);
            if (len == 0) break;
            size_t at = ltri_rng_u32(&rng) % len;
            char ch = alphabet[ltri_rng_u32(&rng) % strlen(alphabet)];
            switch (ltri_rng_u32(&rng) % 3) {
            case 0: d[at] = ch; break;
            case 1: memmove(d + at, d + at + 1, len - at); break;
            default:
                if (len + 2 < sizeof(d)) memmove(d + at + 1, d + at, len - at + 1), d[at] = ch;
            }
        }
        err.msg[0] = '\0';
        int rc = coord_job_parse(&job, d, strlen(d), &full, &err);
        if (rc == 0) {
            CHECK(!!job.prompt + !!job.prompt_file == 1);
            if (coord_job_tokenize(&job, &model, &full, 8192, &a, &na, &err) == 0) free(a);
            a = NULL;
        } else {
            CHECK_MSG(strlen(err.msg) > 5, "seed %llu, document %d failed without a message: %s",
                      (unsigned long long)seed, k, d);
            failed++;
        }
        coord_job_free(&job);
    }
    fprintf(stderr, "fuzz: %d of 3000 mutated documents rejected\n", failed);
    CHECK(failed > 100 && failed < 3000);
    free(b);
    model_close(&model);
    return test_finish("test_job");
}
