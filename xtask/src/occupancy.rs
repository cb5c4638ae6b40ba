//! Theoretical occupancy (active warps per SM over the maximum) from a kernel's registers,
//! shared memory and block size, by the rules of NVIDIA's occupancy calculator
//! (cuda_occupancy.h, the CUDA C Programming Guide's compute-capability tables):
//!
//! - registers go to warps in units of 256 (`ceil(regs * 32 / 256) * 256` per warp), and an
//!   SM's register file is split among 4 sub-partitions (schedulers), each holding whole warps:
//!   warps per SM = 4 * floor((65536 / 4) / regs_per_warp). A block whose registers (its warp
//!   count rounded up to a multiple of 4) exceed 64K, or a kernel over 255 registers per
//!   thread, cannot launch;
//! - at most 64 warps (2048 threads) and 32 blocks per SM;
//! - shared memory per block is static + dynamic + 1 KiB the system reserves per block,
//!   rounded up to 128 bytes, against 164 KiB per SM on sm_80 (at most 163 KiB per block)
//!   and 228 KiB on sm_90 (227 KiB per block), the largest shared-memory carveouts.

/// Per-SM limits of one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchLimits {
    /// `sm_XX` number.
    pub sm: u32,
    /// 32-bit registers per SM.
    pub regs_per_sm: u32,
    /// Register-file sub-partitions (warp schedulers) per SM.
    pub sub_partitions: u32,
    /// Registers are allocated to a warp in multiples of this.
    pub reg_alloc_unit: u32,
    /// Most registers a thread may use.
    pub max_regs_per_thread: u32,
    /// Most registers one block may use.
    pub max_regs_per_block: u32,
    /// Resident threads per SM.
    pub max_threads_per_sm: u32,
    /// Resident blocks per SM.
    pub max_blocks_per_sm: u32,
    /// Threads per block.
    pub max_threads_per_block: u32,
    /// Shared memory per SM at the largest carveout, bytes.
    pub smem_per_sm: u32,
    /// Shared memory one block may use (opt-in maximum), bytes.
    pub max_smem_per_block: u32,
    /// Shared memory the system reserves per block, bytes.
    pub reserved_smem_per_block: u32,
    /// Shared memory is allocated in multiples of this, bytes.
    pub smem_alloc_unit: u32,
}

const COMMON: ArchLimits = ArchLimits {
    sm: 0,
    regs_per_sm: 65_536,
    sub_partitions: 4,
    reg_alloc_unit: 256,
    max_regs_per_thread: 255,
    max_regs_per_block: 65_536,
    max_threads_per_sm: 2048,
    max_blocks_per_sm: 32,
    max_threads_per_block: 1024,
    smem_per_sm: 0,
    max_smem_per_block: 0,
    reserved_smem_per_block: 1024,
    smem_alloc_unit: 128,
};

impl ArchLimits {
    /// The limits of `sm_80` or `sm_90` (the architectures the kernels target).
    pub fn of(sm: u32) -> Option<ArchLimits> {
        match sm {
            80 => Some(ArchLimits { sm, smem_per_sm: 164 * 1024, max_smem_per_block: 163 * 1024, ..COMMON }),
            90 => Some(ArchLimits { sm, smem_per_sm: 228 * 1024, max_smem_per_block: 227 * 1024, ..COMMON }),
            _ => None,
        }
    }
}

/// What limits the resident blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limiter {
    /// Registers.
    Registers,
    /// Warps (threads) per SM.
    Warps,
    /// Blocks per SM.
    Blocks,
    /// Shared memory.
    SharedMemory,
}

/// Theoretical occupancy of one launch configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occupancy {
    /// Resident blocks per SM (0: the block cannot launch).
    pub blocks_per_sm: u32,
    /// Resident warps per SM.
    pub active_warps: u32,
    /// `active_warps / max warps per SM`, in [0, 1].
    pub fraction: f64,
    /// The binding limit.
    pub limiter: Limiter,
}

fn round_up(x: u64, unit: u64) -> u64 {
    x.div_ceil(unit) * unit
}

/// Occupancy of a block of `threads` threads using `regs` registers per thread and
/// `smem` bytes of shared memory (static + dynamic).
pub fn occupancy(limits: &ArchLimits, regs: u32, smem: u32, threads: u32) -> Occupancy {
    let l = limits;
    let max_warps = l.max_threads_per_sm / 32;
    let none = |limiter| Occupancy { blocks_per_sm: 0, active_warps: 0, fraction: 0.0, limiter };
    if threads == 0 || threads > l.max_threads_per_block {
        return none(Limiter::Warps);
    }
    let warps = threads.div_ceil(32) as u64;

    let by_regs = if regs == 0 {
        u64::MAX
    } else {
        let per_warp = round_up(regs as u64 * 32, l.reg_alloc_unit as u64);
        // The launch check assumes a block's warps spread over every sub-partition.
        let assumed = per_warp * round_up(warps, l.sub_partitions as u64);
        if regs > l.max_regs_per_thread
            || assumed > l.max_regs_per_block as u64
            || per_warp * warps > l.max_regs_per_block as u64
        {
            0
        } else {
            let warps_per_sub = (l.regs_per_sm / l.sub_partitions) as u64 / per_warp;
            warps_per_sub * l.sub_partitions as u64 / warps
        }
    };
    let by_warps = max_warps as u64 / warps;
    let by_blocks = l.max_blocks_per_sm as u64;
    let by_smem = if smem > l.max_smem_per_block {
        0
    } else {
        let per_block = round_up(smem as u64 + l.reserved_smem_per_block as u64, l.smem_alloc_unit as u64);
        l.smem_per_sm as u64 / per_block
    };
    // Ties name the first of warps, blocks, registers, shared memory (the hardware limits first).
    let (blocks, limiter) = [
        (by_warps, Limiter::Warps),
        (by_blocks, Limiter::Blocks),
        (by_regs, Limiter::Registers),
        (by_smem, Limiter::SharedMemory),
    ]
    .into_iter()
    .fold((u64::MAX, Limiter::Warps), |best, cur| if cur.0 < best.0 { cur } else { best });
    let active = (blocks * warps) as u32;
    Occupancy {
        blocks_per_sm: blocks as u32,
        active_warps: active,
        fraction: active as f64 / max_warps as f64,
        limiter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm80() -> ArchLimits {
        ArchLimits::of(80).unwrap()
    }

    fn sm90() -> ArchLimits {
        ArchLimits::of(90).unwrap()
    }

    #[test]
    fn full_occupancy_when_nothing_binds_below_the_warp_limit() {
        // 256 threads = 8 warps, 32 regs: 32 * 32 = 1024 regs per warp (a multiple of 256);
        // 16384 / 1024 = 16 warps per sub-partition, 64 per SM, 64 / 8 = 8 blocks. Warps:
        // 64 / 8 = 8 blocks. Shared: 0 + 1024 reserved -> 167936 / 1024 = 164 blocks.
        // min = 8 blocks = 64 warps = 100%.
        let o = occupancy(&sm80(), 32, 0, 256);
        assert_eq!((o.blocks_per_sm, o.active_warps), (8, 64));
        assert_eq!(o.fraction, 1.0);
        assert_eq!(o.limiter, Limiter::Warps);
    }

    #[test]
    fn registers_halve_occupancy_at_64_per_thread() {
        // 128 threads = 4 warps, 64 regs: 2048 regs per warp; 16384 / 2048 = 8 warps per
        // sub-partition = 32 per SM; 32 / 4 = 8 blocks (warps alone would allow 16).
        // 8 * 4 = 32 warps of 64 = 50%.
        let o = occupancy(&sm80(), 64, 0, 128);
        assert_eq!((o.blocks_per_sm, o.active_warps, o.limiter), (8, 32, Limiter::Registers));
        assert_eq!(o.fraction, 0.5);
    }

    #[test]
    fn the_256_register_allocation_unit_matters() {
        // 33 regs: 33 * 32 = 1056 -> rounded up to 1280 per warp. 16384 / 1280 = 12 warps per
        // sub-partition = 48 per SM; 256 threads = 8 warps -> 6 blocks = 48 warps = 75%.
        // (Without the rounding, 65536 / (1056 * 8) = 7 blocks = 87.5%.)
        let o = occupancy(&sm90(), 33, 0, 256);
        assert_eq!((o.blocks_per_sm, o.active_warps, o.limiter), (6, 48, Limiter::Registers));
        assert_eq!(o.fraction, 0.75);
    }

    #[test]
    fn shared_memory_binds_differently_on_sm80_and_sm90() {
        // 48 KiB static + 1 KiB reserved = 50176 B (a multiple of 128). sm_80: 167936 / 50176
        // = 3 blocks = 24 warps = 37.5%. sm_90: 233472 / 50176 = 4 blocks = 32 warps = 50%.
        let a = occupancy(&sm80(), 32, 48 * 1024, 256);
        assert_eq!((a.blocks_per_sm, a.active_warps, a.limiter), (3, 24, Limiter::SharedMemory));
        assert_eq!(a.fraction, 0.375);
        let b = occupancy(&sm90(), 32, 48 * 1024, 256);
        assert_eq!((b.blocks_per_sm, b.active_warps), (4, 32));
        assert_eq!(b.fraction, 0.5);
        // Shared memory rounds up to 128 B: 100 B + 1024 -> 1152; 167936 / 1152 = 145, so the
        // 32-block limit binds for small blocks: 32 threads (1 warp) x 32 blocks = 32 warps.
        let c = occupancy(&sm80(), 16, 100, 32);
        assert_eq!((c.blocks_per_sm, c.active_warps, c.limiter), (32, 32, Limiter::Blocks));
        // More than the per-block maximum (163 KiB on sm_80) cannot launch; sm_90 allows it.
        assert_eq!(occupancy(&sm80(), 32, 164 * 1024, 128).blocks_per_sm, 0);
        assert_eq!(occupancy(&sm90(), 32, 164 * 1024, 128).blocks_per_sm, 1);
    }

    #[test]
    fn blocks_that_cannot_launch_have_zero_occupancy() {
        // 1024 threads at 255 regs: 255 * 32 = 8160 -> 8192 per warp, x 32 warps = 262144 > 64K.
        let o = occupancy(&sm80(), 255, 0, 1024);
        assert_eq!((o.blocks_per_sm, o.fraction), (0, 0.0));
        // 64 regs x 1024 threads = exactly 64K: one block, 32 warps = 50%.
        let p = occupancy(&sm80(), 64, 0, 1024);
        assert_eq!((p.blocks_per_sm, p.active_warps), (1, 32));
        // Over 255 registers per thread is not a real kernel.
        assert_eq!(occupancy(&sm80(), 256, 0, 32).blocks_per_sm, 0);
    }

    #[test]
    fn sub_partition_rounding_of_the_launch_check() {
        // 160 threads = 5 warps at 96 regs: 3072 regs per warp. The launch check rounds the 5
        // warps up to 8 (a multiple of 4 sub-partitions): 8 * 3072 = 24576 <= 64K, so it
        // launches; 16384 / 3072 = 5 warps per sub-partition = 20 per SM -> 4 blocks = 20
        // warps = 31.25%.
        let o = occupancy(&sm80(), 96, 0, 160);
        assert_eq!((o.blocks_per_sm, o.active_warps), (4, 20));
        assert_eq!(o.fraction, 20.0 / 64.0);
        // 672 threads = 21 warps at 96 regs: 21 * 3072 = 64512 fits, but rounded to 24 warps
        // it is 73728 > 64K, so the hardware refuses the block.
        assert_eq!(occupancy(&sm80(), 96, 0, 672).blocks_per_sm, 0);
    }
}
