//! The MPI backend with two real ranks: this test binary starts itself under
//! `mpirun -np 2`, and each rank checks the collectives against values it can compute alone.
#![cfg(feature = "mpi")]

use std::process::Command;

use attune_dist::bucket::BucketPlan;
use attune_dist::{Collective, open_mpi};

/// The values rank `r` contributes: distinct per rank and not exactly representable sums.
fn contribution(rank: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.1 + 1.0) / (rank as f32 + 3.0)).collect()
}

fn as_rank(coll: &dyn Collective) {
    let (rank, world) = (coll.rank(), coll.world_size());
    assert_eq!(world, 2);
    // all-reduce: the sum of both contributions, in the order MPI chose; both ranks agree bitwise.
    let mut buf = contribution(rank, 1000);
    coll.all_reduce_sum_f32(&mut buf).unwrap();
    let expected: Vec<f32> = (0..1000).map(|i| contribution(0, 1000)[i] + contribution(1, 1000)[i]).collect();
    assert_eq!(buf, expected, "a two-rank sum is one f32 addition, the same in either order");
    let bits: u64 =
        buf.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3));
    let all = coll.all_gather_u64(bits).unwrap();
    assert!(all.iter().all(|&b| b == bits), "ranks disagree after all-reduce: {all:?}");
    let mut f = vec![rank as f64 + 0.5, 2.0];
    coll.all_reduce_sum_f64(&mut f).unwrap();
    assert_eq!(f, vec![2.0, 4.0]);
    // broadcast: rank 1's values everywhere, and bytes of a length only the root knows.
    let mut b = contribution(rank, 7);
    coll.broadcast_f32(&mut b, 1).unwrap();
    assert_eq!(b, contribution(1, 7));
    let mut bytes = if rank == 0 { b"rank zero's config".to_vec() } else { Vec::new() };
    coll.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"rank zero's config");
    assert!(coll.broadcast_f32(&mut b, 2).unwrap_err().to_string().contains("outside a world of 2"));
    // Buckets: three tensors in two buckets, averaged.
    let plan = BucketPlan::new(&[3, 2, 4], 5);
    assert_eq!(plan.buckets.len(), 2);
    let mut parts: Vec<Vec<f32>> = [3, 2, 4].iter().map(|&n| contribution(rank, n)).collect();
    let stats = plan.all_reduce_scaled(coll, &mut parts, 0.5).unwrap();
    assert_eq!((stats.calls, stats.elements), (2, 9));
    for (p, &n) in parts.iter().zip(&[3, 2, 4]) {
        let mean: Vec<f32> = (0..n).map(|i| (contribution(0, n)[i] + contribution(1, n)[i]) * 0.5).collect();
        assert_eq!(p, &mean);
    }
    coll.barrier().unwrap();
    println!("rank {rank} of {world}: collectives ok");
}

#[test]
fn two_ranks_under_mpirun() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        let coll = open_mpi().expect("MPI under mpirun");
        as_rank(coll.as_ref());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(exe)
        .args(["--exact", "two_ranks_under_mpirun", "--nocapture", "--test-threads", "1"])
        .output()
        .expect("mpirun (Debian's openmpi-bin; .ci/run installs it) must be on PATH for the MPI tests");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mpirun failed:\n{text}");
    for r in 0..2 {
        assert!(text.contains(&format!("rank {r} of 2: collectives ok")), "rank {r} did not finish:\n{text}");
    }
}

#[test]
fn distributed_without_a_launcher_is_an_error() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
        return; // the ranks of the test above run only it (--exact)
    }
    let e = open_mpi().err().expect("no launcher here").to_string();
    assert!(e.contains("mpirun -np N"), "{e}");
}
