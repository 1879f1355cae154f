/* Monotonic wall clock, in seconds. Host time only: device work must be
 * synchronised (or timed with events) before it is read. */
#ifndef LTRI_CORE_TIMER_H
#define LTRI_CORE_TIMER_H

#include <time.h>

static inline double ltri_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
