//! Collectives for data-parallel training (docs/distributed.md).
//!
//! One [`Collective`] trait with two real backends:
//! - [`mpi_backend`] (feature `mpi`): rsmpi on the system's MPI (OpenMPI), for processes on one
//!   host or many; host buffers (the CPU path, and the emulator's buffers staged through the host);
//! - [`nccl`]: NCCL through cudarc, loaded at run time, one process per GPU, its unique id
//!   broadcast over MPI; device buffers.
//!
//! Around them: [`launcher`] (is this process a rank of an MPI launch?), [`bucket`] (gradients
//! all-reduced in buckets of a bounded size) and [`watchdog`] (a collective that never returns
//! ends the job with a message instead of a hang). Nothing here is touched by a run without
//! `--distributed`.

pub mod bucket;
pub mod launcher;
#[cfg(feature = "mpi")]
pub mod mpi_backend;
pub mod nccl;
pub mod watchdog;

/// What went wrong in a collective or in setting one up; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// `--distributed` in a process no MPI launcher started.
    #[error(
        "--distributed needs an MPI launcher: none of {vars} is set, so this process is not a rank of an MPI job. \
         Start it as `mpirun -np N attune train --distributed ...` (docs/distributed.md), or drop --distributed"
    )]
    NoLauncher {
        /// The environment variables looked at.
        vars: String,
    },
    /// The binary was built without the `mpi` feature.
    #[error(
        "this attune was built without MPI support. Rebuild with `cargo build --release -p attune-lab --features mpi` \
         (needs Debian's libopenmpi-dev, openmpi-bin and libclang-dev; docs/distributed.md)"
    )]
    NoMpiSupport,
    /// MPI was initialised twice in one process.
    #[error("MPI is already initialised in this process; one collective per process")]
    AlreadyInitialised,
    /// Buffers of different lengths in one call.
    #[error("{op}: buffer of {got} elements where {expected} were expected (every rank must pass the same length)")]
    Length {
        /// The collective.
        op: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A rank number outside the world.
    #[error("{op}: root rank {root} is outside a world of {world} ranks")]
    Root {
        /// The collective.
        op: &'static str,
        /// The root asked for.
        root: usize,
        /// Ranks in the world.
        world: usize,
    },
    /// NCCL could not be loaded or used.
    #[error("NCCL: {0}")]
    Nccl(String),
}

/// A group of ranks that reduce and broadcast together. Every rank must make the same calls in
/// the same order with buffers of the same lengths; results are identical on every rank.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn world_size(&self) -> usize;
    /// The backend's name (`mpi`, `nccl`).
    fn backend(&self) -> &'static str;
    /// Element-wise sum over ranks, in place; every rank gets the same bits.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), DistError>;
    /// Element-wise sum over ranks, in place, in f64 (counts and metrics).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), DistError>;
    /// Overwrites `buf` on every rank with `root`'s.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError>;
    /// Replaces `buf` on every rank with `root`'s bytes, whatever their length.
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError>;
    /// Every rank's `value`, in rank order.
    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, DistError>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<(), DistError>;
    /// Ends every rank of the job with `code` (MPI_Abort): the way out when only this rank
    /// failed and the others would wait for it in their next collective forever.
    fn abort(&self, code: i32) -> !;
}

/// Opens the MPI world of this process: the launcher's environment is checked first, so a
/// process not started by `mpirun` gets [`DistError::NoLauncher`] instead of a one-rank world.
pub fn open_mpi() -> Result<Box<dyn Collective>, DistError> {
    launcher::detect()?;
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(mpi_backend::MpiCollective::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(DistError::NoMpiSupport)
    }
}

/// Whether this build carries the MPI backend.
pub const MPI_BUILT: bool = cfg!(feature = "mpi");
