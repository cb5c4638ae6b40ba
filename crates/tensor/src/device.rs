//! Where a tensor lives.

use std::fmt;

/// A compute device: the CPU, a CUDA GPU, or the CUDA emulator (docs/architecture.md), which runs the
/// GPU kernels on the host so every GPU code path can be tested without a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU (gemm + rayon).
    #[default]
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
    /// The CUDA emulator: the same kernels run on the host.
    Emu,
}

impl Device {
    /// Whether this device can run tensor ops in this build.
    pub fn is_available(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Emu => attune_cuda::GpuDevice::emu().is_ok(),
            Device::Cuda(i) => i < attune_cuda::cuda::device_count(),
        }
    }

    /// Whether the device is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The best device present: a GPU when one is usable, else the CPU.
    /// A GPU counts only when the NVRTC toolchain and cuBLAS are found too, so that `auto`
    /// never picks a device whose kernels cannot be compiled or whose matrix multiply would
    /// fail (`cargo xtask cuda-tools --cublas` installs both without a CUDA toolkit).
    pub fn best() -> Device {
        // Each probe is tried only when the ones before it passed: cuBLAS is loaded from the
        // toolchain's folders, and neither matters without a GPU.
        let gpu = Device::cuda_is_available();
        let nvrtc = gpu && attune_cuda::toolchain::find().is_ok();
        let cublas = nvrtc && attune_cuda::toolchain::preload_cublas();
        Device::pick_best(gpu, nvrtc, cublas)
    }

    /// [`Device::best`]'s rule, given what was found.
    pub(crate) fn pick_best(gpu: bool, nvrtc: bool, cublas: bool) -> Device {
        if gpu && nvrtc && cublas { Device::Cuda(0) } else { Device::Cpu }
    }

    /// Whether a CUDA driver and at least one GPU are usable (libcuda is looked up at run time).
    pub fn cuda_is_available() -> bool {
        attune_cuda::cuda_is_available()
    }

    /// Whether the device runs the GPU kernels (a GPU or the emulator).
    pub fn is_gpu(self) -> bool {
        !self.is_cpu()
    }

    pub(crate) fn unavailable(self, op: &'static str) -> crate::Error {
        crate::Error::DeviceNotAvailable {
            op,
            device: self,
            why: match self {
                Device::Cpu => "the CPU backend is always available; this is a bug".into(),
                Device::Cuda(_) => {
                    "no usable CUDA GPU with this ordinal on this machine; use Device::Cpu or Device::Emu".into()
                }
                Device::Emu => {
                    "the CUDA emulator could not start: it needs a host C++ compiler (install g++ or set CXX); use Device::Cpu"
                        .into()
                }
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Emu => f.write_str("emu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "emu" => Ok(Device::Emu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::best()),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(i)) => Ok(Device::Cuda(i)),
                _ => Err(format!("unknown device '{s}'; expected cpu, emu, cuda, cuda:N or auto")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn best_picks_a_gpu_only_when_driver_nvrtc_and_cublas_are_all_there() {
        for bits in 0..8u8 {
            let (gpu, nvrtc, cublas) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let want = if bits == 7 { Device::Cuda(0) } else { Device::Cpu };
            assert_eq!(Device::pick_best(gpu, nvrtc, cublas), want, "gpu {gpu}, nvrtc {nvrtc}, cublas {cublas}");
        }
    }

    #[test]
    fn best_is_the_cpu_on_a_machine_without_a_gpu() {
        if Device::cuda_is_available() {
            eprintln!("skipped: this machine has a GPU");
            return;
        }
        assert_eq!(Device::best(), Device::Cpu);
    }
}
