// Philox4x32-10, the one counter-based stream of every Attune backend
// (crates/tensor/src/cpu/philox.rs): element i of a stream (seed, offset) reads block
// c = offset + i / 4 (counter [lo32(c), hi32(c), 0, 0], key [lo32(seed), hi32(seed)]) and owns
// word i % 4. Shared by the tensor random kernels and attention dropout.
#pragma once
#include "common.cuh"

struct Words {
    unsigned w[4];
};

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ Words philox_block(unsigned long long seed, unsigned long long block) {
    unsigned c0 = (unsigned)block, c1 = (unsigned)(block >> 32), c2 = 0u, c3 = 0u;
    unsigned k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        // 32x32 -> 64-bit products (the high halves are __umulhi on a GPU).
        const unsigned long long p0 = (unsigned long long)PHILOX_M0 * c0;
        const unsigned long long p1 = (unsigned long long)PHILOX_M1 * c2;
        const unsigned hi0 = (unsigned)(p0 >> 32), lo0 = (unsigned)p0, hi1 = (unsigned)(p1 >> 32), lo1 = (unsigned)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    Words out;
    out.w[0] = c0;
    out.w[1] = c1;
    out.w[2] = c2;
    out.w[3] = c3;
    return out;
}

