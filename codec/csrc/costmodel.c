/*
 * The lean levels' choice (levels 1-3 on per-tensor symbols of 4 Ki or more): codec/costmodel.py's
 * _lean_candidates and choose in one call, for the encoder's hot path. Each representation (delta-nibble or
 * delta-packed at each distance, dense, bit-packed, residuals at each distance) is costed order-0 from the
 * sampled family histograms, in the order and with the floating-point operations of the Python, and the first
 * cheapest is kept; the Python stays the reference (tests/test_costmodel.py compares the two). Where the level
 * would also weigh sparse rows (a zero share above its threshold), it answers LEAN_SPARSE and the Python
 * decides.
 */
#include <math.h>

#include "internal.h"

enum { K_DENSE = 1, K_PACKED = 2, K_DELTA = 4, K_DELTA_PACKED = 5, K_DELTA_NIBBLE = 6 };
#define HEADER_BYTES 24.0 /* STREAM_HEADER_BYTES */
#define PER_BLOCK (STATE_BYTES + 4)
#define MAX_ROWS (2 + 3 * LEAN_MAX_DISTANCES)

typedef struct {
    const double *bits;
    const int64_t *tables;
    int64_t block;
} Rows;

/* predicted bytes of an order-0 stream of length symbols, counted (times scale) in row */
static double row_cost(const Rows *r, int row, int64_t length, double scale) {
    if (length == 0) return 0.0;
    const int64_t blocks = (length + r->block - 1) / r->block;
    return r->bits[row] * scale / 8 + (double)r->tables[row] + (double)(blocks * PER_BLOCK) + HEADER_BYTES;
}

/* _order0_plan: rANS at cost, or stored bytes where those are no larger */
static void order0(int64_t length, double cost, int *coding, double *predicted) {
    const double stored = (double)(length + (int64_t)HEADER_BYTES);
    *coding = stored <= cost ? 0 : 1;
    *predicted = stored <= cost ? stored : cost;
}

static void offer(LeanChoice *best, int kind, int param, int nstreams, const int64_t *len, const double *cost) {
    LeanChoice c = {kind, param, nstreams, {0, 0}, {0.0, 0.0}, 0.0};
    for (int k = 0; k < nstreams; k++) order0(len[k], cost[k], &c.coding[k], &c.predicted[k]);
    c.total = nstreams == 2 ? c.predicted[0] + c.predicted[1] : c.predicted[0];
    if (best->kind == 0 || c.total < best->total) *best = c; /* ties: the first offered, as min() */
}

int lean_choice(const uint8_t *q, int64_t n, int bits, const int64_t *starts, int64_t nstarts, int64_t chunk,
                const int64_t *dist, int nd, const uint32_t *given, int block_log2, int zero, double sparse_share,
                LeanChoice *best) {
    const int slot = bits == 1 ? 1 : bits == 2 ? 2 : bits <= 4 ? 4 : 0;
    const int rows = 2 + (slot ? 2 : 3) * nd;
    uint32_t hist[MAX_ROWS][256], dense_sample[256];
    double row_bits[MAX_ROWS];
    int64_t row_tables[MAX_ROWS];
    memset(hist, 0, sizeof hist);
    family_histograms(q, starts, nstarts, chunk, (uint8_t)((1u << bits) - 1), slot, dist, nd, &hist[0][0]);
    const int64_t sampled = nstarts * chunk;
    memcpy(dense_sample, hist[0], sizeof dense_sample);
    double dense_scale = (double)n / (double)sampled;
    if (given) {
        memcpy(hist[0], given, sizeof hist[0]);
        int64_t total = 0;
        for (int s = 0; s < 256; s++) total += given[s];
        dense_scale = (double)n / (double)(total > 1 ? total : 1);
    }
    /* the sparse rows the level would weigh too: then the Python decides */
    const uint32_t *h = given ? given : dense_sample;
    int64_t counted = 0;
    for (int s = 0; s < 256; s++) counted += h[s];
    if (n >= 64 && (double)h[zero] / (double)(counted > 1 ? counted : 1) > sparse_share) return LEAN_SPARSE;
    row_costs(&hist[0][0], rows, LEAN_PROB_BITS, row_bits, row_tables);
    const Rows r = {row_bits, row_tables, (int64_t)1 << block_log2};
    const int per = slot ? 8 / slot : 2;
    const int64_t sampled_per = sampled / per, packed_len = (n + per - 1) / per;
    const double packed_scale = (double)packed_len / (double)sampled_per, n_scale = (double)n / (double)sampled;
    memset(best, 0, sizeof *best);
    if (!slot) {
        for (int k = 0; k < nd; k++) {
            const int row = 2 + nd + k;
            uint64_t esc = 0;
            for (int s = 0; s < 256; s++) esc += hist[row + nd][s];
            const int64_t nesc = (int64_t)nearbyint((double)(esc * (uint64_t)n) / (double)sampled);
            const int64_t len[2] = {packed_len, nesc};
            const double cost[2] = {row_cost(&r, row, packed_len, packed_scale), row_cost(&r, row + nd, nesc, n_scale)};
            offer(best, K_DELTA_NIBBLE, (int)dist[k], 2, len, cost);
        }
    }
    double cost = row_cost(&r, 0, n, dense_scale);
    offer(best, K_DENSE, 0, 1, &n, &cost);
    if (slot) {
        cost = row_cost(&r, 1, packed_len, packed_scale);
        offer(best, K_PACKED, slot, 1, &packed_len, &cost);
    }
    for (int k = 0; k < nd; k++) {
        cost = row_cost(&r, 2 + k, n, n_scale);
        offer(best, K_DELTA, (int)dist[k], 1, &n, &cost);
    }
    for (int k = 0; slot && k < nd; k++) {
        cost = row_cost(&r, 2 + nd + k, packed_len, packed_scale);
        offer(best, K_DELTA_PACKED, (int)dist[k], 1, &packed_len, &cost);
    }
    return 0;
}
