/* Warp-level tensor-core and asynchronous-copy instructions of sm_80 and newer
 * (PTX ISA: mma.sync, ldmatrix, cp.async, ex2), as small inline functions so
 * that the kernels that use them read as plain C++.
 *
 * Fragment layouts, from the PTX ISA section "Matrix Fragments for
 * mma.m16n8k16 with floating point type". With g = lane / 4 (groupID) and
 * c = lane % 4 (threadID_in_group), a register of two bf16 values holds the
 * lower column (or row) in its low half, and
 *   A 16x16 bf16, row-major, 4 registers:
 *     a[0] = A[g][2c..2c+1]    a[1] = A[g+8][2c..2c+1]
 *     a[2] = A[g][2c+8..2c+9]  a[3] = A[g+8][2c+8..2c+9]
 *   B 16x8 bf16 (k x n), 2 registers:
 *     b[0] = B[2c..2c+1][g]    b[1] = B[2c+8..2c+9][g]
 *   C, D 16x8 fp32, 4 registers:
 *     d[0], d[1] = D[g][2c], D[g][2c+1]    d[2], d[3] = D[g+8][2c], D[g+8][2c+1]
 * So B is read from a matrix stored n-major (B^T row-major, as K is stored for
 * S = Q K^T) by a plain ldmatrix, and from one stored k-major (as V is stored
 * for O = P V) by ldmatrix .trans.
 *
 * ldmatrix .x4 loads four 8x8 matrices of 16-bit values from shared memory:
 * lanes 8i .. 8i+7 give the addresses of the 8 rows of matrix i (16 bytes
 * each, 16-byte aligned), and register i of lane l receives row l/4, columns
 * 2(l%4) and 2(l%4)+1 of matrix i: exactly an A or B register above. With
 * .trans it receives rows 2(l%4) and 2(l%4)+1 of column l/4 instead.
 *
 * cp.async copies 16 bytes from global to shared memory without passing
 * through registers; copies are grouped by commit, and wait<n> returns once
 * at most n of this thread's groups are still in flight. The data is visible
 * to the other threads of the block after the wait and a __syncthreads(). */
#ifndef LTRI_KERNELS_CUDA_TENSOR_CORE_CUH
#define LTRI_KERNELS_CUDA_TENSOR_CORE_CUH

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

static __device__ __forceinline__ uint32_t tc_shared_address(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/* d += a b for one 16x8x16 tile (layouts above), fp32 accumulation. */
static __device__ __forceinline__ void tc_mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8x8 matrices; `row` is this lane's row address (see above). */
static __device__ __forceinline__ void tc_ldmatrix_x4(uint32_t (&r)[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tc_shared_address(row)));
}

static __device__ __forceinline__ void tc_ldmatrix_x4_trans(uint32_t (&r)[4], const void *row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(tc_shared_address(row)));
}

/* 16 bytes from global src to shared dst (both 16-byte aligned); when !valid,
 * src is not read and dst gets zeros (a source size of 0). */
static __device__ __forceinline__ void tc_cp_async_16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(tc_shared_address(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

static __device__ __forceinline__ void tc_cp_async_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int n_in_flight>
static __device__ __forceinline__ void tc_cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(n_in_flight) : "memory");
}

/* Two floats rounded to bf16 (to nearest even), lo in the low half. */
static __device__ __forceinline__ uint32_t tc_pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}

/* 2^x on the special function unit (relative error ~2^-22; exactly 0 for -inf). */
static __device__ __forceinline__ float tc_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

#endif
