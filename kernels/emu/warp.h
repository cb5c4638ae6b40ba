// attune CUDA emulator: block barriers, warp shuffles and votes.
//
// Every *_sync function is a warp collective (runtime.h): every live lane of the warp must take
// part, as docs/kernels.md asks of kernels. So the mask must be full (0xffffffff): a partial
// mask would pass here while meaning something else on a GPU, and is reported as a failure. A
// collective that some live lanes never reach is reported as a deadlock.
#pragma once
#include <string.h>

#include "runtime.h"

namespace attune_emu {

// Shuffles: each lane has already resolved its source lane (-1: keep its own value), so the
// completion only copies bits. A source lane that exited supplies the reader's own value.
inline void complete_shfl(Warp& w) {
    for (uint32_t l = 0; l < 32; l++) {
        if (!(w.present >> l & 1)) continue;
        int32_t src = w.lane[l].arg;
        uint64_t v = (src >= 0 && (w.present >> src & 1)) ? w.lane[src].bits : w.lane[l].bits;
        *static_cast<uint64_t*>(w.lane[l].out) = v;
    }
}

inline void complete_ballot(Warp& w) {
    uint32_t bits = 0;
    for (uint32_t l = 0; l < 32; l++)
        if ((w.present >> l & 1) && w.lane[l].bits) bits |= 1u << l;
    for (uint32_t l = 0; l < 32; l++)
        if (w.present >> l & 1) *static_cast<uint32_t*>(w.lane[l].out) = bits;
}

inline void complete_nothing(Warp&) {}

inline uint32_t lane_id() { return cur_fiber()->lane; }

// docs/kernels.md: collectives take full masks. The emulator cannot model a partial mask
// (it would need per-lane participation sets), so it refuses one instead of ignoring it.
inline void require_full_mask(const char* name, unsigned mask) {
    if (mask != 0xffffffffu)
        fail("%s called with mask 0x%08x: Attune kernels must pass the full mask 0xffffffff to warp "
             "collectives (docs/kernels.md)",
             name, mask);
}

// PTX shfl.sync semantics (shfl modes up/down/bfly/idx) with CUDA's width argument: the warp is
// split into segments of `width` lanes; a source outside the allowed range yields the lane's own
// value (up: before the segment start, down/bfly/idx: after the segment end).
enum ShflMode { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };

inline int32_t shfl_source(ShflMode mode, uint32_t lane, int b, int width) {
    uint32_t segmask = (uint32_t)(32 - width) & 31u;
    int min_lane = (int)(lane & segmask);
    int max_lane = (int)((lane & segmask) | (31u & ~segmask));
    int bval = b & 31;
    int j;
    switch (mode) {
        case SHFL_UP:
            j = (int)lane - bval;
            return j >= min_lane ? j : -1;
        case SHFL_DOWN:
            j = (int)lane + bval;
            return j <= max_lane ? j : -1;
        case SHFL_BFLY:
            j = (int)(lane ^ (uint32_t)bval);
            return j <= max_lane ? j : -1;
        default:
            return min_lane | (int)((uint32_t)bval & ~segmask);
    }
}

template <typename T>
inline T shuffle(const char* name, ShflMode mode, T var, int b, int width) {
    static_assert(sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
    Deposit d;
    memset(&d, 0, sizeof d);
    memcpy(&d.bits, &var, sizeof(T));
    uint64_t out = 0;
    d.out = &out;
    d.arg = shfl_source(mode, lane_id(), b, width);
    warp_collective(name, &complete_shfl, d);
    T r;
    memcpy(&r, &out, sizeof(T));
    return r;
}

inline uint32_t ballot(const char* name, int pred) {
    Deposit d;
    memset(&d, 0, sizeof d);
    d.bits = pred != 0;
    uint32_t out = 0;
    d.out = &out;
    warp_collective(name, &complete_ballot, d);
    return out;
}

}  // namespace attune_emu

static inline void __syncthreads() { attune_emu::block_barrier(0); }
static inline int __syncthreads_count(int pred) { return (int)attune_emu::block_barrier(pred != 0); }
static inline int __syncthreads_and(int pred) {
    return attune_emu::block_barrier(pred != 0) == attune_emu::cur_block()->live;
}
static inline int __syncthreads_or(int pred) { return attune_emu::block_barrier(pred != 0) != 0; }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    attune_emu::require_full_mask("__syncwarp", mask);
    attune_emu::Deposit d;
    memset(&d, 0, sizeof d);
    attune_emu::warp_collective("__syncwarp", &attune_emu::complete_nothing, d);
}

template <typename T>
static inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
    attune_emu::require_full_mask("__shfl_sync", mask);
    return attune_emu::shuffle("__shfl_sync", attune_emu::SHFL_IDX, var, src_lane, width);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    attune_emu::require_full_mask("__shfl_up_sync", mask);
    return attune_emu::shuffle("__shfl_up_sync", attune_emu::SHFL_UP, var, (int)delta, width);
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    attune_emu::require_full_mask("__shfl_down_sync", mask);
    return attune_emu::shuffle("__shfl_down_sync", attune_emu::SHFL_DOWN, var, (int)delta, width);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
    attune_emu::require_full_mask("__shfl_xor_sync", mask);
    return attune_emu::shuffle("__shfl_xor_sync", attune_emu::SHFL_BFLY, var, lane_mask, width);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    attune_emu::require_full_mask("__ballot_sync", mask);
    return attune_emu::ballot("__ballot_sync", pred);
}
static inline int __any_sync(unsigned mask, int pred) {
    attune_emu::require_full_mask("__any_sync", mask);
    return attune_emu::ballot("__any_sync", pred) != 0;
}
static inline int __all_sync(unsigned mask, int pred) {
    attune_emu::require_full_mask("__all_sync", mask);
    // Lanes that exited are not asked: all() is over the lanes that take part.
    unsigned live = ~attune_emu::cur_block()->warps[attune_emu::cur_fiber()->warp].exited;
    unsigned votes = attune_emu::ballot("__all_sync", pred);
    unsigned lanes = attune_emu::cur_block()->n - attune_emu::cur_fiber()->warp * 32 >= 32
                         ? 0xffffffffu
                         : (1u << (attune_emu::cur_block()->n - attune_emu::cur_fiber()->warp * 32)) - 1;
    return (votes & live & lanes) == (live & lanes);
}
// Not a collective on the GPU either: the lanes of this warp that have not exited.
static inline unsigned __activemask() {
    unsigned n = attune_emu::cur_block()->n - attune_emu::cur_fiber()->warp * 32;
    unsigned lanes = n >= 32 ? 0xffffffffu : (1u << n) - 1;
    return lanes & ~attune_emu::cur_block()->warps[attune_emu::cur_fiber()->warp].exited;
}
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
