// attune CUDA emulator: fiber context switching.
//
// One OS thread runs all threads of one block as cooperative fibers. A switch saves the
// callee-saved registers on the current stack, stores the stack pointer and loads another one.
// glibc's swapcontext also saves the signal mask with a system call per switch, which would
// dominate barrier-heavy kernels, so x86-64 gets a hand-written switch; other targets fall back
// to ucontext.
#pragma once
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && !defined(ATTUNE_EMU_UCONTEXT)
#define ATTUNE_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace attune_emu {

typedef void (*FiberMain)(void*);

#if ATTUNE_EMU_ASM_SWITCH

// A suspended context is just its stack pointer: the registers live on its stack.
struct Context {
    void* sp;
};

// attune_emu_switch(save, next): pushes rbp, rbx, r12-r15, stores rsp in *save, loads
// `next` into rsp, pops the same registers and returns into the other context. The System V
// ABI makes every other register caller-saved, so the compiler has already spilled them.
extern "C" __attribute__((naked, noinline, visibility("hidden"))) inline void attune_emu_switch(void** save, void* next) {
    __asm__(
        "pushq %rbp\n\t"
        "pushq %rbx\n\t"
        "pushq %r12\n\t"
        "pushq %r13\n\t"
        "pushq %r14\n\t"
        "pushq %r15\n\t"
        "movq %rsp, (%rdi)\n\t"
        "movq %rsi, %rsp\n\t"
        "popq %r15\n\t"
        "popq %r14\n\t"
        "popq %r13\n\t"
        "popq %r12\n\t"
        "popq %rbx\n\t"
        "popq %rbp\n\t"
        "ret\n\t");
}

// First entry of a fresh fiber: the switch "returns" here with rbx = argument and r12 = entry
// function (both placed on the new stack by make_context). The entry never returns.
extern "C" __attribute__((naked, noinline, visibility("hidden"))) inline void attune_emu_fiber_start() {
    __asm__(
        "movq %rbx, %rdi\n\t"
        "callq *%r12\n\t"
        "ud2\n\t");
}

// Prepares `ctx` to run fn(arg) on the stack [lo, hi).
inline void make_context(Context* ctx, char* lo, size_t size, FiberMain fn, void* arg) {
    // After the 6 pops and the ret, rsp = top, which must be 16-byte aligned so that the
    // `call` in attune_emu_fiber_start leaves rsp = 8 (mod 16) at fn's entry, as the ABI wants.
    uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size - 64) & ~static_cast<uintptr_t>(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = reinterpret_cast<uint64_t>(&attune_emu_fiber_start);  // ret target
    *--sp = 0;                                                      // rbp
    *--sp = reinterpret_cast<uint64_t>(arg);                        // rbx
    *--sp = reinterpret_cast<uint64_t>(fn);                         // r12
    *--sp = 0;                                                      // r13
    *--sp = 0;                                                      // r14
    *--sp = 0;                                                      // r15
    ctx->sp = sp;
}

// Saves the running context into `from` and resumes `to`.
inline void switch_context(Context* from, Context* to) {
    __asm__ __volatile__("" ::: "memory");
    attune_emu_switch(&from->sp, to->sp);
    __asm__ __volatile__("" ::: "memory");
}

#else  // ucontext fallback

struct Context {
    ucontext_t uc;
};

inline void ucontext_entry(unsigned hi_fn, unsigned lo_fn, unsigned hi_arg, unsigned lo_arg) {
    FiberMain fn = reinterpret_cast<FiberMain>((static_cast<uintptr_t>(hi_fn) << 32) | lo_fn);
    void* arg = reinterpret_cast<void*>((static_cast<uintptr_t>(hi_arg) << 32) | lo_arg);
    fn(arg);
    __builtin_trap();
}

inline void make_context(Context* ctx, char* lo, size_t size, FiberMain fn, void* arg) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = nullptr;
    uint64_t f = reinterpret_cast<uintptr_t>(fn), a = reinterpret_cast<uintptr_t>(arg);
    makecontext(&ctx->uc, reinterpret_cast<void (*)()>(&ucontext_entry), 4, unsigned(f >> 32), unsigned(f),
                unsigned(a >> 32), unsigned(a));
}

inline void switch_context(Context* from, Context* to) {
    __asm__ __volatile__("" ::: "memory");
    swapcontext(&from->uc, &to->uc);
    __asm__ __volatile__("" ::: "memory");
}

#endif

}  // namespace attune_emu
