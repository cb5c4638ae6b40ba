//! Where a tensor lives.

use std::fmt;

/// A compute device. Only `Cpu` runs ops today; `Cuda` and `Emu` (the CUDA emulator,
/// GUIDE.md §1) exist in the API so that backends can be added without changing it.
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
        matches!(self, Device::Cpu)
    }

    /// Whether the device is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The best device present: a GPU when one is usable, else the CPU.
    pub fn best() -> Device {
        Device::Cpu
    }

    /// Whether a CUDA driver and GPU are usable. Always false until attune-cuda lands.
    pub fn cuda_is_available() -> bool {
        false
    }

    pub(crate) fn unavailable(self, op: &'static str) -> crate::Error {
        crate::Error::DeviceNotAvailable {
            op,
            device: self,
            why: match self {
                Device::Cpu => "the CPU backend is always available; this is a bug".into(),
                Device::Cuda(_) => "the CUDA backend is not built yet (attune-cuda); use Device::Cpu".into(),
                Device::Emu => "the CUDA emulator backend is not built yet (attune-cuda); use Device::Cpu".into(),
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
