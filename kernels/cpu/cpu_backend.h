/* The CPU reference backend: plain C, fp32 everywhere, OpenMP across cores. */
#ifndef LTRI_KERNELS_CPU_BACKEND_H
#define LTRI_KERNELS_CPU_BACKEND_H

#include "kernels/backend.h"

ltri_backend *cpu_backend_create(ltri_error *err);

#endif
