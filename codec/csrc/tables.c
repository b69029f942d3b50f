/*
 * Frequency tables (mirrors codec/tables.py): normalization of symbol counts to rANS frequencies summing to
 * 2^prob_bits (deterministic integer arithmetic), the ideal code length and serialized size of a set of
 * tables for the cost model, and the compact serialization with its validating parser. Serialized table:
 * a 32-byte presence bitmap, then f-1 of each present symbol in one byte (< 0x80) or two (0x80 | high
 * bits, low byte).
 */
#include <math.h>

#include "internal.h"

/* Every counted symbol gets >= 1 and the table sums to 2^pb; an empty table stays all zero. */
static void normalize_one(const uint32_t *cnt, int pb, uint16_t *f) {
    const uint32_t M = 1u << pb;
    uint64_t total = 0;
    for (int s = 0; s < 256; s++) total += cnt[s];
    memset(f, 0, 256 * sizeof(uint16_t));
    if (total == 0) return;
    int64_t sum = 0;
    int best = 0;
    const double inv_total = 1.0 / (double)total;
    for (int s = 0; s < 256; s++) {
        if (!cnt[s]) continue;
        /* floor(cnt * M / total) by a reciprocal, corrected to the exact integer quotient */
        const uint64_t num = (uint64_t)cnt[s] * M;
        uint64_t v = (uint64_t)((double)num * inv_total);
        if (v * total > num) v--;
        else if ((v + 1) * total <= num) v++;
        if (v == 0) v = 1;
        f[s] = (uint16_t)(v > M ? M : v);
        sum += f[s];
        if (cnt[s] > cnt[best]) best = s;
    }
    if (sum < M) {
        f[best] = (uint16_t)(f[best] + (M - sum));
        return;
    }
    while (sum > M) {
        /* take from the largest frequency first: it loses the least code length per unit */
        int arg = -1;
        for (int s = 0; s < 256; s++)
            if (f[s] > 1 && (arg < 0 || f[s] > f[arg])) arg = s;
        if (arg < 0) break; /* cannot happen: at most 256 symbols and M >= 256 */
        int64_t take = sum - M;
        if (take > f[arg] - 1) take = f[arg] - 1;
        if (take > f[arg] / 2 && f[arg] > 2) take = f[arg] / 2; /* spread the cut over the big ones */
        if (take < 1) take = 1;
        f[arg] = (uint16_t)(f[arg] - take);
        sum -= take;
    }
}

void normalize_tables(const uint32_t *counts, int64_t ntab, int pb, uint16_t *out) {
    for (int64_t t = 0; t < ntab; t++) normalize_one(counts + t * 256, pb, out + t * 256);
}

/* log2 of every frequency up to 2^LOG2_TABLE_BITS, as log2() gives it (the same doubles, looked up) */
#define LOG2_TABLE_BITS 12
static double log2_table[(1 << LOG2_TABLE_BITS) + 1];

void tables_init(void) {
    for (int f = 1; f <= 1 << LOG2_TABLE_BITS; f++) log2_table[f] = log2((double)f);
}

/* Ideal code bits of ntab count tables under their normalized frequencies; *table_bytes gets their
 * serialized size. */
double table_cost(const uint32_t *counts, int64_t ntab, int pb, int64_t *table_bytes) {
    double bits = 0.0;
    int64_t tbytes = 0;
    uint16_t f[256];
    for (int64_t t = 0; t < ntab; t++) {
        const uint32_t *c = counts + t * 256;
        normalize_one(c, pb, f);
        tbytes += 32;
        for (int k = 0; k < 256; k++) {
            if (!f[k]) continue;
            tbytes += f[k] > 0x80 ? 2 : 1;
            if (c[k]) {
                const double lg = f[k] <= 1 << LOG2_TABLE_BITS ? log2_table[f[k]] : log2((double)f[k]);
                bits += (double)c[k] * ((double)pb - lg);
            }
        }
    }
    *table_bytes = tbytes;
    return bits;
}

/* table_cost of each of rows count tables on its own: bits[r] and table_bytes[r] (one call for all the cost
 * model's order-0 candidates) */
void row_costs(const uint32_t *counts, int64_t rows, int pb, double *bits, int64_t *table_bytes) {
    for (int64_t r = 0; r < rows; r++) bits[r] = table_cost(counts + r * 256, 1, pb, table_bytes + r);
}

/* Serialize ntab tables into buf (capacity ntab * (32 + 512)); returns bytes written. */
int64_t write_tables(const uint16_t *freqs, int64_t ntab, uint8_t *buf) {
    int64_t pos = 0;
    for (int64_t t = 0; t < ntab; t++) {
        const uint16_t *f = freqs + t * 256;
        uint8_t *bm = buf + pos;
        memset(bm, 0, 32);
        pos += 32;
        for (int k = 0; k < 256; k++) {
            if (!f[k]) continue;
            bm[k >> 3] |= (uint8_t)(1u << (k & 7));
            uint32_t v = (uint32_t)f[k] - 1;
            if (v < 0x80) {
                buf[pos++] = (uint8_t)v;
            } else {
                buf[pos++] = (uint8_t)(0x80 | (v >> 8));
                buf[pos++] = (uint8_t)(v & 0xFF);
            }
        }
    }
    return pos;
}

/* Parse ntables tables from p[0..len) into out (ntables x 256); returns bytes consumed, or -1 if they are
 * truncated, a frequency exceeds 2^pb or a non-empty table does not sum to 2^pb. */
int64_t read_tables(const uint8_t *p, int64_t len, int ntables, int pb, uint16_t *out) {
    int64_t pos = 0;
    const uint32_t M = 1u << pb;
    if (out) memset(out, 0, (size_t)ntables * 512);
    for (int t = 0; t < ntables; t++) {
        if (pos + 32 > len) return -1;
        const uint8_t *bm = p + pos;
        pos += 32;
        uint32_t sum = 0;
        int present = 0;
        for (int sym = 0; sym < 256; sym++) {
            if (!((bm[sym >> 3] >> (sym & 7)) & 1)) continue;
            present = 1;
            if (pos >= len) return -1;
            uint32_t v = p[pos++];
            if (v & 0x80) {
                if (pos >= len) return -1;
                v = ((v & 0x7F) << 8) | p[pos++];
            }
            v += 1;
            if (v > M) return -1;
            if (out) out[t * 256 + sym] = (uint16_t)v;
            sum += v;
        }
        if (present && sum != M) return -1;
    }
    return pos;
}
