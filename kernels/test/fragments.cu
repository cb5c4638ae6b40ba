// Self-test kernels for the tensor-core and async-copy helpers (crates/cuda/tests/
// emu_fragments.rs). They record registers verbatim, so the test checks the lane/element
// mapping against its own reading of the PTX ISA tables.
#include "../common.cuh"

#define LD_STRIDE 24  // halves per shared row (48 bytes: rows stay 16-byte aligned)

// One warp. `image` is the shared tile: 32 rows of LD_STRIDE halves; matrix m's rows start at
// row base[m]. Lane l passes the address of row l % 8 of matrix l / 8. variant: 0-2 = x1, x2, x4;
// 3-5 = the .trans forms. out[4 * lane + m] = register m.
extern "C" __global__ void ldmatrix_record(const unsigned short* image, unsigned* out, int variant) {
    __shared__ __align__(16) unsigned short tile[32 * LD_STRIDE];
    const int base[4] = {16, 0, 24, 8};
    unsigned lane = threadIdx.x;
    for (int i = lane; i < 32 * LD_STRIDE; i += 32) tile[i] = image[i];
    __syncwarp();
    const unsigned short* row = tile + (base[lane / 8] + lane % 8) * LD_STRIDE;
    unsigned regs[4] = {0, 0, 0, 0};
    switch (variant) {
        case 0: ldmatrix_x1(regs, row); break;
        case 1: ldmatrix_x2(regs, row); break;
        case 2: ldmatrix_x4(regs, row); break;
        case 3: ldmatrix_x1_trans(regs, row); break;
        case 4: ldmatrix_x2_trans(regs, row); break;
        default: ldmatrix_x4_trans(regs, row); break;
    }
    for (int m = 0; m < 4; m++) out[4 * lane + m] = regs[m];
}

// One warp: lane l's registers are a[4l..4l+4), b[2l..2l+2), c[4l..4l+4); d goes to d[4l..).
extern "C" __global__ void mma_registers(const unsigned* a, const unsigned* b, const float* c, float* d, int bf16) {
    unsigned l = threadIdx.x;
    unsigned ra[4] = {a[4 * l], a[4 * l + 1], a[4 * l + 2], a[4 * l + 3]};
    unsigned rb[2] = {b[2 * l], b[2 * l + 1]};
    float rc[4] = {c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]};
    float rd[4];
    if (bf16)
        mma_m16n8k16_bf16f32(rd, ra, rb, rc);
    else
        mma_m16n8k16_f16f32(rd, ra, rb, rc);
    for (int i = 0; i < 4; i++) d[4 * l + i] = rd[i];
}

// The usual pipeline: A (16x16 row major) and B (16x8 row major, k x n) copied to shared memory
// with cp.async, fragments loaded with ldmatrix (A: x4; B: x2.trans), one mma accumulating into
// D (16x8 row major), repeated `reps` times over the same tiles.
extern "C" __global__ void mma_tile(const __half* A, const __half* B, float* D, int reps) {
    __shared__ __align__(16) __half sa[16 * 16];
    __shared__ __align__(16) __half sb[16 * 8];
    unsigned l = threadIdx.x;
    // 16x16 halves = 32 chunks of 16 bytes, 16x8 = 16 chunks.
    cp_async_16(sa + 8 * l, A + 8 * l);
    if (l < 16) cp_async_16(sb + 8 * l, B + 8 * l);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    unsigned a[4], b[2];
    // A: matrices (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (8-15, 8-15).
    ldmatrix_x4(a, sa + (l % 16) * 16 + (l / 16) * 8);
    // B: matrices k rows 0-7 and 8-15, transposed so each lane holds a column (n = l / 4).
    ldmatrix_x2_trans(b, sb + (l % 16) * 8);
    float acc[4] = {0, 0, 0, 0};
    for (int r = 0; r < reps; r++) mma_m16n8k16_f16f32(acc, a, b, acc);
    unsigned g = l >> 2, t = l & 3;
    D[g * 8 + 2 * t] = acc[0];
    D[g * 8 + 2 * t + 1] = acc[1];
    D[(g + 8) * 8 + 2 * t] = acc[2];
    D[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// Two cp.async groups per thread (16 bytes each) into dynamic shared memory; out[6 * t + k]:
// k = 0: stage 1 of this thread before any wait (pending in the emulator), 1: stage 0 of this
// thread after wait<1>, 2: stage 0 of the next thread after wait<1> and a barrier, 3: stage 1
// of the next thread after wait<0> and a barrier, 4: stage 2 (committed by wait_all) of the next
// thread, 5: unused.
extern "C" __global__ void cp_async_groups(const float* src, float* out) {
    ATTUNE_DYNAMIC_SHARED(float, smem);
    unsigned t = threadIdx.x, n = blockDim.x, next = (t + 1) % n;
    float* stage0 = smem;
    float* stage1 = smem + 4 * n;
    float* stage2 = smem + 8 * n;
    cp_async_16(stage0 + 4 * t, src + 4 * t);
    cp_async_commit();
    cp_async_16(stage1 + 4 * t, src + 4 * (n + t));
    cp_async_commit();
    cp_async_16(stage2 + 4 * t, src + 4 * (2 * n + t));
    out[6 * t + 0] = stage1[4 * t];
    cp_async_wait<1>();
    out[6 * t + 1] = stage0[4 * t + 1];
    __syncthreads();
    out[6 * t + 2] = stage0[4 * next + 2];
    cp_async_wait<0>();
    __syncthreads();
    out[6 * t + 3] = stage1[4 * next + 3];
    cp_async_wait_all();
    __syncthreads();
    out[6 * t + 4] = stage2[4 * next];
    out[6 * t + 5] = 0.0f;
}
