//! The MPI backend: rsmpi on the system's MPI library (Debian's OpenMPI in CI).

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use crate::{Collective, DistError};

/// `MPI_COMM_WORLD` of this process; MPI is finalised when it drops.
pub struct MpiCollective {
    world: SimpleCommunicator,
    // Dropped after `world`: finalises MPI.
    _universe: Universe,
}

impl MpiCollective {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<MpiCollective, DistError> {
        let universe = mpi::initialize().ok_or(DistError::AlreadyInitialised)?;
        Ok(MpiCollective { world: universe.world(), _universe: universe })
    }

    fn check_root(&self, op: &'static str, root: usize) -> Result<mpi::topology::Process<'_>, DistError> {
        if root >= self.world_size() {
            return Err(DistError::Root { op, root, world: self.world_size() });
        }
        Ok(self.world.process_at_rank(root as i32))
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<(), DistError> {
        // rsmpi has no MPI_IN_PLACE form; the send copy is one bucket, not the model.
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<(), DistError> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<(), DistError> {
        self.check_root("broadcast", root)?.broadcast_into(buf);
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<(), DistError> {
        let process = self.check_root("broadcast of bytes", root)?;
        let mut len = buf.len() as u64;
        process.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        process.broadcast_into(&mut buf[..]);
        Ok(())
    }

    fn all_gather_u64(&self, value: u64) -> Result<Vec<u64>, DistError> {
        let mut out = vec![0u64; self.world_size()];
        self.world.all_gather_into(&value, &mut out[..]);
        Ok(out)
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
