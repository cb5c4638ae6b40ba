//! Saved optimizer state: named tensors plus JSON scalars, and the checked loader the
//! optimizers share.
//!
//! Layout of the scalars (every optimizer):
//! `{"optimizer": "adam", "lr": 0.001, "steps": 12, "hyper": {config}, "params": {"w": {"step": 12}, ...}}`.
//! A parameter listed under `params` has state; its tensors are `"{name}.{buffer}"`
//! (`exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `momentum_buffer`, `row_var`, `col_var`,
//! `variance`, and `master` for f16/bf16 parameters). Loading restores the learning rate, the
//! step counts and the buffers; the other hyper-parameters stay those the optimizer was built
//! with (`hyper` records the saved ones).

use crate::error::{Error, Result};
use crate::group::ParamGroup;
use attune_tensor::{DType, Device, Shape, Tensor};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};

/// An optimizer's state: named tensors (write them to safetensors as they are) and JSON
/// scalars (step counts, learning rate, hyper-parameters).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// Buffers keyed `"{param_name}.{buffer}"`, in the parameter's compute dtype.
    pub tensors: BTreeMap<String, Tensor>,
    /// Scalars: see the module docs for the layout.
    pub scalars: Value,
}

impl OptimizerState {
    /// The optimizer name the state was saved by (`"sgd"`, `"adam"`, ...).
    pub fn optimizer(&self) -> Option<&str> {
        self.scalars.get("optimizer").and_then(Value::as_str)
    }

    /// The number of `step()` calls before the state was saved.
    pub fn steps(&self) -> Option<u64> {
        self.scalars.get("steps").and_then(Value::as_u64)
    }
}

/// Builds an [`OptimizerState`] one parameter at a time.
pub(crate) struct StateWriter {
    tensors: BTreeMap<String, Tensor>,
    params: Map<String, Value>,
}

impl StateWriter {
    pub fn new() -> Self {
        StateWriter { tensors: BTreeMap::new(), params: Map::new() }
    }

    /// Records that parameter `name` has state after `step` updates.
    pub fn param(&mut self, name: &str, step: u64) {
        self.params.insert(name.to_string(), json!({ "step": step }));
    }

    /// Adds buffer `key` of parameter `name` (nothing when absent).
    pub fn tensor(&mut self, name: &str, key: &str, t: Option<&Tensor>) {
        if let Some(t) = t {
            self.tensors.insert(format!("{name}.{key}"), t.clone());
        }
    }

    pub fn finish(
        self,
        op: &'static str,
        lr: f64,
        steps: u64,
        hyper: &impl serde::Serialize,
    ) -> Result<OptimizerState> {
        let hyper = serde_json::to_value(hyper).map_err(|source| Error::Json { op, source })?;
        let scalars = json!({ "optimizer": op, "lr": lr, "steps": steps, "hyper": hyper, "params": self.params });
        Ok(OptimizerState { tensors: self.tensors, scalars })
    }
}

/// The largest step count a state may hold (2^53, the last integer every f64 represents).
const MAX_STEPS: u64 = 1 << 53;

/// Reads an [`OptimizerState`] for an optimizer, checking names, shapes and leftovers.
pub(crate) struct StateReader<'a> {
    op: &'static str,
    tensors: BTreeMap<&'a str, &'a Tensor>,
    params: &'a Map<String, Value>,
    scalars: &'a Value,
}

impl<'a> StateReader<'a> {
    /// Starts reading; errors when the state was saved by another optimizer.
    pub fn new(op: &'static str, state: &'a OptimizerState) -> Result<Self> {
        match state.optimizer() {
            Some(name) if name == op => {}
            Some(name) => {
                return Err(Error::state(
                    op,
                    format!(
                        "the state was saved by optimizer '{name}', not '{op}'; build a '{name}' optimizer to load it"
                    ),
                ));
            }
            None => {
                return Err(Error::state(op, "the scalars have no \"optimizer\" name; is this an optimizer state?"));
            }
        }
        let params = state
            .scalars
            .get("params")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::state(op, "the scalars have no \"params\" object"))?;
        let tensors = state.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Ok(StateReader { op, tensors, params, scalars: &state.scalars })
    }

    /// The saved learning rate.
    pub fn lr(&self) -> Result<f64> {
        let lr = self.scalars.get("lr").and_then(Value::as_f64);
        match lr {
            Some(lr) if lr.is_finite() && lr >= 0.0 => Ok(lr),
            _ => Err(Error::state(self.op, format!("\"lr\" must be a finite number >= 0, got {lr:?}"))),
        }
    }

    /// The saved number of `step()` calls.
    pub fn steps(&self) -> Result<u64> {
        self.step_count("steps", self.scalars.get("steps"))
    }

    /// The step count of parameter `name`, or `None` when the state has none for it.
    pub fn param_step(&self, name: &str) -> Result<Option<u64>> {
        let Some(entry) = self.params.get(name) else { return Ok(None) };
        self.step_count(&format!("params.{name}.step"), entry.get("step")).map(Some)
    }

    /// A step count: an integer in `0..=MAX_STEPS` (beyond it, `t` is no longer exact as the
    /// f64 the bias corrections use, and the next step's `+ 1` could overflow: a corrupt file).
    fn step_count(&self, key: &str, v: Option<&Value>) -> Result<u64> {
        match v.and_then(Value::as_u64) {
            Some(n) if n <= MAX_STEPS => Ok(n),
            _ => Err(Error::state(
                self.op,
                format!(
                    "\"{key}\" must be an integer in 0..=2^53, got {}",
                    v.map_or("nothing".into(), Value::to_string)
                ),
            )),
        }
    }

    /// Takes buffer `key` of parameter `param`, checking its shape and converting it to
    /// `dtype` on `device`; `None` when absent.
    pub fn take(
        &mut self,
        param: &str,
        key: &str,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let full = format!("{param}.{key}");
        let Some(t) = self.tensors.remove(full.as_str()) else { return Ok(None) };
        if t.shape() != shape {
            return Err(Error::state(
                self.op,
                format!(
                    "tensor '{full}' has shape {:?} but parameter '{param}' needs {shape:?}; the state was saved for a different model",
                    t.shape()
                ),
            ));
        }
        if !t.dtype().is_float() {
            return Err(Error::state(
                self.op,
                format!("tensor '{full}' has dtype {}; state tensors are float", t.dtype()),
            ));
        }
        Ok(Some(t.detach().to_dtype(dtype)?.to_device(device)?))
    }

    /// Like [`take`](Self::take) but errors when the buffer is missing.
    pub fn require(&mut self, param: &str, key: &str, shape: &Shape, dtype: DType, device: &Device) -> Result<Tensor> {
        self.take(param, key, shape, dtype, device)?.ok_or_else(|| {
            Error::state(
                self.op,
                format!(
                    "parameter '{param}' has state but tensor '{param}.{key}' is missing; \
                     was the state saved with another configuration (amsgrad, momentum)?"
                ),
            )
        })
    }

    /// Errors when the state holds tensors or parameter entries nothing took.
    pub fn finish(self, groups: &[ParamGroup]) -> Result<()> {
        let known: HashSet<&str> = groups.iter().flat_map(|g| g.params.iter().map(|(n, _)| n.as_str())).collect();
        if let Some(name) = self.params.keys().find(|n| !known.contains(n.as_str())) {
            return Err(Error::state(
                self.op,
                format!("the state has parameter '{name}', which this optimizer does not have; the model differs"),
            ));
        }
        if let Some(full) = self.tensors.keys().next() {
            let param = full.rsplit_once('.').map_or(*full, |(p, _)| p);
            let why = if known.contains(param) {
                format!(
                    "parameter '{param}' exists but this {} configuration does not use that buffer \
                     (amsgrad, momentum, factoring or the dtype differ)",
                    self.op
                )
            } else {
                format!("this optimizer has no parameter '{param}'")
            };
            return Err(Error::state(self.op, format!("unexpected tensor '{full}': {why}")));
        }
        Ok(())
    }
}

/// Serde for f64 values that may be infinite or NaN (JSON numbers cannot be): finite values
/// as numbers, the others as the strings "inf", "-inf" and "nan".
pub(crate) mod float_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }

    fn to_repr(v: f64) -> Repr {
        if v.is_finite() {
            Repr::Num(v)
        } else if v.is_nan() {
            Repr::Text("nan".into())
        } else if v > 0.0 {
            Repr::Text("inf".into())
        } else {
            Repr::Text("-inf".into())
        }
    }

    fn from_repr<E: serde::de::Error>(r: Repr) -> Result<f64, E> {
        match r {
            Repr::Num(v) => Ok(v),
            Repr::Text(s) => match s.as_str() {
                "nan" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(E::custom(format!("expected a number, \"inf\", \"-inf\" or \"nan\", got \"{other}\""))),
            },
        }
    }

    /// For `Option<f64>` fields: `#[serde(with = "float_serde::option")]`.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            v.map(to_repr).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<Repr>::deserialize(d)?.map(from_repr).transpose()
        }
    }
}
