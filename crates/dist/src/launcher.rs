//! Whether this process is a rank of an MPI launch, from the environment its launcher sets.
//!
//! MPI would happily initialise a process started by hand as a one-rank world; a user who typed
//! `attune train --distributed` without `mpirun` would then train alone without knowing it.
//! Launchers announce themselves in the environment, so that is checked first.

use crate::DistError;

/// The variables that launchers set: OpenMPI's `mpirun`, MPICH's Hydra (and Slurm's PMI-1/2),
/// and PMIx (Slurm's and OpenMPI 5's).
pub const LAUNCHER_VARS: [&str; 4] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"];

/// The launch as the environment describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, where the launcher says.
    pub rank: Option<usize>,
    /// Ranks in the job, where the launcher says.
    pub size: Option<usize>,
    /// This process's rank among those on its host (which GPU it takes).
    pub local_rank: Option<usize>,
}

/// The launch this process belongs to, read from `env` (a lookup, so tests need not touch
/// the process's environment).
pub fn detect_in(env: impl Fn(&str) -> Option<String>) -> Result<Launch, DistError> {
    if !LAUNCHER_VARS.iter().any(|v| env(v).is_some()) {
        return Err(DistError::NoLauncher { vars: LAUNCHER_VARS.join(", ") });
    }
    let number = |names: &[&str]| names.iter().find_map(|n| env(n)?.trim().parse().ok());
    Ok(Launch {
        rank: number(&["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]),
        size: number(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]),
        local_rank: number(&["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID"]),
    })
}

/// The launch of this process, from its environment.
pub fn detect() -> Result<Launch, DistError> {
    detect_in(|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_launcher_is_an_error_naming_mpirun() {
        let e = detect_in(env(&[("HOME", "/root")])).unwrap_err().to_string();
        assert!(e.contains("mpirun -np N attune train --distributed"), "{e}");
        assert!(e.contains("OMPI_COMM_WORLD_SIZE"), "{e}");
    }

    #[test]
    fn openmpi_and_pmi_launches_are_read() {
        let l = detect_in(env(&[
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ]))
        .unwrap();
        assert_eq!(l, Launch { rank: Some(3), size: Some(4), local_rank: Some(1) });
        let l = detect_in(env(&[("PMI_SIZE", "2"), ("PMI_RANK", "1"), ("MPI_LOCALRANKID", "0")])).unwrap();
        assert_eq!(l, Launch { rank: Some(1), size: Some(2), local_rank: Some(0) });
        let l = detect_in(env(&[("PMIX_RANK", "0")])).unwrap();
        assert_eq!(l, Launch { rank: Some(0), size: None, local_rank: None });
    }
}
