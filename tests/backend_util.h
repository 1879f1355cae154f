/* The backend a test program runs on, named by its first argument (the CTest
 * entries pass "cpu" or "cuda"). */
#ifndef LTRI_TESTS_BACKEND_UTIL_H
#define LTRI_TESTS_BACKEND_UTIL_H

#include <stdio.h>
#include <string.h>

#include "kernels/backend.h"
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

#endif
