/* CRC-32 (IEEE 802.3, the zlib/PNG polynomial), for the saved-context files:
 * a flipped or missing byte must be detected before anything is used. */
#ifndef LTRI_CORE_CHECKSUM_H
#define LTRI_CORE_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* crc = ltri_crc32(0, data, n) starts; pass the result back to continue. */
uint32_t ltri_crc32(uint32_t crc, const void *data, size_t n);

#endif
