// attune CUDA emulator: __half, __half2, __nv_bfloat16, __nv_bfloat162.
//
// Conversions round to nearest even exactly as the GPU's cvt.rn does (NaN becomes the
// canonical 0x7fff, as CUDA's conversions produce). Arithmetic rounds the exact result once:
// for +, -, *, / and sqrt the float result rounded again to 16 bits equals the correctly
// rounded one because float has at least 2p + 2 bits for both formats (p = 11 and 8); fma
// goes through a round-to-odd float, which is exact to round again with p + 2 bits.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "types.h"

namespace attune_emu {

inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float -> binary16 bits, round to nearest even.
inline uint16_t f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fffu;                  // NaN
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00u);  // >= 65536 (and inf)
    int e = (int)(ax >> 23) - 127;
    if (e >= -14) {  // normal half (rounding may carry into the exponent, up to inf)
        uint32_t r = ax - 0x38000000u;
        uint32_t h = r >> 13, rem = r & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    if (e < -25) return (uint16_t)sign;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;  // value = m * 2^(e - 23); unit 2^-24
    uint32_t s = (uint32_t)(-(e + 1));           // 14..24
    uint32_t h = m >> s, rem = m & ((1u << s) - 1), half = 1u << (s - 1);
    if (rem > half || (rem == half && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

// float -> bfloat16 bits, round to nearest even.
inline uint16_t f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

// The float nearest `d` rounded to odd: truncated toward zero, lowest bit set when inexact.
// Rounding it again to 16 bits gives d correctly rounded (double rounding through round-to-odd
// is exact when the intermediate has at least p + 2 bits).
inline float round_to_odd(double d) {
    float f = (float)d;
    if (isnan(d) || isinf(f) || (double)f == d) return f;
    uint32_t b = f32_bits(f);
    if (fabs((double)f) > fabs(d)) b -= 1;  // rounded away from zero: step back toward it
    return bits_f32(b | 1u);
}

// fma(a, b, c) rounded to odd in float, for 16-bit a, b, c: a * b is exact in float (at most
// 22 significant bits), the sum's error is recovered exactly with TwoSum.
inline float fma_round_to_odd(float a, float b, float c) {
    float p = a * b;
    float s = p + c;
    if (isnan(s) || isinf(s)) return s;
    float bb = s - p;
    float e = (p - (s - bb)) + (c - bb);
    if (e == 0.0f) return s;
    uint32_t bits = f32_bits(s);
    if ((e < 0.0f) != (s < 0.0f) && s != 0.0f) bits -= 1;
    return bits_f32(bits | 1u);
}

}  // namespace attune_emu

struct __half_raw {
    unsigned short x;
};
struct __nv_bfloat16_raw {
    unsigned short x;
};

struct __attribute__((aligned(2))) __half {
    unsigned short __x;
    __half() = default;
    __half(const __half_raw& r) : __x(r.x) {}
    __half(float f) : __x(attune_emu::f32_to_f16(f)) {}
    __half(double d) : __x(attune_emu::f32_to_f16(attune_emu::round_to_odd(d))) {}
    __half(int i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(unsigned int i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(long i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(unsigned long i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(long long i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(unsigned long long i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(short i) : __x(attune_emu::f32_to_f16((float)i)) {}
    __half(unsigned short i) : __x(attune_emu::f32_to_f16((float)i)) {}
    operator float() const { return attune_emu::f16_to_f32(__x); }
    operator __half_raw() const { return __half_raw{__x}; }
    __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
};

struct __attribute__((aligned(2))) __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(attune_emu::f32_to_bf16(f)) {}
    __nv_bfloat16(double d) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd(d))) {}
    __nv_bfloat16(int i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(unsigned int i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(long i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(unsigned long i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(long long i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(unsigned long long i) : __x(attune_emu::f32_to_bf16(attune_emu::round_to_odd((double)i))) {}
    __nv_bfloat16(short i) : __x(attune_emu::f32_to_bf16((float)i)) {}
    __nv_bfloat16(unsigned short i) : __x(attune_emu::f32_to_bf16((float)i)) {}
    operator float() const { return attune_emu::bf16_to_f32(__x); }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) { __x = r.x; return *this; }
};

struct __attribute__((aligned(4))) __half2 {
    __half x, y;
    __half2() = default;
    __half2(const __half& a, const __half& b) : x(a), y(b) {}
};

struct __attribute__((aligned(4))) __nv_bfloat162 {
    __nv_bfloat16 x, y;
    __nv_bfloat162() = default;
    __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
};

typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

// The scalar operations are written once for both 16-bit types.
#define ATTUNE_EMU_HALF_OPS(H, H2, F2H)                                                               \
    static inline H F2H(float f) { return H(f); }                                                           \
    static inline H F2H##_rn(float f) { return H(f); }                                                      \
    static inline H __hadd(H a, H b) { return H((float)a + (float)b); }                                     \
    static inline H __hsub(H a, H b) { return H((float)a - (float)b); }                                     \
    static inline H __hmul(H a, H b) { return H((float)a * (float)b); }                                     \
    static inline H __hdiv(H a, H b) { return H((float)a / (float)b); }                                     \
    static inline H __hfma(H a, H b, H c) { return H(attune_emu::fma_round_to_odd(a, b, c)); }              \
    static inline H __hneg(H a) { H r; r.__x = a.__x ^ 0x8000u; return r; }                                 \
    static inline H __habs(H a) { H r; r.__x = a.__x & 0x7fffu; return r; }                                 \
    static inline bool __hisnan(H a) { return isnan((float)a); }                                            \
    static inline int __hisinf(H a) { float f = a; return isinf(f) ? (f < 0 ? -1 : 1) : 0; }                \
    /* max/min: a NaN input yields the other input, two NaNs the canonical NaN; +0 > -0. */                  \
    static inline H __hmax(H a, H b) {                                                                      \
        float fa = a, fb = b;                                                                               \
        if (isnan(fa) && isnan(fb)) { H r; r.__x = 0x7fffu; return r; }                                     \
        if (isnan(fa)) return b;                                                                            \
        if (isnan(fb)) return a;                                                                            \
        if (fa == fb) return (a.__x & 0x8000u) ? b : a;                                                     \
        return fa > fb ? a : b;                                                                             \
    }                                                                                                       \
    static inline H __hmin(H a, H b) {                                                                      \
        float fa = a, fb = b;                                                                               \
        if (isnan(fa) && isnan(fb)) { H r; r.__x = 0x7fffu; return r; }                                     \
        if (isnan(fa)) return b;                                                                            \
        if (isnan(fb)) return a;                                                                            \
        if (fa == fb) return (a.__x & 0x8000u) ? a : b;                                                     \
        return fa < fb ? a : b;                                                                             \
    }                                                                                                       \
    static inline bool __heq(H a, H b) { return (float)a == (float)b; }                                     \
    static inline bool __hne(H a, H b) { return (float)a < (float)b || (float)a > (float)b; }               \
    static inline bool __hlt(H a, H b) { return (float)a < (float)b; }                                      \
    static inline bool __hle(H a, H b) { return (float)a <= (float)b; }                                     \
    static inline bool __hgt(H a, H b) { return (float)a > (float)b; }                                      \
    static inline bool __hge(H a, H b) { return (float)a >= (float)b; }                                     \
    static inline H operator+(const H& a, const H& b) { return __hadd(a, b); }                              \
    static inline H operator-(const H& a, const H& b) { return __hsub(a, b); }                              \
    static inline H operator*(const H& a, const H& b) { return __hmul(a, b); }                              \
    static inline H operator/(const H& a, const H& b) { return __hdiv(a, b); }                              \
    static inline H& operator+=(H& a, const H& b) { return a = __hadd(a, b); }                              \
    static inline H& operator-=(H& a, const H& b) { return a = __hsub(a, b); }                              \
    static inline H& operator*=(H& a, const H& b) { return a = __hmul(a, b); }                              \
    static inline H& operator/=(H& a, const H& b) { return a = __hdiv(a, b); }                              \
    static inline H operator-(const H& a) { return __hneg(a); }                                             \
    static inline H operator+(const H& a) { return a; }                                                     \
    static inline bool operator==(const H& a, const H& b) { return (float)a == (float)b; }                  \
    static inline bool operator!=(const H& a, const H& b) { return (float)a != (float)b; }                  \
    static inline bool operator<(const H& a, const H& b) { return (float)a < (float)b; }                    \
    static inline bool operator<=(const H& a, const H& b) { return (float)a <= (float)b; }                  \
    static inline bool operator>(const H& a, const H& b) { return (float)a > (float)b; }                    \
    static inline bool operator>=(const H& a, const H& b) { return (float)a >= (float)b; }                  \
    static inline float __low2float(H2 v) { return (float)v.x; }                                            \
    static inline float __high2float(H2 v) { return (float)v.y; }                                           \
    static inline H2 operator+(const H2& a, const H2& b) { return H2(a.x + b.x, a.y + b.y); }               \
    static inline H2 operator-(const H2& a, const H2& b) { return H2(a.x - b.x, a.y - b.y); }               \
    static inline H2 operator*(const H2& a, const H2& b) { return H2(a.x * b.x, a.y * b.y); }               \
    static inline H2 operator/(const H2& a, const H2& b) { return H2(a.x / b.x, a.y / b.y); }               \
    static inline H2& operator+=(H2& a, const H2& b) { return a = a + b; }                                  \
    static inline H2& operator-=(H2& a, const H2& b) { return a = a - b; }                                  \
    static inline H2& operator*=(H2& a, const H2& b) { return a = a * b; }                                  \
    static inline H2 __hadd2(H2 a, H2 b) { return a + b; }                                                  \
    static inline H2 __hsub2(H2 a, H2 b) { return a - b; }                                                  \
    static inline H2 __hmul2(H2 a, H2 b) { return a * b; }                                                  \
    static inline H2 __h2div(H2 a, H2 b) { return a / b; }                                                  \
    static inline H2 __hfma2(H2 a, H2 b, H2 c) { return H2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)); } \
    static inline H2 __hmax2(H2 a, H2 b) { return H2(__hmax(a.x, b.x), __hmax(a.y, b.y)); }                 \
    static inline H2 __hmin2(H2 a, H2 b) { return H2(__hmin(a.x, b.x), __hmin(a.y, b.y)); }                 \
    static inline H2 __hneg2(H2 a) { return H2(__hneg(a.x), __hneg(a.y)); }                                 \
    static inline H2 __habs2(H2 a) { return H2(__habs(a.x), __habs(a.y)); }

ATTUNE_EMU_HALF_OPS(__half, __half2, __float2half)
ATTUNE_EMU_HALF_OPS(__nv_bfloat16, __nv_bfloat162, __float2bfloat16)
#undef ATTUNE_EMU_HALF_OPS

static inline float __half2float(__half h) { return (float)h; }
static inline float __bfloat162float(__nv_bfloat16 h) { return (float)h; }
static inline __half __double2half(double d) { return __half(d); }
static inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }
static inline __half __int2half_rn(int i) { return __half(i); }
static inline __half2 __floats2half2_rn(float a, float b) { return __half2(__half(a), __half(b)); }
static inline __half2 __float2half2_rn(float a) { return __half2(__half(a), __half(a)); }
static inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
static inline __half2 __half2half2(__half a) { return __half2(a, a); }
static inline __half2 make_half2(__half a, __half b) { return __half2(a, b); }
static inline __half __low2half(__half2 v) { return v.x; }
static inline __half __high2half(__half2 v) { return v.y; }
static inline float2 __half22float2(__half2 v) { return make_float2((float)v.x, (float)v.y); }
static inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162(__nv_bfloat16(a), __nv_bfloat16(b));
}
static inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __floats2bfloat162_rn(a, a); }
static inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162(a, a); }
static inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return __nv_bfloat162(a, b); }
static inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
static inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
static inline float2 __bfloat1622float2(__nv_bfloat162 v) { return make_float2((float)v.x, (float)v.y); }
static inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
static inline unsigned short __half_as_ushort(__half h) { return h.__x; }
static inline short __half_as_short(__half h) { return (short)h.__x; }
static inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
static inline __half __short_as_half(short u) { __half h; h.__x = (unsigned short)u; return h; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 h; h.__x = u; return h; }
static inline __nv_bfloat16 __short_as_bfloat16(short u) { __nv_bfloat16 h; h.__x = (unsigned short)u; return h; }
static inline __half hsqrt(__half a) { return __half(sqrtf((float)a)); }
static inline __nv_bfloat16 hsqrt(__nv_bfloat16 a) { return __nv_bfloat16(sqrtf((float)a)); }
