#include "core/checksum.h"

/* Bytewise table-driven CRC-32 (reflected polynomial 0xEDB88320). The table is
 * computed at compile time's equivalent, once, and never changes. */
static uint32_t crc_table_entry(uint32_t c) {
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    return c;
}

uint32_t ltri_crc32(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static int ready; /* idempotent: racing initialisers write the same values */
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) table[i] = crc_table_entry(i);
        ready = 1;
    }
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}
