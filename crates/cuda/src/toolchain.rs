//! Finding NVRTC, the CUDA headers and ptxas. Being written.
