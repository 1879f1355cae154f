/* The linear layers: y[T][n_out] (+)= x[T][n_in] W^T + bias, through cuBLASLt
 * (a few tokens: matmul_gemv.cu, tried first).
 *
 * x and W are bf16, y is fp32 and the products accumulate in fp32
 * (CUBLAS_COMPUTE_32F), so the residual stream never passes through bf16. cuBLAS
 * is column-major; a row-major [R][C] matrix is the column-major C x R matrix
 * with leading dimension C. With W [n_out][n_in] and x [T][n_in] row-major:
 *     y_cm [n_out x T] = W_cm[n_in x n_out]^T * x_cm[n_in x T]
 * i.e. A = W with op T (m = n_out, k = n_in, lda = n_in), B = x with op N
 * (n = T, ldb = n_in), C = D = y (ldc = n_out). This "TN" form is the one
 * cuBLASLt supports for every type. accumulate sets beta = 1 (the residual add,
 * in place: C and D share one layout); otherwise beta = 0 and y is not read.
 *
 * The heuristic query runs once per shape (and pointer alignment) and its
 * answer is cached in the backend, so the hot path only calls cublasLtMatmul.
 * Where cuBLASLt has no algorithm (odd leading dimensions with unaligned rows),
 * cublasGemmEx runs the same product. The bias (bf16) is added by a separate
 * elementwise kernel: only a few of the model's GEMMs have one (Qwen's q/k/v). */
#include "kernels/cuda/cuda_internal.h"

#define BIAS_THREADS 256

__global__ void bias_add_kernel(float *y, const bf16 *bias, int n_out, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += __bfloat162float(bias[i % (size_t)n_out]);
}

/* The largest power of two (at most 256) that divides the address. */
static uint32_t pointer_alignment(const void *p) {
    uintptr_t address = (uintptr_t)p;
    uint32_t alignment = 256;
    while (alignment > 1 && address % alignment != 0) alignment >>= 1;
    return alignment;
}

static void matmul_plan_release(cuda_matmul_plan *plan) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan->layout_y));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan->layout_x));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan->layout_w));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(plan->desc));
}

void cuda_matmul_plans_destroy(cuda_impl *impl) {
    for (int i = 0; i < impl->n_plans; i++) matmul_plan_release(&impl->plans[i]);
    impl->n_plans = 0;
}

/* Fills a plan: descriptors for the shape, then one heuristic query. */
static void matmul_plan_build(cuda_impl *impl, cuda_matmul_plan *plan) {
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t op_w = CUBLAS_OP_T, op_x = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_w, sizeof(op_w)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_x, sizeof(op_x)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_w, CUDA_R_16BF, (uint64_t)plan->n_in,
                                            (uint64_t)plan->n_out, (int64_t)plan->n_in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_x, CUDA_R_16BF, (uint64_t)plan->n_in,
                                            (uint64_t)plan->n_tokens, (int64_t)plan->n_in));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->layout_y, CUDA_R_32F, (uint64_t)plan->n_out,
                                            (uint64_t)plan->n_tokens, (int64_t)plan->n_out));

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t max_workspace = impl->workspace_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                      sizeof(max_workspace)));
    /* The default assumes 256-byte aligned buffers; say what they really are so
     * that no algorithm needing more is chosen. */
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                      &plan->align_w, sizeof(plan->align_w)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                      &plan->align_x, sizeof(plan->align_x)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                      &plan->align_y, sizeof(plan->align_y)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                      &plan->align_y, sizeof(plan->align_y)));

    cublasLtMatmulHeuristicResult_t result;
    memset(&result, 0, sizeof(result));
    int n_results = 0;
    cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(impl->lt, plan->desc, plan->layout_w, plan->layout_x,
                                                           plan->layout_y, plan->layout_y, pref, 1, &result,
                                                           &n_results);
    /* NOT_SUPPORTED means "no algorithm for this case"; anything else is a bug. */
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(status);
    plan->use_lt = status == CUBLAS_STATUS_SUCCESS && n_results > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (plan->use_lt)
        plan->algo = result.algo;
    else
        LOG_DEBUG("matmul %dx%dx%d: no cuBLASLt algorithm, using cublasGemmEx", plan->n_tokens, plan->n_out,
                  plan->n_in);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
}

static const cuda_matmul_plan *matmul_plan_get(cuda_impl *impl, int n_tokens, int n_out, int n_in, const void *w,
                                               const void *x, const float *y) {
    const uint32_t align_w = pointer_alignment(w), align_x = pointer_alignment(x), align_y = pointer_alignment(y);
    for (int i = 0; i < impl->n_plans; i++) {
        const cuda_matmul_plan *p = &impl->plans[i];
        if (p->n_tokens == n_tokens && p->n_out == n_out && p->n_in == n_in && p->align_w == align_w &&
            p->align_x == align_x && p->align_y == align_y)
            return p;
    }
    cuda_matmul_plan *plan;
    if (impl->n_plans < CUDA_MATMUL_PLANS) {
        plan = &impl->plans[impl->n_plans++];
    } else {
        plan = &impl->plans[impl->next_plan_to_replace];
        impl->next_plan_to_replace = (impl->next_plan_to_replace + 1) % CUDA_MATMUL_PLANS;
        matmul_plan_release(plan);
    }
    memset(plan, 0, sizeof(*plan));
    plan->n_tokens = n_tokens;
    plan->n_out = n_out;
    plan->n_in = n_in;
    plan->align_w = align_w;
    plan->align_x = align_x;
    plan->align_y = align_y;
    matmul_plan_build(impl, plan);
    return plan;
}

void cuda_op_matmul(ltri_backend *be, float *y, const void *x, const void *w, const void *bias, int n_tokens,
                    int n_out, int n_in, int accumulate) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || n_out <= 0) return;
    if (n_in <= 0) ltri_fatal("matmul: n_in is %d", n_in);
    const ltri_matmul_out product = {y, w, bias, n_out, accumulate};
    if (cuda_gemv(impl, &product, 1, x, n_tokens, n_in) == 0) return;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const cuda_matmul_plan *plan = impl->matmul_path == CUDA_MATMUL_GEMMEX
                                       ? NULL
                                       : matmul_plan_get(impl, n_tokens, n_out, n_in, w, x, y);
    if (plan && plan->use_lt) {
        CUBLAS_CHECK(cublasLtMatmul(impl->lt, plan->desc, &alpha, w, plan->layout_w, x, plan->layout_x, &beta, y,
                                    plan->layout_y, y, plan->layout_y, &plan->algo, impl->workspace,
                                    impl->workspace_bytes, impl->stream));
    } else {
        CUBLAS_CHECK(cublasGemmEx(impl->blas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_tokens, n_in, &alpha, w,
                                  CUDA_R_16BF, n_in, x, CUDA_R_16BF, n_in, &beta, y, CUDA_R_32F, n_out,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (bias) {
        const size_t n = (size_t)n_tokens * n_out;
        bias_add_kernel<<<cuda_grid_for(n, BIAS_THREADS), BIAS_THREADS, 0, impl->stream>>>(y, (const bf16 *)bias,
                                                                                           n_out, n);
        CUDA_CHECK_LAUNCH();
    }
}

void cuda_op_matmul_group(ltri_backend *be, const ltri_matmul_out *outs, int n_outs, const void *x, int n_tokens,
                          int n_in) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || n_outs <= 0) return;
    if (cuda_gemv(impl, outs, n_outs, x, n_tokens, n_in) == 0) return;
    backend_matmul_group_each(be, outs, n_outs, x, n_tokens, n_in);
}

void cuda_op_matmul_swiglu(ltri_backend *be, void *out, float *gate, float *up, const void *x, const void *w_gate,
                           const void *w_up, const void *b_gate, const void *b_up, int n_tokens, int n_hidden,
                           int n_in) {
    cuda_impl *impl = cuda_enter(be);
    if (n_tokens <= 0 || n_hidden <= 0) return;
    const ltri_matmul_out g = {gate, w_gate, b_gate, n_hidden, 0}, u = {up, w_up, b_up, n_hidden, 0};
    if (cuda_gemv_swiglu(impl, (bf16 *)out, &g, &u, x, n_tokens, n_in) == 0) return;
    backend_matmul_swiglu_unfused(be, out, gate, up, x, w_gate, w_up, b_gate, b_up, n_tokens, n_hidden, n_in);
}
