/* Error values that carry a message to the user.
 *
 * Functions that can fail on bad user input (a model directory, a prompt, a job)
 * return 0 on success and -1 on failure, and write a one-line message into an
 * ltri_error owned by the caller, like hiredis keeps err/errstr in its context.
 * The message names the file or field and the problem; the caller decides whether
 * it ends the process (CLI) or only the job (service). */
#ifndef LTRI_CORE_ERROR_H
#define LTRI_CORE_ERROR_H

#include <stddef.h>

typedef struct {
    char msg[1024];
} ltri_error;

/* Formats the message into err (if err is non-NULL) and returns -1, so that a
 * failing branch reads `return ltri_fail(err, "...", ...);`. */
int ltri_fail(ltri_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message with context ("model.safetensors: " + msg). */
int ltri_fail_prefix(ltri_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
