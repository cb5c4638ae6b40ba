// attune CUDA emulator: calling a kernel from cuLaunchKernel-style parameters.
//
// The Rust side appends a trailer to each kernel file that, per `extern "C" __global__` entry,
// defines a thunk taking `void** params` (params[i] points at argument i's bytes) and lists the
// entries with their argument sizes in a table (ATTUNE_EMU_ENTRY below). Each argument is
// unpacked by template deduction on the kernel's own function type, so POD structs passed by
// value work like scalars, and the argument sizes let the launcher check a plan's arguments.
#pragma once
#include <string.h>

namespace attune_emu {

template <unsigned... I>
struct Seq {};
template <unsigned N, unsigned... I>
struct MakeSeq : MakeSeq<N - 1, N - 1, I...> {};
template <unsigned... I>
struct MakeSeq<0, I...> {
    typedef Seq<I...> type;
};

template <typename T>
inline T load_arg(void* p) {
    static_assert(__is_trivially_copyable(T), "kernel arguments must be trivially copyable (POD) types");
    union U {
        T value;
        unsigned char bytes[sizeof(T)];
        U() {}
    } u;
    memcpy(u.bytes, p, sizeof(T));
    return u.value;
}

template <typename... A, unsigned... I>
inline void invoke(void (*f)(A...), void** params, Seq<I...>) {
    (void)params;
    f(load_arg<A>(params[I])...);
}

template <typename F>
struct Signature;
template <typename... A>
struct Signature<void (*)(A...)> {
    static constexpr unsigned count = sizeof...(A);
    static constexpr unsigned sizes[sizeof...(A) + 1] = {(unsigned)sizeof(A)..., 0u};
    static void call(void (*f)(A...), void** params) { invoke(f, params, typename MakeSeq<sizeof...(A)>::type()); }
};

}  // namespace attune_emu

// One entry of the table the Rust side reads (crates/cuda/src/emu/module.rs mirrors it).
struct AttuneEmuEntry {
    const char* name;
    void (*thunk)(void**);
    unsigned nargs;
    const unsigned* sizes;
};

#define ATTUNE_EMU_THUNK(NAME)                                                        \
    static void attune_emu_thunk_##NAME(void** params) {                             \
        attune_emu::Signature<decltype(&NAME)>::call(&NAME, params);                  \
    }
#define ATTUNE_EMU_ENTRY(NAME)                                                                     \
    {#NAME, &attune_emu_thunk_##NAME, attune_emu::Signature<decltype(&NAME)>::count,              \
     attune_emu::Signature<decltype(&NAME)>::sizes}

extern "C" __attribute__((visibility("default"), used)) inline unsigned attune_emu_abi_version() { return 1; }
extern "C" __attribute__((visibility("default"), used)) inline int attune_emu_sanitized() { return ATTUNE_EMU_SANITIZE; }
