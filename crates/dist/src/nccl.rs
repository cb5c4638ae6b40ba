//! The NCCL backend: all-reduce and broadcast of GPU buffers, one process per GPU.
//!
//! cudarc opens `libnccl.so` with dlopen on first use, so nothing here needs CUDA to build and a
//! run without `--distributed` never loads it. PyPI's `nvidia-nccl-cu12` wheel ships
//! `libnccl.so.2`; `cargo xtask cuda-tools --nccl` installs it and adds the `libnccl.so` link
//! cudarc looks for (docs/distributed.md). The communicator's unique id travels over the
//! host collective (MPI), as NCCL's own examples do.

use cudarc::nccl::{result, sys};

use crate::{Collective, DistError};

/// Where the fix for a missing library is written.
const FETCH: &str = "run `cargo xtask cuda-tools --nccl` and put target/cuda-tools/nccl/lib on LD_LIBRARY_PATH \
                     (or install NCCL and make libnccl.so findable); docs/distributed.md";

/// Whether `libnccl.so` can be opened.
pub fn is_available() -> bool {
    // SAFETY: only tries to dlopen the candidate names.
    unsafe { sys::is_culib_present() }
}

/// Checks that NCCL can be loaded, with the fix in the error when it cannot.
pub fn require() -> Result<(), DistError> {
    if is_available() {
        Ok(())
    } else {
        Err(DistError::Nccl(format!("libnccl.so is not on the loader's path: {FETCH}")))
    }
}

/// A NCCL communicator over every rank of a host collective, on one CUDA stream.
pub struct NcclCollective {
    comm: sys::ncclComm_t,
    stream: sys::cudaStream_t,
    rank: usize,
    world: usize,
}

fn nccl_err(op: &str, e: result::NcclError) -> DistError {
    DistError::Nccl(format!("{op} failed: {e:?}"))
}

impl NcclCollective {
    /// Joins every rank of `host` into one communicator whose calls run on `stream` (a
    /// `CUstream` of the GPU this rank owns, made current by the caller). Rank 0 makes the
    /// unique id; `host` broadcasts it.
    ///
    /// # Safety
    /// `stream` must be a live CUDA stream of the current context, outliving the communicator.
    pub unsafe fn init(host: &dyn Collective, stream: *mut std::ffi::c_void) -> Result<NcclCollective, DistError> {
        require()?;
        let mut bytes = if host.rank() == 0 {
            let id = result::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        host.broadcast_bytes(&mut bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if bytes.len() != internal.len() {
            return Err(DistError::Length {
                op: "NCCL unique id broadcast",
                expected: internal.len(),
                got: bytes.len(),
            });
        }
        for (d, &b) in internal.iter_mut().zip(&bytes) {
            *d = b as std::ffi::c_char;
        }
        let mut comm = std::mem::MaybeUninit::uninit();
        let (world, rank) = (host.world_size(), host.rank());
        // SAFETY: every rank calls this with the same id and world; `comm` is written on success.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), world as i32, sys::ncclUniqueId { internal }, rank as i32)
                .map_err(|e| nccl_err("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(NcclCollective { comm, stream: stream as sys::cudaStream_t, rank, world })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the communicator.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Sums `count` f32 at device address `ptr` over the ranks, in place, queued on the stream.
    ///
    /// # Safety
    /// `ptr` must address `count` f32 of device memory on this rank's GPU, not used by other
    /// work until the stream has run the reduction.
    pub unsafe fn all_reduce_sum_f32(&self, ptr: u64, count: usize) -> Result<(), DistError> {
        let p = ptr as *mut std::ffi::c_void;
        // SAFETY: as the caller promises; NCCL reads and writes the same buffer.
        unsafe {
            result::all_reduce(
                p,
                p,
                count,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.stream,
            )
            .map_err(|e| nccl_err("ncclAllReduce", e))?;
        }
        Ok(())
    }

    /// Overwrites `count` f32 at `ptr` on every rank with `root`'s, queued on the stream.
    ///
    /// # Safety
    /// As for [`NcclCollective::all_reduce_sum_f32`].
    pub unsafe fn broadcast_f32(&self, ptr: u64, count: usize, root: usize) -> Result<(), DistError> {
        if root >= self.world {
            return Err(DistError::Root { op: "NCCL broadcast", root, world: self.world });
        }
        let p = ptr as *mut std::ffi::c_void;
        // SAFETY: as the caller promises.
        unsafe {
            result::broadcast(p, p, count, sys::ncclDataType_t::ncclFloat32, root as i32, self.comm, self.stream)
                .map_err(|e| nccl_err("ncclBroadcast", e))?;
        }
        Ok(())
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: the communicator was made by comm_init_rank and is dropped once.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_library_is_an_error_naming_the_install_step() {
        // On a machine with NCCL installed the check passes; the message is what CI sees.
        match super::require() {
            Ok(()) => assert!(super::is_available()),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("cargo xtask cuda-tools --nccl") && e.contains("libnccl.so"), "{e}");
            }
        }
    }
}
