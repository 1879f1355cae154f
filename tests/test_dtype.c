/* bf16/f16 conversions: exact round trips and round-to-nearest-even. */
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "test_util.h"

int main(void) {
    /* Every finite f16 and bf16 value survives f32 and back. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ltri_f16_to_f32((uint16_t)h);
        if (!isnan(f)) CHECK_MSG(ltri_f32_to_f16(f) == h, "f16 %04x", h);
        float g = ltri_bf16_to_f32((uint16_t)h);
        if (!isnan(g)) CHECK_MSG(ltri_f32_to_bf16(g) == h, "bf16 %04x", h);
    }
    /* Ties go to even: 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125. */
    CHECK(ltri_f32_to_bf16(1.0f + 1.0f / 256) == ltri_f32_to_bf16(1.0f));
    CHECK(ltri_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82);
    CHECK(ltri_f32_to_f16(65520.0f) == 0x7c00); /* rounds to +inf */
    CHECK(ltri_f32_to_f16(5.9604645e-8f) == 0x0001); /* smallest subnormal */
    CHECK(isnan(ltri_bf16_to_f32(ltri_f32_to_bf16(NAN))));
    float src[3] = {1.5f, -2.25f, 3.0e-5f}, back[3];
    uint16_t mid[3];
    ltri_convert(mid, LTRI_F16, src, LTRI_F32, 3);
    ltri_convert(back, LTRI_F32, mid, LTRI_F16, 3);
    CHECK(back[0] == 1.5f && back[1] == -2.25f && fabsf(back[2] - 3.0e-5f) < 1e-7f);
    return test_finish("test_dtype");
}
