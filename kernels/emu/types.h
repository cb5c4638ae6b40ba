// attune CUDA emulator: CUDA's built-in vector types and their make_ functions.
#pragma once
#include <stdint.h>

#define ATTUNE_EMU_VEC2(T, N, A) \
    struct __attribute__((aligned(A))) N##2 { T x, y; }; \
    static inline N##2 make_##N##2(T x, T y) { N##2 v; v.x = x; v.y = y; return v; }
#define ATTUNE_EMU_VEC3(T, N) \
    struct N##3 { T x, y, z; }; \
    static inline N##3 make_##N##3(T x, T y, T z) { N##3 v; v.x = x; v.y = y; v.z = z; return v; }
#define ATTUNE_EMU_VEC4(T, N, A) \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; }; \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 v; v.x = x; v.y = y; v.z = z; v.w = w; return v; }

ATTUNE_EMU_VEC2(float, float, 8)
ATTUNE_EMU_VEC3(float, float)
ATTUNE_EMU_VEC4(float, float, 16)
ATTUNE_EMU_VEC2(double, double, 16)
ATTUNE_EMU_VEC3(double, double)
ATTUNE_EMU_VEC4(double, double, 16)
ATTUNE_EMU_VEC2(int, int, 8)
ATTUNE_EMU_VEC3(int, int)
ATTUNE_EMU_VEC4(int, int, 16)
ATTUNE_EMU_VEC2(unsigned int, uint, 8)
ATTUNE_EMU_VEC3(unsigned int, uint)
ATTUNE_EMU_VEC4(unsigned int, uint, 16)
ATTUNE_EMU_VEC2(short, short, 4)
ATTUNE_EMU_VEC4(short, short, 8)
ATTUNE_EMU_VEC2(unsigned short, ushort, 4)
ATTUNE_EMU_VEC4(unsigned short, ushort, 8)
ATTUNE_EMU_VEC2(signed char, char, 2)
ATTUNE_EMU_VEC4(signed char, char, 4)
ATTUNE_EMU_VEC2(unsigned char, uchar, 2)
ATTUNE_EMU_VEC4(unsigned char, uchar, 4)
ATTUNE_EMU_VEC2(long long, longlong, 16)
ATTUNE_EMU_VEC2(unsigned long long, ulonglong, 16)

#undef ATTUNE_EMU_VEC2
#undef ATTUNE_EMU_VEC3
#undef ATTUNE_EMU_VEC4

// dim3: uint3 with CUDA's defaulted constructor (missing extents are 1).
struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    operator uint3() const { return make_uint3(x, y, z); }
};
