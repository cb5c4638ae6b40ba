// attune CUDA emulator: the block scheduler.
//
// A block's threads are fibers on one OS thread. A fiber runs until it waits (at
// __syncthreads or a warp collective) or exits; then the next ready fiber, in FIFO order,
// resumes. Order is fixed by the program alone, so results never depend on timing.
// Barriers count exited threads as arrived (the hardware's behaviour for early return). A
// warp collective completes when every live lane of the warp has reached it: the last lane to
// arrive computes every lane's result from the values the lanes deposited (pointers into their
// stacks, which stay valid while they wait) and releases them. When no fiber can run while
// some have not exited, the block is deadlocked and the launch fails with a description.
#pragma once
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiber.h"
#include "types.h"

#ifndef ATTUNE_EMU_SANITIZE
#define ATTUNE_EMU_SANITIZE 0
#endif

#if ATTUNE_EMU_SANITIZE
#include <unistd.h>
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old, size_t* size_old);
extern "C" void __asan_set_error_report_callback(void (*callback)(const char*));
extern "C" void __asan_unpoison_memory_region(void const volatile* addr, size_t size);
#endif

namespace attune_emu {

enum FiberState : uint8_t { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct Warp;
// Completes a warp collective: reads every present lane's deposit, writes every lane's result.
typedef void (*CollectiveFn)(Warp& w);

// What a lane hands to a warp collective: inputs and where its results go.
struct Deposit {
    const void* in0;
    const void* in1;
    const void* in2;
    void* out;
    uint64_t bits;  // a value (shuffles: the variable's bits)
    int32_t arg;    // an integer argument (shuffles: the source lane, -1 for "own value")
};

struct Warp {
    uint32_t live;     // lanes not exited
    uint32_t arrived;  // lanes waiting in the current collective
    uint32_t present;  // bit per lane that arrived
    uint32_t exited;   // bit per lane that exited
    CollectiveFn fn;
    const char* name;
    Deposit lane[32];
};

struct Block;

struct Fiber {
    Context ctx;
    Block* block;
    uint3 tid;
    uint32_t index;
    uint32_t warp;
    uint32_t lane;
    uint8_t state;
    const char* waiting_at;
    char* stack_lo;
    size_t stack_size;
    void* cp_async;  // pending async copies (mma.h), null when none
};

struct Block {
    Fiber* fibers;
    uint32_t n;
    uint3 bid, bdim, gdim;
    void* dyn_smem;
    uint32_t live;
    uint32_t bar_arrived;
    uint32_t bar_count;   // __syncthreads_count/and/or accumulator
    uint32_t bar_result;  // its value at the last release
    Warp* warps;
    uint32_t nwarps;
    uint32_t* queue;  // ring of ready fibers
    uint32_t qhead, qlen;
    Context sched;
    void (*thunk)(void**);
    void** params;
    const char* kernel;
    char* err;
    size_t err_cap;
    int failed;
#if ATTUNE_EMU_SANITIZE
    void* sched_fake_stack;
    const void* sched_stack_lo;
    size_t sched_stack_size;
#endif
};

// Finding the running fiber. Thread-locals of a dlopen()ed library cost a __tls_get_addr call
// per access, and kernels read threadIdx all the time, so the fiber is found from the stack
// pointer instead: every stack slot is a power-of-two size, aligned to it, and holds a pointer
// to its fiber in its top 64 bytes (below them the fiber's stack starts). `g_slot_mask` is
// slot size - 1, the same for every block this module runs.
inline uintptr_t g_slot_mask = 0;

inline Fiber* cur_fiber() {
    uintptr_t sp;
#if defined(__x86_64__)
    __asm__("movq %%rsp, %0" : "=r"(sp));
#else
    sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
#endif
    return *reinterpret_cast<Fiber**>((sp | __atomic_load_n(&g_slot_mask, __ATOMIC_RELAXED)) - 63);
}
inline Block* cur_block() { return cur_fiber()->block; }

// The block this OS thread is running, for the sanitizer's report callback only.
inline thread_local Block* t_block = nullptr;

inline void fail(const char* fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
inline void cp_async_retire(Fiber* f);  // mma.h
inline void resume(Fiber* from_fiber, Context* from, Fiber* to);

// Switches from the running fiber to the next ready one, or to the scheduler when none is
// ready. Returns when this fiber is resumed.
inline void yield_current() {
    Fiber* self = cur_fiber();
    Block* b = self->block;
    if (b->qlen > 0) {
        Fiber* next = &b->fibers[b->queue[b->qhead]];
        b->qhead = (b->qhead + 1) % b->n;
        b->qlen--;
        if (next == self) return;
        resume(self, &self->ctx, next);
    } else {
        resume(self, &self->ctx, nullptr);
    }
}

inline void make_ready(Block* b, Fiber* f) {
    f->state = READY;
    f->waiting_at = nullptr;
    b->queue[(b->qhead + b->qlen) % b->n] = f->index;
    b->qlen++;
}

// Switches contexts; `to` null means the scheduler. Tells ASan about the stack change.
inline void resume(Fiber* from_fiber, Context* from, Fiber* to) {
    Block* b = from_fiber->block;
#if ATTUNE_EMU_SANITIZE
    void* fake = nullptr;
    if (to)
        __sanitizer_start_switch_fiber(&fake, to->stack_lo, to->stack_size);
    else
        __sanitizer_start_switch_fiber(&fake, b->sched_stack_lo, b->sched_stack_size);
    switch_context(from, to ? &to->ctx : &b->sched);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    switch_context(from, to ? &to->ctx : &b->sched);
#endif
}

inline void release_block(Block* b) {
    b->bar_arrived = 0;
    b->bar_result = b->bar_count;
    b->bar_count = 0;
    for (uint32_t i = 0; i < b->n; i++)
        if (b->fibers[i].state == WAIT_BLOCK) make_ready(b, &b->fibers[i]);
}

inline void complete_warp(Block* b, Warp& w, uint32_t warp_index) {
    w.fn(w);
    w.arrived = 0;
    w.present = 0;
    w.fn = nullptr;
    Fiber* lanes = &b->fibers[warp_index * 32];
    uint32_t count = b->n - warp_index * 32 < 32 ? b->n - warp_index * 32 : 32;
    for (uint32_t l = 0; l < count; l++)
        if (lanes[l].state == WAIT_WARP) make_ready(b, &lanes[l]);
}

// __syncthreads and its counting variants: `pred` is added to the block's count.
inline uint32_t block_barrier(uint32_t pred) {
    Fiber* f = cur_fiber();
    Block* b = f->block;
    b->bar_count += pred;
    if (++b->bar_arrived == b->live) {
        release_block(b);
        return b->bar_result;
    }
    f->state = WAIT_BLOCK;
    f->waiting_at = "__syncthreads";
    yield_current();
    return b->bar_result;
}

// Enters a warp collective with this lane's deposit. Returns once every live lane of the warp
// has arrived and the collective has written this lane's results.
inline void warp_collective(const char* name, CollectiveFn fn, const Deposit& d) {
    Fiber* f = cur_fiber();
    Block* b = f->block;
    Warp& w = b->warps[f->warp];
    if (w.arrived == 0) {
        w.fn = fn;
        w.name = name;
    } else if (w.fn != fn) {
        fail("warp %u: lane %u reached %s while other lanes wait in %s; every lane of a warp must reach "
             "the same warp collective (full masks, docs/kernels.md)",
             f->warp, f->lane, name, w.name);
    }
    w.lane[f->lane] = d;
    w.present |= 1u << f->lane;
    if (++w.arrived == w.live) {
        complete_warp(b, w, f->warp);
        return;
    }
    f->state = WAIT_WARP;
    f->waiting_at = name;
    yield_current();
}

// A thread returns from the kernel: it counts as arrived at every barrier from now on.
inline void fiber_exit() {
    Fiber* f = cur_fiber();
    Block* b = f->block;
    cp_async_retire(f);
    f->state = DONE;
    b->live--;
    Warp& w = b->warps[f->warp];
    w.live--;
    w.exited |= 1u << f->lane;
    if (w.arrived > 0 && w.arrived == w.live) complete_warp(b, w, f->warp);
    if (b->bar_arrived > 0 && b->bar_arrived == b->live) release_block(b);
    yield_current();
    __builtin_trap();  // a finished fiber is never resumed
}

inline void fiber_main(void* arg) {
    Block* b = static_cast<Fiber*>(arg)->block;
#if ATTUNE_EMU_SANITIZE
    // First run on this stack: the context we came from is the scheduler's only for the
    // first fiber, which is the one that records the scheduler's stack for the way back.
    const void* old_lo = nullptr;
    size_t old_size = 0;
    __sanitizer_finish_switch_fiber(nullptr, &old_lo, &old_size);
    if (!b->sched_stack_lo) {
        b->sched_stack_lo = old_lo;
        b->sched_stack_size = old_size;
    }
#endif
    b->thunk(b->params);
    fiber_exit();
}

// Records the first failure of the block and returns to the scheduler for good.
inline void fail(const char* fmt, ...) {
    Fiber* self = cur_fiber();
    Block* b = self->block;
    if (!b->failed) {
        int len = snprintf(b->err, b->err_cap, "thread (%u,%u,%u): ", self->tid.x, self->tid.y, self->tid.z);
        va_list ap;
        va_start(ap, fmt);
        if (len > 0 && (size_t)len < b->err_cap) vsnprintf(b->err + len, b->err_cap - (size_t)len, fmt, ap);
        va_end(ap);
        b->failed = 1;
    }
    resume(self, &self->ctx, nullptr);
    __builtin_trap();
}

#if ATTUNE_EMU_SANITIZE
// ASan calls this with its report just before it ends the process: name the kernel, the block
// and the thread the error happened in (the fiber running on this OS thread).
inline void asan_report(const char* report) {
    char kind[80] = "error";
    const char* k = strstr(report, "AddressSanitizer: ");
    if (k) {
        k += strlen("AddressSanitizer: ");
        size_t n = 0;
        while (k[n] && k[n] != ' ' && k[n] != '\n' && n + 1 < sizeof kind) n++;
        memcpy(kind, k, n);
        kind[n] = 0;
    }
    char line[512];
    // The fiber only when the stack pointer lies in one of the block's fiber stacks.
    Block* b = t_block;
    Fiber* f = nullptr;
    if (b) {
        uintptr_t sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
        uintptr_t lo = reinterpret_cast<uintptr_t>(b->fibers[0].stack_lo);
        uintptr_t hi = reinterpret_cast<uintptr_t>(b->fibers[b->n - 1].stack_lo) + b->fibers[b->n - 1].stack_size;
        if (sp >= lo && sp < hi) f = cur_fiber();
    }
    int len;
    if (b && f)
        len = snprintf(line, sizeof line,
                       "attune-emu sanitizer: %s in kernel %s, block (%u,%u,%u), thread (%u,%u,%u)\n", kind,
                       b->kernel, b->bid.x, b->bid.y, b->bid.z, f->tid.x, f->tid.y, f->tid.z);
    else if (b)
        len = snprintf(line, sizeof line, "attune-emu sanitizer: %s in kernel %s, block (%u,%u,%u), scheduler\n",
                       kind, b->kernel, b->bid.x, b->bid.y, b->bid.z);
    else
        len = snprintf(line, sizeof line, "attune-emu sanitizer: %s outside any kernel\n", kind);
    if (len > 0) {
        ssize_t w = write(2, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
        (void)w;
    }
}
#endif

// Appends a description of who waits where, for the deadlock message.
inline void describe_deadlock(Block* b) {
    size_t len = (size_t)snprintf(b->err, b->err_cap,
                                  "deadlock: %u of %u threads never finished and none can proceed;", b->live, b->n);
    for (uint32_t wi = 0; wi < b->nwarps && len < b->err_cap; wi++) {
        uint32_t at_block = 0, at_warp = 0;
        Fiber* lanes = &b->fibers[wi * 32];
        uint32_t count = b->n - wi * 32 < 32 ? b->n - wi * 32 : 32;
        for (uint32_t l = 0; l < count; l++) {
            if (lanes[l].state == WAIT_BLOCK) at_block |= 1u << l;
            if (lanes[l].state == WAIT_WARP) at_warp |= 1u << l;
        }
        if (at_warp)
            len += (size_t)snprintf(b->err + len, b->err_cap - len,
                                    " warp %u: lanes 0x%08x wait in %s, lanes 0x%08x wait at __syncthreads, lanes "
                                    "0x%08x exited;",
                                    wi, at_warp, b->warps[wi].name, at_block, b->warps[wi].exited);
    }
    if (len < b->err_cap)
        snprintf(b->err + len, b->err_cap - len,
                 " a warp collective needs every live lane of the warp (full masks), and __syncthreads every "
                 "live thread of the block");
}

}  // namespace attune_emu

// One block launch, filled by the Rust side (crates/cuda/src/emu/run.rs mirrors this layout).
struct AttuneEmuBlockLaunch {
    void (*thunk)(void**);
    void** params;
    const char* kernel;
    uint32_t grid[3];
    uint32_t block[3];
    uint32_t block_idx[3];
    uint32_t dyn_smem_bytes;
    void* dyn_smem;         // null: the runtime allocates it (sanitizer mode)
    char* stacks;           // stack i spans [stacks + i * stack_stride, + stack_size); see cur_fiber()
    size_t stack_stride;
    size_t stack_size;
    char* err;
    size_t err_cap;
};

// Runs one block to completion. Returns 0, or 1 with a message in `err`.
extern "C" __attribute__((visibility("default"), used)) inline int attune_emu_run_block(const AttuneEmuBlockLaunch* L) {
    using namespace attune_emu;
    uint32_t n = L->block[0] * L->block[1] * L->block[2];
    uint32_t nwarps = (n + 31) / 32;
    Fiber* fibers = static_cast<Fiber*>(malloc(sizeof(Fiber) * n));
    Warp* warps = static_cast<Warp*>(calloc(nwarps, sizeof(Warp)));
    uint32_t* queue = static_cast<uint32_t*>(malloc(sizeof(uint32_t) * n));
    Block b;
    memset(&b, 0, sizeof b);
    b.fibers = fibers;
    b.n = n;
    b.bid = make_uint3(L->block_idx[0], L->block_idx[1], L->block_idx[2]);
    b.bdim = make_uint3(L->block[0], L->block[1], L->block[2]);
    b.gdim = make_uint3(L->grid[0], L->grid[1], L->grid[2]);
    void* owned_smem = nullptr;
    if (L->dyn_smem) {
        b.dyn_smem = L->dyn_smem;
    } else {
        owned_smem = malloc(L->dyn_smem_bytes ? L->dyn_smem_bytes : 1);
        memset(owned_smem, 0xff, L->dyn_smem_bytes);
        b.dyn_smem = owned_smem;
    }
    b.live = n;
    b.warps = warps;
    b.nwarps = nwarps;
    b.queue = queue;
    b.thunk = L->thunk;
    b.params = L->params;
    b.kernel = L->kernel;
    b.err = L->err;
    b.err_cap = L->err_cap;
    for (uint32_t w = 0; w < nwarps; w++) warps[w].live = n - w * 32 < 32 ? n - w * 32 : 32;
    // Slots are stack_stride bytes, a power of two, aligned to it (crates/cuda/src/emu/run.rs);
    // the top 64 bytes of each hold the fiber pointer that cur_fiber() reads.
    __atomic_store_n(&g_slot_mask, (uintptr_t)(L->stack_stride - 1), __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < n; i++) {
        Fiber& f = fibers[i];
        memset(&f, 0, sizeof f);
        f.block = &b;
        f.index = i;
        f.tid = make_uint3(i % L->block[0], (i / L->block[0]) % L->block[1], i / (L->block[0] * L->block[1]));
        f.warp = i / 32;
        f.lane = i % 32;
        f.state = READY;
        f.stack_lo = L->stacks + i * L->stack_stride;
        f.stack_size = L->stack_size - 64;
        *reinterpret_cast<Fiber**>(f.stack_lo + f.stack_size) = &f;
        // Stacks sit a whole number of pages apart, so their tops would all fall in the same
        // L1 sets; shifting each by a different number of cache lines keeps them apart.
        make_context(&f.ctx, f.stack_lo, f.stack_size - (i % 64) * 64, &fiber_main, &f);
        queue[i] = i;
    }
    b.qhead = 0;
    b.qlen = n;
#if ATTUNE_EMU_SANITIZE
    // Blocks run one at a time, so the module running now owns the (process-wide) callback.
    __asan_set_error_report_callback(&asan_report);
#endif
    Block* saved_block = t_block;
    t_block = &b;
    // Run: the first ready fiber starts; fibers hand over to each other and come back here
    // only when none is ready (all done, deadlock) or on failure.
    Fiber* first = &fibers[queue[0]];
    b.qhead = 1 % n;
    b.qlen = n - 1;
#if ATTUNE_EMU_SANITIZE
    {
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, first->stack_lo, first->stack_size);
        switch_context(&b.sched, &first->ctx);
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
    }
#else
    switch_context(&b.sched, &first->ctx);
#endif
    int rc = 0;
    if (b.failed) {
        rc = 1;
    } else if (b.live > 0) {
        describe_deadlock(&b);
        rc = 1;
    }
    for (uint32_t i = 0; i < n; i++) cp_async_retire(&fibers[i]);
#if ATTUNE_EMU_SANITIZE
    // Every fiber leaves frames that never return (fiber_exit switches away for good; failed
    // ones are abandoned mid-kernel) with their redzones poisoned on stacks the next block
    // reuses: a larger local there (a by-value parameter struct) would read as a false error.
    for (uint32_t i = 0; i < n; i++) __asan_unpoison_memory_region(fibers[i].stack_lo, fibers[i].stack_size);
#endif
    t_block = saved_block;
    free(owned_smem);
    free(queue);
    free(warps);
    free(fibers);
    return rc;
}
