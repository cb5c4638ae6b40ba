// Header of kernels/test/nvrtc_smoke.cu (handed to NVRTC as a named header).
#pragma once
inline float smoke_fma(float a, float x, float y) { return a * x + y; }
