/* ltri-worker as a user runs it: a good run prints a continuation and a
 * metrics line; every bad input ends with a clear message and the documented
 * exit status (1: the run failed, 2: bad command line), never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "test_util.h"

#define WORKER LTRI_BINARY_DIR "/ltri-worker"
#define MODEL LTRI_TEST_DATA "/models/llama3-gqa-bf16"

static char out_path[256], err_path[256];
static char out_text[1 << 16], err_text[1 << 16];

/* Runs ltri-worker with args; returns its exit status (-1 if it died by a signal). */
static int run(const char *args) {
    return test_run_binary(WORKER, args, out_path, err_path, out_text, sizeof(out_text), err_text, sizeof(err_text));
}

#define EXPECT(args, status, needle)                                                                          \
    do {                                                                                                      \
        int st_ = run(args);                                                                                  \
        CHECK_MSG(st_ == (status) && strstr(err_text, needle), "ltri-worker %s: exit %d (want %d), stderr:\n%s", \
                  args, st_, status, err_text);                                                               \
    } while (0)

int main(void) {
    char dir[] = "/tmp/ltri-test-cli-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    snprintf(out_path, sizeof(out_path), "%s/out", dir);
    snprintf(err_path, sizeof(err_path), "%s/err", dir);

    /* a good run: continuation on stdout, metrics as the last stderr line */
    int st = run("--model " MODEL " --prompt 'The passkey is 71432.' --max-new-tokens 6 --backend cpu --ignore-eos");
    CHECK_MSG(st == 0, "good run exited %d:\n%s", st, err_text);
    CHECK(strlen(out_text) > 1);
    char *metrics = strstr(err_text, "metrics: {");
    CHECK_MSG(metrics && strstr(metrics, "\"prefill_tok_per_s\"") && strstr(metrics, "\"ttft_ms\"") &&
                  strstr(metrics, "\"ms_per_output_token\"") && strstr(metrics, "\"generated_tokens\":6"),
              "metrics line missing or incomplete:\n%s", err_text);
    char first[sizeof(out_text)];
    strcpy(first, out_text);

    /* greedy is deterministic, and so is sampling with a seed */
    run("--model " MODEL " --prompt 'The passkey is 71432.' --max-new-tokens 6 --backend cpu --ignore-eos");
    CHECK(strcmp(first, out_text) == 0);
    run("--model " MODEL " --prompt 'hello' --max-new-tokens 8 --backend cpu --temperature 0.9 --top-p 0.9 "
        "--seed 5 --ignore-eos");
    strcpy(first, out_text);
    run("--model " MODEL " --prompt 'hello' --max-new-tokens 8 --backend cpu --temperature 0.9 --top-p 0.9 "
        "--seed 5 --ignore-eos");
    CHECK(strcmp(first, out_text) == 0);

    /* prompt from a file, chunked prefill with a progress line */
    char prompt_file[300], cmd[1024];
    snprintf(prompt_file, sizeof(prompt_file), "%s/prompt.txt", dir);
    FILE *f = fopen(prompt_file, "w");
    for (int i = 0; i < 200; i++) fprintf(f, "line %d of a long prompt with some words. ", i);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "--model %s --prompt-file %s --max-new-tokens 2 --chunk-size 64 --backend cpu", MODEL,
             prompt_file);
    st = run(cmd);
    CHECK_MSG(st == 0 && strstr(err_text, "prefill ") && strstr(err_text, "metrics: {"), "prompt file run:\n%s",
              err_text);

    /* errors */
    EXPECT("--prompt hi", 2, "--model DIR is required");
    EXPECT("--model " MODEL, 2, "exactly one of --prompt and --prompt-file");
    EXPECT("--model " MODEL " --prompt hi --bogus", 2, "unknown or incomplete option");
    EXPECT("--model " MODEL " --prompt hi --max-new-tokens -3", 2, "--max-new-tokens needs an integer");
    EXPECT("--model " MODEL " --prompt hi --seed five", 2, "--seed needs an integer");
    EXPECT("--model " MODEL " --prompt hi --seed -1", 2, "--seed needs an integer");
    EXPECT("--model /nonexistent/model --prompt hi", 1, "/nonexistent/model");
    EXPECT("--model " MODEL " --prompt-file /nonexistent/prompt.txt", 1, "cannot open prompt file");
    snprintf(cmd, sizeof(cmd), "--model %s --prompt-file %s --max-context 100 --backend cpu", MODEL, prompt_file);
    EXPECT(cmd, 1, "exceeds the context limit");
    EXPECT("--model " MODEL " --prompt hi --backend tpu", 1, "unknown backend 'tpu'");
    EXPECT("--model " MODEL " --prompt hi --stop-token '<|no_such_token|>' --backend cpu", 1,
           "is not a token of this tokenizer");
    if (backend_cuda_device_count() == 0)
        EXPECT("--model " MODEL " --prompt hi --backend cuda", 1, "cuda");
    EXPECT("--model " MODEL " --prompt hi --temperature -1 --backend cpu", 1, "temperature");

    test_remove_dir(dir);
    return test_finish("test_cli");
}
