/* The backend a test program runs on, named by its first argument (the CTest
 * entries pass "cpu" or "cuda"), and the golden checkpoints it loads. */
#ifndef LTRI_TESTS_BACKEND_UTIL_H
#define LTRI_TESTS_BACKEND_UTIL_H

#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
#include "model/model.h"
#include "test_util.h"

/* *be = the named backend: returns 0, or the exit code main() should return:
 * TEST_SKIP_CODE for cuda without a device, 1 when creation fails. */
static inline int test_open_backend(const char *name, ltri_backend **be) {
    if (strcmp(name, "cuda") == 0 && backend_cuda_device_count() == 0) {
        fprintf(stderr, "no CUDA device: skipping\n");
        return TEST_SKIP_CODE;
    }
    ltri_error err;
    *be = backend_create(name, 0, &err);
    if (!*be) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Opens tests/data/models/<name>; 0, or -1 after a failed check. */
static inline int test_open_model(const char *name, ltri_model *m) {
    char dir[8192 + 512]; /* names may come from a directory listing */
    snprintf(dir, sizeof(dir), "%s/models/%s", LTRI_TEST_DATA, name);
    ltri_error err;
    if (model_open(m, dir, 0, &err)) {
        CHECK_MSG(0, "model_open %s: %s", name, err.msg);
        return -1;
    }
    return 0;
}

#endif
