//! Reverse-mode automatic differentiation.
//!
//! Every op whose inputs need a gradient records a [`GradFn`] with its inputs. `backward()`
//! walks the graph in reverse topological order, accumulating gradients per tensor; a
//! gradient is dropped as soon as it has been propagated (only variables' gradients are
//! kept), and by default each node's saved inputs are released once it has run, like
//! PyTorch without `retain_graph`. Gradients are computed with tensor ops, so every device
//! that runs the forward ops also runs the backward.

use crate::tensor::TensorId;
use crate::{Error, Result, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The backward of one op. Implemented by attune-tensor's ops and by custom ops elsewhere.
pub trait GradFn: Send + Sync {
    /// The op name, for errors.
    fn name(&self) -> &str;
    /// Given the op's inputs, its output and the gradient of the loss with respect to the
    /// output, returns one gradient per input (`None` for inputs that get none).
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// The inputs of a recorded op and its backward.
type NodeState = (Vec<Tensor>, Box<dyn GradFn>);

/// A recorded op: its backward and the inputs it needs, released after use.
pub struct Node {
    name: String,
    state: Mutex<Option<NodeState>>,
}

impl Drop for Node {
    /// Dismantles the graph below this node iteratively: the default recursive drop of a long
    /// chain (20k ops never followed by `backward`, or an op that failed midway) would
    /// overflow the thread's stack.
    fn drop(&mut self) {
        let take = |state: &mut Mutex<Option<NodeState>>| {
            state.get_mut().unwrap_or_else(|p| p.into_inner()).take().map(|(inputs, _)| inputs).unwrap_or_default()
        };
        let mut pending: Vec<Tensor> = take(&mut self.state);
        while let Some(t) = pending.pop() {
            // Only a handle we hold the last reference to can be taken apart here; a shared
            // one is dropped (cheaply) by decrementing its count.
            if let Ok(inner) = Arc::try_unwrap(t.0)
                && let GradLink::Node(node) = inner.grad
                && let Ok(mut node) = Arc::try_unwrap(node)
            {
                pending.extend(take(&mut node.state));
            }
        }
    }
}

/// How a tensor takes part in autograd.
#[derive(Clone)]
pub(crate) enum GradLink {
    /// Constant: no gradient flows through it.
    None,
    /// A trainable leaf: its gradient is kept in the [`GradStore`].
    Variable,
    /// The output of a recorded op.
    Node(Arc<Node>),
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Disables graph recording on this thread until dropped (like `torch.no_grad()`).
pub struct NoGradGuard {
    previous: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Starts a no-grad scope that ends when the returned guard is dropped.
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

/// Runs `f` without recording the graph.
pub fn with_no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = no_grad();
    f()
}

impl GradLink {
    pub(crate) fn for_op(inputs: &[&Tensor], grad_fn: impl FnOnce() -> Box<dyn GradFn>) -> GradLink {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return GradLink::None;
        }
        let grad_fn = grad_fn();
        let inputs = inputs.iter().map(|t| (*t).clone()).collect();
        GradLink::Node(Arc::new(Node { name: grad_fn.name().to_string(), state: Mutex::new(Some((inputs, grad_fn))) }))
    }
}

/// Gradients produced by [`Tensor::backward`], keyed by tensor.
#[derive(Default, Debug)]
pub struct GradStore(HashMap<TensorId, Tensor>);

impl GradStore {
    /// The gradient of `t`, if it received one.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    /// The gradient of a tensor by id.
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor> {
        self.0.get(&id)
    }
    /// Removes and returns the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }
    /// Sets the gradient of `t`.
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.0.insert(t.id(), grad);
    }
    /// Number of stored gradients.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether no gradient is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The ids with a gradient.
    pub fn ids(&self) -> impl Iterator<Item = &TensorId> {
        self.0.keys()
    }
}

impl Tensor {
    /// Whether gradients flow to this tensor (it is a variable or depends on one).
    pub fn requires_grad(&self) -> bool {
        !matches!(self.0.grad, GradLink::None)
    }

    /// Whether this tensor is a trainable leaf.
    pub fn is_variable(&self) -> bool {
        matches!(self.0.grad, GradLink::Variable)
    }

    /// The same data, cut from the graph.
    pub fn detach(&self) -> Tensor {
        if !self.requires_grad() {
            return self.clone();
        }
        Tensor::from_parts(self.0.storage.clone(), self.layout().clone(), GradLink::None)
    }

    /// A trainable leaf holding a contiguous copy of this tensor's values.
    pub fn to_var(&self) -> Result<Var> {
        Var::from_tensor(self)
    }

    /// Gradients of this scalar with respect to every variable it depends on. Releases the
    /// graph's saved tensors as it goes.
    pub fn backward(&self) -> Result<GradStore> {
        let seed = self.check_scalar_seed()?;
        self.run_backward(seed, false)
    }

    /// Like [`backward`](Self::backward) but keeps the graph so backward can run again.
    pub fn backward_retain_graph(&self) -> Result<GradStore> {
        let seed = self.check_scalar_seed()?;
        self.run_backward(seed, true)
    }

    /// Backward from a non-scalar output with an explicit output gradient.
    pub fn backward_with(&self, grad_output: &Tensor) -> Result<GradStore> {
        if grad_output.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward_with",
                lhs: self.shape().clone(),
                rhs: grad_output.shape().clone(),
                hint: "the output gradient must have the output's shape".into(),
            });
        }
        self.run_backward(grad_output.detach(), false)
    }

    fn check_scalar_seed(&self) -> Result<Tensor> {
        if self.elem_count() != 1 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "backward() needs a one-element loss, got shape {:?}; reduce it (sum/mean) or call backward_with(grad)",
                    self.shape()
                ),
            ));
        }
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "backward",
                dtype: self.dtype(),
                hint: "gradients need a float loss",
            });
        }
        self.ones_like()
    }

    fn run_backward(&self, seed: Tensor, retain: bool) -> Result<GradStore> {
        if !self.requires_grad() {
            return Err(Error::NoGradient { shape: self.shape().clone() });
        }
        let _guard = no_grad();
        let mut order = topological_order(self)?;
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), seed);
        let mut store = GradStore::default();
        // Reverse topological order: a tensor's gradient is complete when it is reached.
        for slot in order.iter_mut().rev() {
            let t = slot.take().expect("each tensor is visited once");
            let Some(grad) = grads.remove(&t.id()) else { continue };
            match &t.0.grad {
                GradLink::None => {}
                GradLink::Variable => {
                    store.0.insert(t.id(), grad);
                }
                GradLink::Node(node) => {
                    let mut state = node.state.lock().expect("graph lock poisoned");
                    let (inputs, grad_fn) = match state.as_ref() {
                        Some(s) => s,
                        None => return Err(Error::GraphReleased { op: node.name.clone() }),
                    };
                    let input_grads = grad_fn.backward(inputs, &t, &grad)?;
                    if input_grads.len() != inputs.len() {
                        return Err(Error::invalid(
                            "backward",
                            format!(
                                "op {} returned {} gradients for {} inputs",
                                node.name,
                                input_grads.len(),
                                inputs.len()
                            ),
                        ));
                    }
                    for (input, g) in inputs.iter().zip(input_grads) {
                        let Some(g) = g else { continue };
                        if !input.requires_grad() {
                            continue;
                        }
                        let g = if g.shape() != input.shape() {
                            return Err(Error::ShapeMismatch {
                                op: "backward",
                                lhs: input.shape().clone(),
                                rhs: g.shape().clone(),
                                hint: format!("op {} produced a gradient of the wrong shape", node.name),
                            });
                        } else {
                            g
                        };
                        let acc = match grads.remove(&input.id()) {
                            Some(prev) => accumulate(prev, &g)?,
                            None => g,
                        };
                        grads.insert(input.id(), acc);
                    }
                    if !retain {
                        *state = None;
                    }
                }
            }
        }
        Ok(store)
    }
}

/// `prev + g`, adding in place when `prev` is a buffer nobody else holds (the common case
/// for a gradient summed over several uses), so backward does not allocate per use.
fn accumulate(prev: Tensor, g: &Tensor) -> Result<Tensor> {
    use crate::storage::{CpuStorage, Storage};
    let unique = Arc::strong_count(&prev.0) == 1
        && Arc::strong_count(&prev.0.storage) == 1
        && prev.layout().contiguous_range() == Some((0, prev.elem_count()))
        && prev.shape() == g.shape()
        && prev.dtype() == g.dtype()
        && prev.device() == g.device();
    if !unique {
        return prev.add(g);
    }
    let g = g.contiguous()?;
    let Some((start, end)) = g.layout().contiguous_range() else { return prev.add(&g) };
    {
        let src = g.storage();
        let mut dst = prev.0.storage.write().expect("storage lock poisoned");
        #[allow(unreachable_patterns)]
        match (&mut *dst, &*src) {
            (Storage::Cpu(CpuStorage::F32(d)), Storage::Cpu(CpuStorage::F32(s))) => {
                d.iter_mut().zip(&s[start..end]).for_each(|(d, s)| *d += s)
            }
            (Storage::Cpu(CpuStorage::F64(d)), Storage::Cpu(CpuStorage::F64(s))) => {
                d.iter_mut().zip(&s[start..end]).for_each(|(d, s)| *d += s)
            }
            (Storage::Cpu(CpuStorage::F16(d)), Storage::Cpu(CpuStorage::F16(s))) => {
                d.iter_mut().zip(&s[start..end]).for_each(|(d, s)| *d = half::f16::from_f32(d.to_f32() + s.to_f32()))
            }
            (Storage::Cpu(CpuStorage::BF16(d)), Storage::Cpu(CpuStorage::BF16(s))) => {
                d.iter_mut().zip(&s[start..end]).for_each(|(d, s)| *d = half::bf16::from_f32(d.to_f32() + s.to_f32()))
            }
            _ => {
                drop(dst);
                drop(src);
                return prev.add(&g);
            }
        }
    }
    Ok(prev)
}

/// Tensors reachable from `root` that need gradients, inputs before the ops that use them.
fn topological_order(root: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let mut order = Vec::new();
    let mut seen: HashSet<TensorId> = HashSet::new();
    // Iterative DFS (deep graphs would overflow the stack recursively).
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(Some(t));
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        let children: Vec<Tensor> = match &t.0.grad {
            GradLink::Node(node) => match node.state.lock().expect("graph lock poisoned").as_ref() {
                Some((inputs, _)) => inputs.iter().filter(|i| i.requires_grad()).cloned().collect(),
                None => return Err(Error::GraphReleased { op: node.name.clone() }),
            },
            _ => vec![],
        };
        stack.push((t, true));
        for c in children {
            if !seen.contains(&c.id()) {
                stack.push((c, false));
            }
        }
    }
    Ok(order)
}

/// A trainable parameter: a tensor whose gradient is kept by `backward()` and whose values
/// optimizers update in place (every clone of the handle sees the update).
#[derive(Clone)]
pub struct Var(Tensor);

impl Var {
    /// A variable with a contiguous copy of `t`'s values.
    pub fn from_tensor(t: &Tensor) -> Result<Var> {
        let storage = t.detach().contiguous_copy()?;
        Ok(Var(Tensor::from_parts(
            Arc::new(std::sync::RwLock::new(storage)),
            crate::Layout::contiguous(t.shape().clone()),
            GradLink::Variable,
        )))
    }

    /// The variable as a tensor (shares storage; gradients flow to the variable).
    pub fn as_tensor(&self) -> &Tensor {
        &self.0
    }

    /// Replaces the values in place with those of `value` (same shape; converted to this dtype).
    pub fn set(&self, value: &Tensor) -> Result<()> {
        if value.shape() != self.0.shape() {
            return Err(Error::ShapeMismatch {
                op: "Var::set",
                lhs: self.0.shape().clone(),
                rhs: value.shape().clone(),
                hint: "a variable keeps its shape; create a new Var to change it".into(),
            });
        }
        if value.device() != self.0.device() {
            return Err(Error::DeviceMismatch { op: "Var::set", lhs: self.0.device(), rhs: value.device() });
        }
        let new = value.detach().to_dtype(self.0.dtype())?.contiguous_copy()?;
        *self.0.0.storage.write().expect("storage lock poisoned") = new;
        Ok(())
    }
}

impl std::ops::Deref for Var {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({:?})", self.0)
    }
}
