/* The baseline of `python -m benchmarks lookup`: a bare hash-table probe.
 *
 * An open-addressing table (linear probing, power-of-two size, load factor <= 0.5,
 * multiplicative hash) maps each distinct code to its run [start, end) in the row ids sorted
 * by code.  A query probes the given neighbour codes (query XOR every flip mask) one after
 * another, the way a hash table is normally used (no software prefetch), and copies the ids
 * of every hit into the output.  No distances, no sorting: the least work an answer takes.
 * Compiled by the benchmark with the system C compiler and loaded with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>

#define EMPTY UINT64_MAX

static inline uint64_t slot_of(uint64_t code, int shift) { return (code * 0x9E3779B97F4A7C15ULL) >> shift; }

/* keys (2^log2 slots, filled with EMPTY by the caller), vals: index into distinct codes */
void hp_build(const uint64_t *distinct, int64_t n_distinct, uint64_t *keys, uint32_t *vals, int log2) {
    uint64_t mask = (1ULL << log2) - 1;
    int shift = 64 - log2;
    for (int64_t i = 0; i < n_distinct; i++) {
        uint64_t s = slot_of(distinct[i], shift);
        while (keys[s] != EMPTY) s = (s + 1) & mask;
        keys[s] = distinct[i];
        vals[s] = (uint32_t)i;
    }
}

/* returns the number of ids written; stops (returns -1) if out would overflow */
int64_t hp_probe(const uint64_t *keys, const uint32_t *vals, int log2, const int64_t *starts, const uint32_t *ids,
                 const uint64_t *queries, int64_t n_queries, const uint64_t *masks, int64_t n_masks,
                 uint32_t *out, int64_t out_cap, int64_t *counts) {
    uint64_t mask = (1ULL << log2) - 1;
    int shift = 64 - log2;
    int64_t n_out = 0;
    for (int64_t q = 0; q < n_queries; q++) {
        int64_t before = n_out;
        for (int64_t p = 0; p < n_masks; p++) {
            uint64_t code = queries[q] ^ masks[p];
            uint64_t s = slot_of(code, shift);
            while (keys[s] != EMPTY && keys[s] != code) s = (s + 1) & mask;
            if (keys[s] == EMPTY) continue;
            uint32_t v = vals[s];
            for (int64_t j = starts[v]; j < starts[v + 1]; j++) {
                if (n_out >= out_cap) return -1;
                out[n_out++] = ids[j];
            }
        }
        counts[q] = n_out - before;
    }
    return n_out;
}
