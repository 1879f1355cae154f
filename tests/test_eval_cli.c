/* ltri-eval as a user runs it, on the CPU backend with models/ltri-tiny:
 *   - a small grid (passkey + niah_single, 512 and 1024 tokens, depths 0 and 1,
 *     full and ltri, 2 samples) writes every output; results.json parses and
 *     holds every prompt in every mode, the same prompts in both modes;
 *   - full attention finds the needle inside the training length: passkey
 *     accuracy >= 0.75 at each length (the model gets 1.00 there);
 *   - ltri reads less of the KV than full once the prompt outgrows its window;
 *   - --help, bad flags (exit 2) and a missing model (exit 1, the loader's
 *     message). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define EVAL LTRI_BINARY_DIR "/ltri-eval"

static char out_path[512], err_path[512];
static char out_text[1 << 16], err_text[1 << 16];

static int run(const char *args) {
    return test_run_binary(EVAL, args, out_path, err_path, out_text, sizeof(out_text), err_text, sizeof(err_text));
}

static int file_starts_with(const char *dir, const char *name, const char *prefix) {
    char path[1024], buf[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    test_slurp(path, buf, sizeof(buf));
    return strncmp(buf, prefix, strlen(prefix)) == 0;
}

static void check_grid(const char *dir) {
    char path[1024];
    CHECK_MSG(file_starts_with(dir, "summary.csv", "task,mode,length,depth,prompts,correct,accuracy"),
              "summary.csv header");
    CHECK(file_starts_with(dir, "summary.md", "# ltri-eval"));
    const char *tasks[] = {"passkey", "niah_single"}, *modes[] = {"full", "ltri"};
    for (int t = 0; t < 2; t++)
        for (int m = 0; m < 2; m++) {
            char name[128];
            snprintf(name, sizeof(name), "heatmap_%s_%s.svg", tasks[t], modes[m]);
            CHECK_MSG(file_starts_with(dir, name, "<svg xmlns="), "%s missing or not SVG", name);
        }
    snprintf(path, sizeof(path), "%s/summary.md", dir);
    static char md[1 << 16];
    test_slurp(path, md, sizeof(md));
    CHECK(strstr(md, "## Accuracy: full") && strstr(md, "## Accuracy: ltri") &&
          strstr(md, "## Accuracy as a fraction of full attention's") && strstr(md, "KV read fraction"));

    snprintf(path, sizeof(path), "%s/results.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK_MSG(root != NULL, "results.json: %s (line %d)", jerr.text, jerr.line);
    if (!root) return;
    json_t *results = json_object_get(root, "results");
    size_t n = json_array_size(results);
    CHECK_MSG(n == 32, "results.json holds %zu results, want 2 tasks x 2 lengths x 2 depths x 2 samples x 2 modes",
              n);
    int found[2][2] = {{0}}, right[2][2] = {{0}}; /* full passkey per length: [length 512/1024][.] */
    int ltri_1024 = 0;
    double ltri_read_1024 = 0.0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(results, i);
        const char *task = json_string_value(json_object_get(r, "task"));
        const char *mode = json_string_value(json_object_get(r, "mode"));
        const char *expected = json_string_value(json_object_get(r, "expected"));
        json_t *correct = json_object_get(r, "correct"), *kv = json_object_get(r, "kv_read_fraction");
        int length = (int)json_integer_value(json_object_get(r, "length"));
        int tokens = (int)json_integer_value(json_object_get(r, "prompt_tokens"));
        CHECK_MSG(task && mode && expected && json_is_boolean(correct) && json_is_number(kv) &&
                      json_is_number(json_object_get(r, "seconds")) && json_object_get(r, "got") &&
                      json_is_number(json_object_get(r, "depth")),
                  "result %zu lacks a field", i);
        if (!task || !mode || !expected) continue;
        CHECK_MSG(tokens <= length && tokens >= 0.95 * length, "%s: %d tokens for length %d", task, tokens, length);
        /* results are mode-major: the ltri half repeats the full half's prompts */
        if (i >= n / 2) {
            json_t *twin = json_array_get(results, i - n / 2);
            CHECK(strcmp(expected, json_string_value(json_object_get(twin, "expected"))) == 0 &&
                  tokens == json_integer_value(json_object_get(twin, "prompt_tokens")));
        }
        int li = length == 1024;
        if (strcmp(mode, "full") == 0 && strcmp(task, "passkey") == 0) {
            found[li][0]++;
            right[li][0] += json_is_true(correct);
            CHECK(json_number_value(kv) == 1.0);
        }
        if (strcmp(mode, "ltri") == 0 && length == 1024) {
            ltri_1024++;
            ltri_read_1024 += json_number_value(kv);
        }
    }
    for (int li = 0; li < 2; li++) {
        double acc = found[li][0] ? (double)right[li][0] / found[li][0] : 0.0;
        fprintf(stderr, "full passkey accuracy at %d tokens: %.2f (%d prompts)\n", li ? 1024 : 512, acc, found[li][0]);
        CHECK_MSG(found[li][0] == 4 && acc >= 0.75, "full attention passkey accuracy %.2f at %d tokens", acc,
                  li ? 1024 : 512);
    }
    CHECK_MSG(ltri_1024 == 8 && ltri_read_1024 / ltri_1024 < 0.95,
              "ltri at 1024 tokens (window 512) read %.3f of the KV", ltri_1024 ? ltri_read_1024 / ltri_1024 : -1.0);
    json_decref(root);
}

int main(void) {
    char dir[] = "/tmp/ltri-test-eval-cli-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    snprintf(out_path, sizeof(out_path), "%s/stdout", dir);
    snprintf(err_path, sizeof(err_path), "%s/stderr", dir);

    int st = run("--help");
    CHECK_MSG(st == 0 && strstr(out_text, "--demo") && strstr(out_text, "--n-sink") && strstr(out_text, "--lengths"),
              "--help: exit %d\n%s", st, out_text);

    char args[2048];
    snprintf(args, sizeof(args),
             "--out %s/grid --tasks passkey,niah_single --lengths 512,1024 --depths 0,1 --modes full,ltri "
             "--samples 2 --max-new-tokens 8 --backend cpu --quiet",
             dir);
    st = run(args);
    CHECK_MSG(st == 0, "grid run: exit %d\n%s", st, err_text);
    if (st == 0) {
        char grid[600];
        snprintf(grid, sizeof(grid), "%s/grid", dir);
        check_grid(grid);
    }

    struct {
        const char *args;
        int status;
        const char *message;
    } bad[] = {
        {"--out /tmp/x --bogus", 2, "unknown option '--bogus'"},
        {"--out /tmp/x --lengths 1K,abc", 2, "bad value '1K,abc' for --lengths"},
        {"--out /tmp/x --depths 1.5", 2, "bad value '1.5' for --depths"},
        {"--out /tmp/x --tasks passkey,nope", 2, "bad value"},
        {"--out /tmp/x --modes full,dense", 2, "bad value"},
        {"--out /tmp/x --n-local", 2, "--n-local needs a value"},
        {"--out /tmp/x --n-local -4", 2, "n_local"},
        {"--out /tmp/x --attn ltri", 2, "--modes"},
        {"--tasks passkey", 2, "--out DIR is required"},
        {"--demo --lengths 1K", 2, "--demo has its own lengths"},
        {"--out /tmp/x --model /nonexistent/model", 1, "/nonexistent/model"},
        {"--out /tmp/x --data /nonexistent/data", 1, "/nonexistent/data/haystack.txt"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        st = run(bad[i].args);
        CHECK_MSG(st == bad[i].status && strstr(err_text, bad[i].message),
                  "ltri-eval %s: exit %d (want %d), stderr:\n%s", bad[i].args, st, bad[i].status, err_text);
    }

    test_remove_dir(dir);
    return test_finish("test_eval_cli");
}
