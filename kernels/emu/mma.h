// attune CUDA emulator: the tensor-core and async-copy helpers of kernels/common.cuh.
//
// mma and ldmatrix are warp collectives (runtime.h): every lane deposits pointers to its
// registers (or its row address), the last lane to arrive assembles the warp's matrices with the
// PTX ISA fragment tables and writes every lane's result registers. The tables, for
// mma.m16n8k16.row.col with 16-bit inputs (g = lane >> 2, t = lane % 4, the lower-indexed
// element of a register in its low half):
//   A 16x16, a0..a7 in four registers: row g for a0,a1,a4,a5 and g + 8 for a2,a3,a6,a7;
//     column 2t + (i & 1), plus 8 for i >= 4.
//   B 16x8 (k x n), b0..b3 in two registers: row 2t + (i & 1), plus 8 for i >= 2; column g.
//   C/D 16x8 f32, c0..c3: row g for c0,c1 and g + 8 for c2,c3; column 2t + (i & 1).
// ldmatrix.m8n8.xN[.trans].b16: lanes 8m..8m+7 give the addresses of rows 0..7 of matrix m;
//   lane l's register m holds row l/4, columns 2(l%4) and 2(l%4)+1 of matrix m, or with .trans
//   column l/4, rows 2(l%4) and 2(l%4)+1.
// The mma's products are exact in double and the sum with c is rounded once to f32; the GPU's
// tensor cores round their accumulation differently (within a few f32 ulp).
#pragma once
#include <stdlib.h>
#include <string.h>

#include "half.h"
#include "runtime.h"

namespace attune_emu {

inline float lo16(uint32_t r, bool bf16) {
    return bf16 ? bf16_to_f32((uint16_t)(r & 0xffffu)) : f16_to_f32((uint16_t)(r & 0xffffu));
}
inline float hi16(uint32_t r, bool bf16) {
    return bf16 ? bf16_to_f32((uint16_t)(r >> 16)) : f16_to_f32((uint16_t)(r >> 16));
}

template <bool BF16>
inline void complete_mma(Warp& w) {
    if (w.present != 0xffffffffu)
        fail("mma_m16n8k16 with lanes 0x%08x present: every lane of the warp must take part", w.present);
    double A[16][16], B[16][8], C[16][8];
    for (uint32_t lane = 0; lane < 32; lane++) {
        uint32_t g = lane >> 2, t = lane & 3;
        const uint32_t* a = static_cast<const uint32_t*>(w.lane[lane].in0);
        const uint32_t* b = static_cast<const uint32_t*>(w.lane[lane].in1);
        const float* c = static_cast<const float*>(w.lane[lane].in2);
        for (uint32_t i = 0; i < 8; i++) {
            uint32_t row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
            uint32_t col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
            uint32_t reg = a[i / 2];
            A[row][col] = (i & 1) ? hi16(reg, BF16) : lo16(reg, BF16);
        }
        for (uint32_t i = 0; i < 4; i++) {
            uint32_t row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0);
            uint32_t reg = b[i / 2];
            B[row][g] = (i & 1) ? hi16(reg, BF16) : lo16(reg, BF16);
        }
        for (uint32_t i = 0; i < 4; i++) C[i < 2 ? g : g + 8][2 * t + (i & 1)] = c[i];
    }
    float D[16][8];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double s = C[i][j];
            for (int k = 0; k < 16; k++) s += A[i][k] * B[k][j];
            D[i][j] = (float)s;
        }
    for (uint32_t lane = 0; lane < 32; lane++) {
        uint32_t g = lane >> 2, t = lane & 3;
        float* d = static_cast<float*>(w.lane[lane].out);
        for (uint32_t i = 0; i < 4; i++) d[i] = D[i < 2 ? g : g + 8][2 * t + (i & 1)];
    }
}

inline void complete_ldmatrix(Warp& w) {
    int num = w.lane[0].arg;
    uint64_t trans = w.lane[0].bits;
    for (uint32_t l = 0; l < 32; l++)
        if (!(w.present >> l & 1) || w.lane[l].arg != num || w.lane[l].bits != trans)
            fail("ldmatrix: lane %u %s; every lane of the warp must run the same ldmatrix variant", l,
                 (w.present >> l & 1) ? "ran a different variant" : "did not take part");
    uint16_t M[4][8][8];
    for (int m = 0; m < num; m++)
        for (int r = 0; r < 8; r++) {
            const void* row = w.lane[8 * m + r].in0;
            if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
                fail("ldmatrix: lane %d gave row address %p, which is not 16-byte aligned", 8 * m + r, row);
            memcpy(M[m][r], row, 16);
        }
    for (uint32_t l = 0; l < 32; l++) {
        uint32_t* regs = static_cast<uint32_t*>(w.lane[l].out);
        uint32_t a = l / 4, b = 2 * (l % 4);
        for (int m = 0; m < num; m++) {
            uint16_t lo = trans ? M[m][b][a] : M[m][a][b];
            uint16_t hi = trans ? M[m][b + 1][a] : M[m][a][b + 1];
            regs[m] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
}

inline void mma_16816(const char* name, CollectiveFn fn, float* d, const unsigned* a, const unsigned* b, const float* c) {
    Deposit dep;
    memset(&dep, 0, sizeof dep);
    dep.in0 = a;
    dep.in1 = b;
    dep.in2 = c;
    dep.out = d;
    warp_collective(name, fn, dep);
}

inline void ldmatrix(unsigned* regs, const void* row, int num, bool trans) {
    Deposit dep;
    memset(&dep, 0, sizeof dep);
    dep.in0 = row;
    dep.out = regs;
    dep.arg = num;
    dep.bits = trans;
    warp_collective("ldmatrix", &complete_ldmatrix, dep);
}

// Pending cp.async copies of one thread. The source is read when the copy is issued; the
// destination is written when a wait covers its group, so a kernel that reads shared memory
// before waiting sees the old contents (0xFF bytes in fresh dynamic shared memory).
struct CpAsyncCopy {
    void* dst;
    uint32_t group;
    unsigned char bytes[16];
};
struct CpAsyncQueue {
    uint32_t count, cap, committed;
    CpAsyncCopy* items;
};

inline CpAsyncQueue* cp_queue() {
    Fiber* f = cur_fiber();
    if (!f->cp_async) f->cp_async = calloc(1, sizeof(CpAsyncQueue));
    return static_cast<CpAsyncQueue*>(f->cp_async);
}

// Completes every pending copy of a group older than `committed - keep`.
inline void cp_async_complete(CpAsyncQueue* q, uint32_t keep, bool everything) {
    uint32_t kept = 0;
    for (uint32_t i = 0; i < q->count; i++) {
        CpAsyncCopy& c = q->items[i];
        if (everything || c.group + keep < q->committed) {
            memcpy(c.dst, c.bytes, 16);
        } else {
            q->items[kept++] = c;
        }
    }
    q->count = kept;
}

inline void cp_async_16(void* smem, const void* gmem) {
    if (reinterpret_cast<uintptr_t>(smem) % 16 || reinterpret_cast<uintptr_t>(gmem) % 16)
        fail("cp_async_16(%p, %p): both addresses must be 16-byte aligned", smem, gmem);
    CpAsyncQueue* q = cp_queue();
    if (q->count == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 16;
        q->items = static_cast<CpAsyncCopy*>(realloc(q->items, q->cap * sizeof(CpAsyncCopy)));
    }
    CpAsyncCopy& c = q->items[q->count++];
    c.dst = smem;
    c.group = q->committed;
    memcpy(c.bytes, gmem, 16);
}

// Called when a fiber exits or its block ends: copies still in flight land, as they would.
inline void cp_async_retire(Fiber* f) {
    if (!f->cp_async) return;
    CpAsyncQueue* q = static_cast<CpAsyncQueue*>(f->cp_async);
    cp_async_complete(q, 0, true);
    free(q->items);
    free(q);
    f->cp_async = nullptr;
}

}  // namespace attune_emu

static inline void mma_m16n8k16_f16f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    attune_emu::mma_16816("mma_m16n8k16_f16f32", &attune_emu::complete_mma<false>, d, a, b, c);
}
static inline void mma_m16n8k16_bf16f32(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
    attune_emu::mma_16816("mma_m16n8k16_bf16f32", &attune_emu::complete_mma<true>, d, a, b, c);
}
static inline void ldmatrix_x1(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 1, false); }
static inline void ldmatrix_x2(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 2, false); }
static inline void ldmatrix_x4(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 4, false); }
static inline void ldmatrix_x1_trans(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 1, true); }
static inline void ldmatrix_x2_trans(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 2, true); }
static inline void ldmatrix_x4_trans(unsigned* regs, const void* row) { attune_emu::ldmatrix(regs, row, 4, true); }
static inline void cp_async_16(void* smem, const void* gmem) { attune_emu::cp_async_16(smem, gmem); }
static inline void cp_async_commit() { attune_emu::cp_queue()->committed++; }
template <int N>
static inline void cp_async_wait() {
    attune_emu::cp_async_complete(attune_emu::cp_queue(), (uint32_t)N, false);
}
static inline void cp_async_wait_all() {
    attune_emu::CpAsyncQueue* q = attune_emu::cp_queue();
    q->committed++;
    attune_emu::cp_async_complete(q, 0, true);
}
