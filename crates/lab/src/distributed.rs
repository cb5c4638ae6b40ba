//! Data-parallel training across MPI ranks (docs/distributed.md).
//!
//! Every rank builds the same model from the same seed and draws the same global batch from
//! the task's stream; each trains on its own rows of it ([`Batch::rows`]). Rank 0's starting
//! state (weights, optimizer state, step: a fresh run's or a resumed checkpoint's) is broadcast,
//! the gradients are all-reduced in buckets and weighted by each rank's share of the batch's
//! targets, so the update is the single-process update of the whole batch, and every rank
//! steps its own optimizer on the same numbers: the weights stay bitwise identical. Rank 0
//! alone evaluates and writes the run directory; what it decides (stop, interrupt, a new
//! learning rate) reaches the others in one small all-reduce per step.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use attune_dist::Collective;
use attune_dist::bucket::BucketPlan;
use attune_dist::nccl::NcclCollective;
use attune_dist::watchdog::Watchdog;
use attune_nn::{LoadOptions, checkpoint};
use attune_optim::{Optimizer, OptimizerState};
use attune_tensor::storage::Storage;
use attune_tensor::{DType, Device, GradStore, Tensor, Var};

use crate::config::ResolvedConfig;
use crate::net::Net;
use crate::runstate::RunState;
use crate::tasks::Batch;

/// How a distributed run talks (flags of `attune train`, not part of the run's config: the
/// results do not depend on the number of ranks).
#[derive(Debug, Clone, PartialEq)]
pub struct DistOptions {
    /// Largest gradient bucket, in MiB of f32.
    pub bucket_mb: f64,
    /// Seconds a collective may wait for the other ranks before this rank gives up.
    pub timeout_s: f64,
    /// Compare a digest of every rank's weights after every step (an error names the step).
    pub verify_ranks: bool,
}

impl Default for DistOptions {
    fn default() -> Self {
        // PyTorch DDP's default bucket; five minutes covers a slow evaluation on rank 0.
        DistOptions { bucket_mb: 25.0, timeout_s: 300.0, verify_ranks: false }
    }
}

/// What rank 0 decided at the end of a step, known to every rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Some rank saw Ctrl-C (or SIGTERM from the launcher): checkpoint and stop.
    pub interrupt: bool,
    /// Rank 0 stopped the run (early stopping, target, time limit).
    pub stop: bool,
    /// Rank 0's base learning rate (a plateau may have lowered it).
    pub base_lr: f64,
}

/// The per-step figures each rank measured on its rows, summed over the ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepSums {
    /// Loss times targets counted.
    pub weighted_loss: f64,
    /// Correct targets.
    pub correct: f64,
    /// Targets counted.
    pub counted: f64,
    /// Tokens trained on.
    pub tokens: f64,
    /// Parameters that received a gradient.
    pub with_grad: f64,
    /// The RAM's REINFORCE figures (reward, baseline, policy loss, variance).
    pub rl: [f64; 4],
}

impl StepSums {
    fn to_array(self) -> [f64; 9] {
        let [a, b, c, d] = self.rl;
        [self.weighted_loss, self.correct, self.counted, self.tokens, self.with_grad, a, b, c, d]
    }

    fn from_array(v: [f64; 9]) -> StepSums {
        StepSums {
            weighted_loss: v[0],
            correct: v[1],
            counted: v[2],
            tokens: v[3],
            with_grad: v[4],
            rl: [v[5], v[6], v[7], v[8]],
        }
    }
}

/// This process's place in a distributed run.
pub struct Dist {
    coll: Box<dyn Collective>,
    watchdog: Watchdog,
    opts: DistOptions,
    plan: Option<(Vec<usize>, BucketPlan)>,
    /// Seconds spent in collectives since the last [`Dist::take_comm_seconds`].
    comm_s: f64,
    /// NCCL over the ranks' GPUs, for the gradients of a `--device cuda` run.
    nccl: Option<NcclCollective>,
}

/// This process's rank among the ranks on its host (0 where the launcher does not say).
pub fn local_rank() -> usize {
    attune_dist::launcher::detect().ok().and_then(|l| l.local_rank).unwrap_or(0)
}

/// FNV-1a over bytes: a digest to compare across ranks, not a security hash.
pub fn digest(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl Dist {
    /// Joins the MPI job this process was launched in.
    pub fn open(opts: &DistOptions) -> Result<Dist> {
        if !(opts.bucket_mb > 0.0 && opts.timeout_s > 0.0) {
            bail!("--bucket-mb {} and --collective-timeout {} must be positive", opts.bucket_mb, opts.timeout_s);
        }
        let coll = attune_dist::open_mpi()?;
        let watchdog = Watchdog::start(Duration::from_secs_f64(opts.timeout_s), coll.rank());
        Ok(Dist { coll, watchdog, opts: opts.clone(), plan: None, comm_s: 0.0, nccl: None })
    }

    /// On a CUDA device, joins the ranks' GPUs into a NCCL communicator (its id sent over
    /// MPI), so gradients are reduced in device memory; other devices stage through the host.
    pub fn attach_device(&mut self, device: &Device) -> Result<()> {
        let Device::Cuda(_) = device else { return Ok(()) };
        // The stream every kernel of this device runs on: NCCL's calls queue behind them.
        let probe = Tensor::zeros(1, DType::F32, device)?;
        let stream = {
            let storage = probe.storage();
            let Storage::Gpu(g) = &*storage else { bail!("a CUDA tensor without device memory") };
            let exec = g.buffer().device().cuda_executor().context("a CUDA device without its executor")?;
            exec.stream().cu_stream() as *mut std::ffi::c_void
        };
        let nccl = self.collective("NCCL's communicator set-up", |c| {
            // SAFETY: the executor's stream lives as long as the process's device.
            Ok(unsafe { NcclCollective::init(c, stream) }?)
        })?;
        self.nccl = Some(nccl);
        Ok(())
    }

    /// The backend the gradients travel on.
    pub fn gradient_backend(&self) -> &'static str {
        if self.nccl.is_some() { "nccl" } else { self.coll.backend() }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.coll.rank()
    }

    /// Ranks in the job.
    pub fn world(&self) -> usize {
        self.coll.world_size()
    }

    /// Whether this rank writes the run directory.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// Ends every rank (after this one printed why): a failure on one rank must not leave the
    /// others waiting in their next collective.
    pub fn abort(&self, code: i32) -> ! {
        self.coll.abort(code)
    }

    /// Runs `f` as a collective: watched for hangs and timed.
    fn collective<T>(&mut self, what: &str, f: impl FnOnce(&dyn Collective) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let out = {
            let _armed = self.watchdog.arm(what.to_string());
            f(self.coll.as_ref())
        };
        self.comm_s += started.elapsed().as_secs_f64();
        out
    }

    /// Seconds spent in collectives since the last call.
    pub fn take_comm_seconds(&mut self) -> f64 {
        std::mem::take(&mut self.comm_s)
    }

    /// Checks, before any work, that every rank resolved the same run (a rank started with
    /// other flags or another config file would train something else) and that the batch
    /// splits evenly.
    pub fn check_start(&mut self, cfg: &ResolvedConfig, resume: bool) -> Result<()> {
        let json = serde_json::to_vec(&**cfg)?;
        let mine = digest(json.into_iter().chain([resume as u8]));
        let all = self.collective("the config check at start-up", |c| Ok(c.all_gather_u64(mine)?))?;
        let differ: Vec<usize> = (0..all.len()).filter(|&r| all[r] != all[0]).collect();
        if !differ.is_empty() {
            bail!(
                "rank(s) {differ:?} resolved a different run config from rank 0's (digests {all:x?}): every rank must be \
                 started with the same flags and config file (and --resume on all or none)"
            );
        }
        let (world, t) = (self.world(), &cfg.train);
        let micro = t.batch_size / t.grad_accum;
        if !micro.is_multiple_of(world) {
            bail!(
                "batch {} in {} micro-batch(es) of {micro} rows does not split over {world} ranks: make the \
                 micro-batch (--batch / --grad-accum) a multiple of the world size {world}",
                t.batch_size,
                t.grad_accum
            );
        }
        Ok(())
    }

    /// This rank's rows of a global batch.
    pub fn shard(&self, batch: &Batch) -> Result<Batch> {
        let (n, world, rank) = (batch.batch_size(), self.world(), self.rank());
        if !n.is_multiple_of(world) {
            bail!("a batch of {n} rows does not split over {world} ranks");
        }
        let per = n / world;
        batch.rows(rank * per..(rank + 1) * per)
    }

    /// Makes every rank start from rank 0's weights, optimizer state and run state.
    pub fn broadcast_start(&mut self, model: &Net, optimizer: &mut dyn Optimizer, state: &mut RunState) -> Result<()> {
        let name = Path::new("<rank 0's starting state>");
        let mut blob = Vec::new();
        if self.is_leader() {
            let opt = optimizer.state_dict()?;
            let mut tensors: Vec<(String, Tensor)> =
                model.store().state_dict().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
            tensors.extend(opt.tensors.into_iter().map(|(n, t)| (format!("optimizer.{n}"), t)));
            let mut s = state.clone();
            s.optimizer = opt.scalars;
            let meta = HashMap::from([("state".to_string(), serde_json::to_string(&s)?)]);
            blob = checkpoint::serialize_tensors(name, &tensors, Some(meta))?;
        }
        self.collective("the broadcast of rank 0's starting state", |c| Ok(c.broadcast_bytes(&mut blob, 0)?))?;
        if self.is_leader() {
            return Ok(());
        }
        let file = checkpoint::parse_tensors(name, &blob)?;
        let json = file.metadata.get("state").context("rank 0's starting state has no run state")?;
        let received: RunState = serde_json::from_str(json)?;
        let (mut params, mut opt) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
        for (n, t) in file.tensors {
            if let Some(p) = n.strip_prefix("model.") {
                params.insert(p.to_string(), t);
            } else if let Some(o) = n.strip_prefix("optimizer.") {
                opt.insert(o.to_string(), t);
            }
        }
        checkpoint::load_state_dict(name, model.store(), params, LoadOptions { strict: true, convert_dtype: false })?;
        optimizer
            .load_state_dict(&OptimizerState { tensors: opt, scalars: received.optimizer.clone() })
            .context("loading rank 0's optimizer state")?;
        *state = received;
        Ok(())
    }

    /// Sums this rank's step figures over the ranks.
    pub fn sum_step(&mut self, step: u64, local: StepSums) -> Result<StepSums> {
        let mut v = local.to_array();
        self.collective(&format!("the all-reduce of step {step}'s figures"), |c| Ok(c.all_reduce_sum_f64(&mut v)?))?;
        Ok(StepSums::from_array(v))
    }

    /// The bucket plan of parameters of `lengths` elements: the last one again while the
    /// parameters with a gradient stay the same (every step, in practice). Hand it back with
    /// [`Dist::keep_plan`].
    fn take_plan(&mut self, lengths: Vec<usize>) -> (Vec<usize>, BucketPlan) {
        match self.plan.take() {
            Some((l, plan)) if l == lengths => (l, plan),
            _ => {
                let max_elements = (self.opts.bucket_mb * (1 << 20) as f64 / 4.0) as usize;
                let plan = BucketPlan::new(&lengths, max_elements);
                (lengths, plan)
            }
        }
    }

    fn keep_plan(&mut self, plan: (Vec<usize>, BucketPlan)) {
        self.plan = Some(plan);
    }

    /// Replaces this rank's gradients of `with` (the parameters that have one; every rank has
    /// the same, checked by the caller through [`StepSums::with_grad`]), each the mean over
    /// its rows, with the mean over the global batch: each rank's weighted by its share
    /// `share` of the batch's counted targets, summed over the ranks in buckets.
    pub fn all_reduce_grads(&mut self, step: u64, grads: &mut GradStore, with: &[&Var], share: f32) -> Result<()> {
        let plan = self.take_plan(with.iter().map(|v| v.as_tensor().elem_count()).collect());
        let reduced = if self.nccl.is_some() {
            self.all_reduce_grads_on_device(step, grads, with, share, &plan.1)
        } else {
            self.all_reduce_grads_on_host(step, grads, with, share, &plan.1)
        };
        self.keep_plan(plan);
        reduced
    }

    /// [`Dist::all_reduce_grads`] through host memory, over MPI.
    fn all_reduce_grads_on_host(
        &mut self,
        step: u64,
        grads: &mut GradStore,
        with: &[&Var],
        share: f32,
        plan: &BucketPlan,
    ) -> Result<()> {
        let mut parts = Vec::with_capacity(with.len());
        for v in with {
            let g = grads.get(v.as_tensor()).context("a gradient vanished")?;
            let mut data = g.to_dtype(DType::F32)?.to_vec::<f32>()?;
            if share != 1.0 {
                data.iter_mut().for_each(|x| *x *= share);
            }
            parts.push(data);
        }
        self.collective(&format!("the gradient all-reduce of step {step}"), |c| {
            Ok(plan.all_reduce_scaled(c, &mut parts, 1.0)?)
        })?;
        for (v, data) in with.iter().zip(parts) {
            let old = grads.get(v.as_tensor()).context("a gradient vanished")?;
            let t = Tensor::from_vec(data, old.dims().to_vec(), &old.device())?.to_dtype(old.dtype())?;
            grads.insert(v.as_tensor(), t);
        }
        Ok(())
    }

    /// [`Dist::all_reduce_grads`] in GPU memory: each bucket's gradients concatenated on the
    /// device, summed by NCCL in place, and cut back into the gradients.
    fn all_reduce_grads_on_device(
        &mut self,
        step: u64,
        grads: &mut GradStore,
        with: &[&Var],
        share: f32,
        plan: &BucketPlan,
    ) -> Result<()> {
        let started = Instant::now();
        for bucket in &plan.buckets {
            let vars = &with[bucket.clone()];
            let mut flats = Vec::with_capacity(vars.len());
            for v in vars {
                let g = grads.get(v.as_tensor()).context("a gradient vanished")?;
                flats.push(g.to_dtype(DType::F32)?.flatten_all()?.mul_scalar(share as f64)?);
            }
            let flat = Tensor::cat(&flats, 0)?.contiguous()?;
            {
                let storage = flat.storage();
                let Storage::Gpu(g) = &*storage else { bail!("a CUDA gradient without device memory") };
                let ptr = g.buffer().device_ptr(flat.layout().offset() * 4);
                let nccl = self.nccl.as_ref().context("NCCL")?;
                let _armed = self.watchdog.arm(format!("NCCL's gradient all-reduce of step {step}"));
                // SAFETY: `flat` is a contiguous f32 buffer of this GPU, alive until the kernels
                // queued after the reduction on the same stream have read it.
                unsafe { nccl.all_reduce_sum_f32(ptr, flat.elem_count()) }?;
            }
            let mut at = 0;
            for v in vars {
                let old = grads.get(v.as_tensor()).context("a gradient vanished")?;
                let n = old.elem_count();
                let g = flat.narrow(0, at, n)?.reshape(old.dims().to_vec())?.to_dtype(old.dtype())?;
                grads.insert(v.as_tensor(), g);
                at += n;
            }
        }
        self.comm_s += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Rank 0's decisions and anyone's interrupt, on every rank.
    pub fn decide(&mut self, step: u64, interrupt: bool, stop: bool, base_lr: f64) -> Result<Decision> {
        let leader = self.is_leader();
        let mut v =
            [interrupt as u8 as f64, if leader { stop as u8 as f64 } else { 0.0 }, if leader { base_lr } else { 0.0 }];
        self.collective(&format!("the end of step {step}"), |c| Ok(c.all_reduce_sum_f64(&mut v)?))?;
        Ok(Decision { interrupt: v[0] > 0.0, stop: v[1] > 0.0, base_lr: v[2] })
    }

    /// Errors on every rank when any rank's weights differ from rank 0's by a single bit.
    pub fn verify_identical(&mut self, step: u64, model: &Net) -> Result<()> {
        if !self.opts.verify_ranks {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for (_, t) in model.store().state_dict() {
            for x in t.to_dtype(DType::F32)?.to_vec::<f32>()? {
                bytes.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        let mine = digest(bytes);
        let all = self.collective(&format!("the weight check of step {step}"), |c| Ok(c.all_gather_u64(mine)?))?;
        if all.iter().any(|&d| d != all[0]) {
            bail!("the ranks' weights differ after step {step} (digests {all:x?}): data-parallel training lost sync");
        }
        Ok(())
    }

    /// The dropout stream's seed on this rank: rank 0 keeps the run's, the others draw their
    /// own masks (the same masks on every rank would correlate the shards' noise).
    pub fn dropout_seed(&self, seed: u64) -> u64 {
        match self.rank() {
            0 => seed,
            r => digest(seed.to_le_bytes().into_iter().chain((r as u64).to_le_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_sums_round_trip_through_the_wire_layout() {
        let s = StepSums {
            weighted_loss: 1.5,
            correct: 2.0,
            counted: 3.0,
            tokens: 4.0,
            with_grad: 5.0,
            rl: [6.0, 7.0, 8.0, 9.0],
        };
        assert_eq!(StepSums::from_array(s.to_array()), s);
    }

    #[test]
    fn digests_tell_one_flipped_bit() {
        let a = digest(1.0f32.to_bits().to_le_bytes());
        let b = digest((1.0f32.to_bits() ^ 1).to_le_bytes());
        assert_ne!(a, b);
        assert_eq!(a, digest(1.0f32.to_bits().to_le_bytes()));
    }
}
