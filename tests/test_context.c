/* The offline index: save a prefilled context, load it (also on another number
 * of ranks) and continue; the same tokens as one uninterrupted run, logits
 * within float rounding. Broken saves are detected, never used. CPU backend,
 * ranks under mpiexec. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define WORKER LTRI_BINARY_DIR "/ltri-worker"
#define MODEL LTRI_TEST_DATA "/../../models/ltri-tiny" /* tests/data/../../ = the source tree */
#define OTHER_MODEL LTRI_TEST_DATA "/models/llama3-gqa-bf16"

static char dir[64];
static char err_text[1 << 16], out_text[1 << 14];

/* Runs ltri-worker on n ranks; stdout, stderr and logits under dir/tag.*. */
static int run(int n, const char *model, const char *args, const char *tag) {
    char cmd[4096], path[256];
    snprintf(cmd, sizeof(cmd),
             "timeout 300 %s --oversubscribe -n %d %s --model %s --backend cpu --quiet --ignore-eos "
             "--chunk-size 64 %s --dump-logits %s/%s.logits >%s/%s.out 2>%s/%s.err",
             LTRI_MPIEXEC, n, WORKER, model, args, dir, tag, dir, tag, dir, tag);
    int st = test_system(cmd);
    snprintf(path, sizeof(path), "%s/%s.err", dir, tag);
    test_slurp(path, err_text, sizeof(err_text));
    snprintf(path, sizeof(path), "%s/%s.out", dir, tag);
    test_slurp(path, out_text, sizeof(out_text));
    return st;
}

static float *load_logits(const char *tag, size_t *n) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.logits", dir, tag);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *x = malloc(1 << 22);
    *n = fread(x, sizeof(float), (1 << 22) / sizeof(float), f);
    fclose(f);
    return x;
}

static void write_file(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* One mode: the uninterrupted run, then save on s ranks and load on l ranks. */
static void check_mode(const char *attn) {
    char args[1024], ref_text[1 << 14];
    snprintf(args, sizeof(args), "%s --context-file %s/doc.txt --prompt-file %s/question.txt --max-new-tokens 6",
             attn, dir, dir);
    int st = run(1, MODEL, args, "ref");
    CHECK_MSG(st == 0, "%s: uninterrupted run: exit %d\n%s", attn, st, err_text);
    strcpy(ref_text, out_text);
    size_t n_ref = 0;
    float *ref = load_logits("ref", &n_ref);
    const int pairs[4][2] = {{1, 1}, {2, 1}, {1, 3}, {3, 2}};
    for (int i = 0; i < 4 && ref; i++) {
        char save_dir[128], tag[32];
        snprintf(save_dir, sizeof(save_dir), "%s/ctx_%d", dir, i);
        snprintf(args, sizeof(args), "%s --context-file %s/doc.txt --save-context %s --max-new-tokens 0", attn, dir,
                 save_dir);
        st = run(pairs[i][0], MODEL, args, "save");
        CHECK_MSG(st == 0, "%s: save on %d ranks: exit %d\n%s", attn, pairs[i][0], st, err_text);
        snprintf(args, sizeof(args), "--load-context %s --prompt-file %s/question.txt --max-new-tokens 6", save_dir,
                 dir);
        snprintf(tag, sizeof(tag), "load%d", i);
        st = run(pairs[i][1], MODEL, args, tag);
        CHECK_MSG(st == 0, "%s: load on %d ranks: exit %d\n%s", attn, pairs[i][1], st, err_text);
        CHECK_MSG(strcmp(out_text, ref_text) == 0, "%s: saved on %d, loaded on %d ranks: '%s' vs '%s'", attn,
                  pairs[i][0], pairs[i][1], out_text, ref_text);
        size_t n = 0;
        float *got = load_logits(tag, &n);
        if (got && n == n_ref) {
            double e = test_rel_error(got, ref, n);
            fprintf(stderr, "%-40s saved on %d, loaded on %d ranks: logits rel error %.2e\n", attn, pairs[i][0],
                    pairs[i][1], e);
            CHECK_MSG(e < 1e-4, "%s: %d -> %d: logits differ by %g", attn, pairs[i][0], pairs[i][1], e);
        } else {
            CHECK_MSG(0, "%s: %d -> %d: %zu logits, reference %zu", attn, pairs[i][0], pairs[i][1], n, n_ref);
        }
        free(got);
    }
    free(ref);
}

static void corrupt(const char *file, long offset, int truncate_to) {
    char path[256];
    snprintf(path, sizeof(path), "%s/bad/%s", dir, file);
    if (truncate_to >= 0) {
        if (truncate(path, truncate_to) != 0) fprintf(stderr, "truncate %s failed\n", path);
        return;
    }
    FILE *f = fopen(path, "r+b");
    fseek(f, offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, offset, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void fresh_copy(const char *from) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/bad && cp -r %s %s/bad", dir, from, dir);
    if (system(cmd) != 0) fprintf(stderr, "copy failed\n");
}

#define EXPECT_LOAD_FAILS(needle)                                                                             \
    do {                                                                                                      \
        char a_[512];                                                                                         \
        snprintf(a_, sizeof(a_), "--load-context %s/bad --prompt-file %s/question.txt --max-new-tokens 2", dir, dir); \
        int st_ = run(1, MODEL, a_, "bad");                                                                   \
        CHECK_MSG(st_ == 1 && strstr(err_text, needle), "expected failure '%s', exit %d:\n%s", needle, st_,    \
                  err_text);                                                                                  \
    } while (0)

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/ltri-test-context-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    /* a passkey document (~1100 tokens) and its question */
    char doc[16384] = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                      "I will quiz you about the important information there.\n";
    const char *noise[5] = {"The grass is green. ", "The sky is blue. ", "The sun is yellow. ", "Here we go. ",
                            "There and back again. "};
    for (int i = 0; i < 200; i++) {
        if (i == 70) strcat(doc, "The pass key is 52917. Remember it. 52917 is the pass key. ");
        strcat(doc, noise[i % 5]);
    }
    write_file("doc.txt", doc);
    write_file("question.txt", "\nWhat is the pass key? The pass key is");

    check_mode("--attn full --n-local 256 --block-size 64");
    check_mode("--attn ltri --n-local 256 --n-sink 16 --budget 192 --span-max 64 --band 128");
    check_mode("--attn infllm --n-local 256 --n-sink 16 --budget 192 --block-size 64");

    /* broken saves: every kind is reported, nothing is used */
    char good[128];
    snprintf(good, sizeof(good), "%s/ctx_3", dir); /* the last check_mode (infllm), saved on 3 ranks */
    fresh_copy(good);
    corrupt("shard-1.bin", 100, -1);
    EXPECT_LOAD_FAILS("checksum mismatch");
    fresh_copy(good);
    corrupt("common.bin", 0, 1000);
    EXPECT_LOAD_FAILS("truncated or replaced");
    fresh_copy(good);
    {
        char p[256];
        snprintf(p, sizeof(p), "%s/bad/shard-2.bin", dir);
        unlink(p);
    }
    EXPECT_LOAD_FAILS("shard-2.bin: missing");
    fresh_copy(good);
    {
        char p[256];
        snprintf(p, sizeof(p), "%s/bad/manifest.json", dir);
        unlink(p);
    }
    EXPECT_LOAD_FAILS("no manifest.json");
    /* a context saved with another model */
    char args[512];
    snprintf(args, sizeof(args), "--context-file %s/doc.txt --save-context %s/other --max-new-tokens 0", dir, dir);
    CHECK(run(1, OTHER_MODEL, args, "other") == 0);
    snprintf(args, sizeof(args), "--load-context %s/other --prompt-file %s/question.txt", dir, dir);
    int st = run(1, MODEL, args, "wrong");
    CHECK_MSG(st == 1 && strstr(err_text, "saved with another model"), "another model: exit %d\n%s", st, err_text);
    /* flags that contradict the saved attention */
    snprintf(args, sizeof(args), "--load-context %s --attn ltri --prompt-file %s/question.txt", good, dir);
    st = run(1, MODEL, args, "flags");
    CHECK_MSG(st == 1 && strstr(err_text, "was saved with attention"), "contradicting flags: exit %d\n%s", st,
              err_text);

    test_remove_dir(dir);
    return test_finish("test_context");
}
