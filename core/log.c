#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Process-wide logging settings, written once by ltri_log_init() at start-up. */
static ltri_log_level g_level = LTRI_LOG_INFO;
static int g_rank = -1;

static ltri_fatal_handler g_fatal_handler = NULL;

static const char *level_name[] = {"error", "warn", "info", "debug"};

void ltri_log_init(ltri_log_level level, int rank) {
    g_level = level;
    g_rank = rank;
    const char *env = getenv("LTRI_LOG");
    if (env) {
        for (int i = 0; i < 4; i++)
            if (strcmp(env, level_name[i]) == 0) g_level = (ltri_log_level)i;
    }
}

ltri_log_level ltri_log_get_level(void) { return g_level; }

void ltri_log(ltri_log_level level, const char *fmt, ...) {
    if (level > g_level) return;
    char line[2048];
    int n;
    if (g_rank >= 0)
        n = snprintf(line, sizeof(line), "ltri[%d] %s: ", g_rank, level_name[level]);
    else
        n = snprintf(line, sizeof(line), "ltri %s: ", level_name[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line so that lines of different ranks do not interleave. */
    size_t len = strlen(line);
    if (len + 1 < sizeof(line) && (len == 0 || line[len - 1] != '\n')) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    fputs(line, stderr);
}

void ltri_set_fatal_handler(ltri_fatal_handler handler) { g_fatal_handler = handler; }

void ltri_fatal(const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ltri_log(LTRI_LOG_ERROR, "fatal: %s", msg);
    fflush(stderr);
    if (g_fatal_handler) g_fatal_handler(1);
    abort();
}
