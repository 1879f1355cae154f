/* Element types of tensors in files and in backend memory, and exact host-side
 * conversions between them (round to nearest even, as PyTorch's .to() does). */
#ifndef LTRI_CORE_DTYPE_H
#define LTRI_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
    LTRI_F32 = 0,
    LTRI_BF16 = 1,
    LTRI_F16 = 2,
    LTRI_I32 = 3,
    LTRI_I64 = 4,
} ltri_dtype;

static inline size_t ltri_dtype_size(ltri_dtype t) {
    switch (t) {
    case LTRI_F32: return 4;
    case LTRI_BF16: return 2;
    case LTRI_F16: return 2;
    case LTRI_I32: return 4;
    case LTRI_I64: return 8;
    }
    return 0;
}

static inline const char *ltri_dtype_name(ltri_dtype t) {
    switch (t) {
    case LTRI_F32: return "F32";
    case LTRI_BF16: return "BF16";
    case LTRI_F16: return "F16";
    case LTRI_I32: return "I32";
    case LTRI_I64: return "I64";
    }
    return "?";
}

static inline float ltri_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t ltri_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float ltri_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t ltri_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (absu < 0x38800000u) {                                    /* subnormal or zero */
        if (absu < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absu >> 23;
        uint32_t m = (absu & 0x7fffffu) | 0x800000u;
        /* value = m * 2^(e-150) and the f16 subnormal unit is 2^-24, so the
         * f16 mantissa is m >> (126 - e), rounded to nearest even. */
        uint32_t shift = 126 - e;
        uint32_t r = m >> (shift);
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absu - 0x38000000u; /* rebias exponent 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

/* Converts n elements of src (type st) into dst (type dt). Only float types. */
static inline void ltri_convert(void *dst, ltri_dtype dt, const void *src, ltri_dtype st, size_t n) {
    if (dt == st) {
        memcpy(dst, src, n * ltri_dtype_size(dt));
        return;
    }
    /* Element loads go through memcpy: safetensors does not align tensors, so a
     * mapped tensor may start at any byte. */
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        float v;
        uint16_t h;
        switch (st) {
        case LTRI_F32: memcpy(&v, s + 4 * i, 4); break;
        case LTRI_BF16: memcpy(&h, s + 2 * i, 2); v = ltri_bf16_to_f32(h); break;
        case LTRI_F16: memcpy(&h, s + 2 * i, 2); v = ltri_f16_to_f32(h); break;
        default: v = 0.0f; break;
        }
        switch (dt) {
        case LTRI_F32: ((float *)dst)[i] = v; break;
        case LTRI_BF16: ((uint16_t *)dst)[i] = ltri_f32_to_bf16(v); break;
        case LTRI_F16: ((uint16_t *)dst)[i] = ltri_f32_to_f16(v); break;
        default: break;
        }
    }
}

#endif
