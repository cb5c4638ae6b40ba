//! Adam (`torch.optim.Adam`, L2 weight decay added to the gradient) and AdamW
//! (`torch.optim.AdamW`, decoupled weight decay), with optional AMSGrad.
//!
//! Per step `t` (per parameter, counting only steps where it had a gradient):
//! Adam: `g += wd p`; AdamW: `p *= 1 - lr wd`. Then `m = lerp(m, g, 1 - beta1)`,
//! `v = beta2 v + (1 - beta2) g^2`, `v_hat = max(v_hat, v)` with AMSGrad (else `v_hat = v`),
//! `denom = sqrt(v_hat) / sqrt(1 - beta2^t) + eps`, `p -= lr / (1 - beta1^t) * m / denom`.

use crate::adam_fused;
use crate::base::{Base, Param, delegate_to_base};
use crate::error::{Result, check_lr, check_weight_decay, ensure};
use crate::group::ParamGroup;
use crate::optimizer::Optimizer;
use crate::slot::{LerpWeights, lerp};
use crate::state::{OptimizerState, StateWriter};
use attune_tensor::{DType, GradStore, Tensor};
use serde::{Deserialize, Serialize};

/// Defines an Adam-family config struct: Adam's and AdamW's have the same fields (so that
/// struct literals of either work alike) and differ in docs and the weight decay's meaning.
macro_rules! adam_config {
    ($(#[$doc:meta])* $name:ident, weight_decay: $wd_doc:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Learning rate (default 1e-3).
            pub lr: f64,
            /// Decay rates of the first and second moment averages (default (0.9, 0.999)).
            pub betas: (f64, f64),
            /// Added to the denominator for stability (default 1e-8).
            pub eps: f64,
            #[doc = $wd_doc]
            pub weight_decay: f64,
            /// Use the running maximum of the second moment (AMSGrad).
            pub amsgrad: bool,
            /// Maximize the objective instead of minimizing it.
            pub maximize: bool,
        }
    };
}

adam_config! {
    /// Adam hyper-parameters; names and defaults are `torch.optim.Adam`'s.
    AdamConfig, weight_decay: "L2 penalty added to the gradient (default 0)."
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false, maximize: false }
    }
}

impl AdamConfig {
    /// PyTorch's checks (lr, eps, weight_decay >= 0; betas in [0, 1)), plus finiteness;
    /// `op` names the optimizer in messages.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        check_lr(op, self.lr)?;
        ensure(op, self.eps.is_finite() && self.eps >= 0.0, || {
            format!("eps must be finite and >= 0, got {}", self.eps)
        })?;
        for (i, beta) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            ensure(op, (0.0..1.0).contains(&beta), || {
                format!("betas[{i}] must be in [0, 1), got {beta}; the defaults are (0.9, 0.999)")
            })?;
        }
        check_weight_decay(op, self.weight_decay)
    }
}

adam_config! {
    /// AdamW hyper-parameters: those of Adam with `torch.optim.AdamW`'s default weight decay 0.01,
    /// applied decoupled (`p *= 1 - lr wd`).
    AdamWConfig, weight_decay: "Decoupled weight decay (default 0.01)."
}

impl Default for AdamWConfig {
    fn default() -> Self {
        let a = AdamConfig::default();
        AdamWConfig { weight_decay: 1e-2, ..AdamWConfig::from(a) }
    }
}

impl From<AdamConfig> for AdamWConfig {
    fn from(a: AdamConfig) -> Self {
        let AdamConfig { lr, betas, eps, weight_decay, amsgrad, maximize } = a;
        AdamWConfig { lr, betas, eps, weight_decay, amsgrad, maximize }
    }
}

impl AdamWConfig {
    /// The same numbers as an [`AdamConfig`] (the update differs only in how weight decay applies).
    pub fn as_adam(&self) -> AdamConfig {
        let AdamWConfig { lr, betas, eps, weight_decay, amsgrad, maximize } = self.clone();
        AdamConfig { lr, betas, eps, weight_decay, amsgrad, maximize }
    }
}

/// The update as a chain of tensor ops (any device and float dtype); returns the new value.
fn chain(c: &AdamConfig, decoupled: bool, w: Param<'_>, m: &mut Moments) -> Result<Tensor> {
    let (beta1, beta2) = c.betas;
    let (lr, wd) = (w.lr, w.weight_decay);
    let (mut p, mut g) = (w.value, w.grad);
    if wd != 0.0 {
        if decoupled {
            p = p.mul_scalar(1.0 - lr * wd)?;
        } else {
            g = g.add(&p.mul_scalar(wd)?)?;
        }
    }
    m.exp_avg = lerp(&m.exp_avg, &g, 1.0 - beta1)?;
    m.exp_avg_sq = m.exp_avg_sq.mul_scalar(beta2)?.add(&g.sqr()?.mul_scalar(1.0 - beta2)?)?;
    let t = w.t as f64;
    let bias_correction1 = 1.0 - beta1.powf(t);
    let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
    let v_hat = match &m.max_exp_avg_sq {
        Some(max) => {
            let max = max.maximum(&m.exp_avg_sq)?;
            m.max_exp_avg_sq = Some(max.clone());
            max
        }
        None => m.exp_avg_sq.clone(),
    };
    let denom = v_hat.sqrt()?.div_scalar(bias_correction2_sqrt)?.add_scalar(c.eps)?;
    let step_size = lr / bias_correction1;
    let update = m.exp_avg.div(&denom)?.mul_scalar(step_size)?;
    Ok(p.sub(&update)?)
}

/// The step of [`adam_fused`] when it applies: the new parameter, with `m` updated.
fn fused(c: &AdamConfig, decoupled: bool, w: &Param<'_>, m: &mut Moments) -> Result<Option<Tensor>> {
    let (lr, wd, t) = (w.lr, w.weight_decay, w.t as f64);
    let (beta1, beta2) = c.betas;
    // The chain's scalars as its f32 `*_scalar` ops and `lerp` round them.
    let lerp = LerpWeights::new(1.0 - beta1, DType::F32);
    let s = adam_fused::Scalars {
        decay: (wd != 0.0 && decoupled).then_some((1.0 - lr * wd) as f32),
        l2: (wd != 0.0 && !decoupled).then_some(wd as f32),
        w: lerp.w as f32,
        one_minus_w: lerp.one_minus as f32,
        from_m: lerp.from_a,
        beta2: beta2 as f32,
        one_minus_beta2: (1.0 - beta2) as f32,
        bc2_sqrt: (1.0 - beta2.powf(t)).sqrt() as f32,
        eps: c.eps as f32,
        step_size: (lr / (1.0 - beta1.powf(t))) as f32,
    };
    let out = adam_fused::step(&s, &w.value, &w.grad, &m.exp_avg, &m.exp_avg_sq, m.max_exp_avg_sq.as_ref())?;
    Ok(out.map(|(p, exp_avg, exp_avg_sq, max)| {
        (m.exp_avg, m.exp_avg_sq, m.max_exp_avg_sq) = (exp_avg, exp_avg_sq, max);
        p
    }))
}

/// Per-parameter buffers.
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Option<Tensor>,
}

/// Adam or AdamW over parameter groups.
pub struct Adam {
    decoupled: bool,
    config: AdamConfig,
    base: Base<Moments>,
}

impl Adam {
    /// `torch.optim.Adam` over `groups`.
    pub fn new(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        Self::build("adam", false, groups, config)
    }

    /// `torch.optim.AdamW` over `groups`.
    pub fn adamw(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<Self> {
        Self::build("adamw", true, groups, config.as_adam())
    }

    fn build(op: &'static str, decoupled: bool, groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        config.validate(op)?;
        Ok(Adam { decoupled, base: Base::new(op, config.lr, groups)?, config })
    }

    /// The hyper-parameters (for AdamW, its numbers as an [`AdamConfig`]).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl Optimizer for Adam {
    delegate_to_base!();

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (c, decoupled) = (&self.config, self.decoupled);
        let init = |g: &Tensor| -> Result<Moments> {
            let zeros = g.zeros_like()?;
            let max = if c.amsgrad { Some(zeros.clone()) } else { None };
            Ok(Moments { exp_avg: zeros.clone(), exp_avg_sq: zeros, max_exp_avg_sq: max })
        };
        self.base.step(grads, c.maximize, c.weight_decay, init, |w, m| match fused(c, decoupled, &w, m)? {
            Some(p) => Ok(p),
            None => chain(c, decoupled, w, m),
        })
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        let save = |w: &mut StateWriter, name: &str, m: &Moments| {
            w.tensor(name, "exp_avg", Some(&m.exp_avg));
            w.tensor(name, "exp_avg_sq", Some(&m.exp_avg_sq));
            w.tensor(name, "max_exp_avg_sq", m.max_exp_avg_sq.as_ref());
        };
        if self.decoupled {
            self.base.state_dict(&AdamWConfig::from(self.config.clone()), save)
        } else {
            self.base.state_dict(&self.config, save)
        }
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let amsgrad = self.config.amsgrad;
        self.base.load_state_dict(state, |r, p| {
            Ok(Moments {
                exp_avg: p.require(r, "exp_avg")?,
                exp_avg_sq: p.require(r, "exp_avg_sq")?,
                max_exp_avg_sq: match amsgrad {
                    true => Some(p.require(r, "max_exp_avg_sq")?),
                    false => None,
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attune_tensor::{DType, Device, Rng, Var};

    /// The fused CPU pass gives the chain's bits: both weight-decay forms and none, AMSGrad,
    /// both forms of lerp (1 - beta1 below and above 0.5), several step numbers, and a tensor
    /// long enough to be split across threads with a ragged last chunk.
    #[test]
    fn the_fused_pass_gives_the_chains_bits() -> Result<()> {
        let mut rng = Rng::new(7);
        let n = (1 << 15) + 4099;
        let draw = |rng: &mut Rng, scale: f64| rng.normal(0.0, scale, [n], DType::F32, &Device::Cpu);
        let var = Var::from_tensor(&draw(&mut rng, 1.0)?)?;
        let (g, m0, v0) = (draw(&mut rng, 0.1)?, draw(&mut rng, 0.01)?, draw(&mut rng, 1e-4)?.abs()?);
        let vmax0 = v0.mul_scalar(1.5)?;
        let mut cases = 0;
        for decoupled in [false, true] {
            for wd in [0.0, 0.05] {
                for amsgrad in [false, true] {
                    for beta1 in [0.9, 0.3] {
                        for t in [1, 7] {
                            let c = AdamConfig {
                                lr: 3e-3,
                                betas: (beta1, 0.995),
                                weight_decay: wd,
                                amsgrad,
                                ..Default::default()
                            };
                            let param = || Param {
                                var: &var,
                                grad: g.clone(),
                                value: var.as_tensor().detach(),
                                lr: c.lr,
                                weight_decay: wd,
                                t,
                            };
                            let moments = || Moments {
                                exp_avg: m0.clone(),
                                exp_avg_sq: v0.clone(),
                                max_exp_avg_sq: amsgrad.then(|| vmax0.clone()),
                            };
                            let (mut mf, mut mc) = (moments(), moments());
                            let pf = fused(&c, decoupled, &param(), &mut mf)?.expect("CPU f32 takes the fused pass");
                            let pc = chain(&c, decoupled, param(), &mut mc)?;
                            let bits = |t: &Tensor| -> Result<Vec<u32>> {
                                Ok(t.to_vec::<f32>()?.iter().map(|x| x.to_bits()).collect())
                            };
                            let what = format!("decoupled {decoupled} wd {wd} amsgrad {amsgrad} beta1 {beta1} t {t}");
                            assert_eq!(bits(&pf)?, bits(&pc)?, "parameter, {what}");
                            assert_eq!(bits(&mf.exp_avg)?, bits(&mc.exp_avg)?, "exp_avg, {what}");
                            assert_eq!(bits(&mf.exp_avg_sq)?, bits(&mc.exp_avg_sq)?, "exp_avg_sq, {what}");
                            if amsgrad {
                                let (a, b) = (mf.max_exp_avg_sq.unwrap(), mc.max_exp_avg_sq.unwrap());
                                assert_eq!(bits(&a)?, bits(&b)?, "max_exp_avg_sq, {what}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 32);
        Ok(())
    }

    /// f64 parameters and strided tensors take the chain.
    #[test]
    fn other_dtypes_and_layouts_take_the_chain() -> Result<()> {
        let c = AdamConfig::default();
        let run = |value: Tensor| -> Result<bool> {
            let var = Var::from_tensor(&value.contiguous()?)?;
            let g = value.ones_like()?;
            let w = Param { var: &var, grad: g.clone(), value, lr: 1e-3, weight_decay: 0.0, t: 1 };
            let mut m = Moments { exp_avg: g.zeros_like()?, exp_avg_sq: g.zeros_like()?, max_exp_avg_sq: None };
            Ok(fused(&c, true, &w, &mut m)?.is_some())
        };
        assert!(run(Tensor::ones([4, 3], DType::F32, &Device::Cpu)?)?);
        assert!(!run(Tensor::ones([4, 3], DType::F64, &Device::Cpu)?)?);
        assert!(!run(Tensor::ones([3, 4], DType::F32, &Device::Cpu)?.t()?)?);
        Ok(())
    }
}
