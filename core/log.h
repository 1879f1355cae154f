/* One logging helper with levels (STYLE rule 10).
 *
 * Everything goes to stderr so that stdout carries only the program's answer.
 * The level and the rank tag are the process's only logging state; they are set
 * once by main() (ltri_log_init) before any other thread or rank work starts. */
#ifndef LTRI_CORE_LOG_H
#define LTRI_CORE_LOG_H

typedef enum {
    LTRI_LOG_ERROR = 0,
    LTRI_LOG_WARN = 1,
    LTRI_LOG_INFO = 2,
    LTRI_LOG_DEBUG = 3,
} ltri_log_level;

/* rank < 0: no rank tag (single-process tools). The level may be overridden by
 * the environment variable LTRI_LOG=error|warn|info|debug. */
void ltri_log_init(ltri_log_level level, int rank);
ltri_log_level ltri_log_get_level(void);
void ltri_log(ltri_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A fatal error in our own machinery (a CUDA, NCCL or MPI call failed): logs the
 * message and ends the process through the fatal handler. The worker installs a
 * handler that calls MPI_Abort, so one failing rank brings the job down at once
 * instead of leaving the other ranks waiting in a collective. Default: abort(). */
typedef void (*ltri_fatal_handler)(int exit_code);
void ltri_set_fatal_handler(ltri_fatal_handler handler);
void ltri_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define LOG_ERROR(...) ltri_log(LTRI_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...) ltri_log(LTRI_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...) ltri_log(LTRI_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) ltri_log(LTRI_LOG_DEBUG, __VA_ARGS__)

#endif
