//! The `Tensor` handle: cheap to clone (shared storage), a layout describing the view, and the
//! autograd link to the op that produced it.

use crate::autograd::{GradFn, GradLink};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Layout, Result, Shape, WithDType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// A unique id per tensor handle (views get their own id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct TensorInner {
    pub(crate) id: TensorId,
    pub(crate) storage: Arc<RwLock<Storage>>,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) grad: GradLink,
}

/// An n-dimensional array on a device. Cloning shares the storage and the graph.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

impl Tensor {
    // ----- construction -------------------------------------------------------------------

    pub(crate) fn from_parts(storage: Arc<RwLock<Storage>>, layout: Layout, grad: GradLink) -> Tensor {
        let (dtype, device) = {
            let s = storage.read().expect("storage lock poisoned");
            (s.dtype(), s.device())
        };
        Tensor(Arc::new(TensorInner { id: TensorId::fresh(), storage, layout, dtype, device, grad }))
    }

    /// Wraps a fresh storage holding a contiguous tensor of `shape` (no graph).
    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Tensor {
        Tensor::from_parts(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), GradLink::None)
    }

    /// Wraps a CPU result of an op and records it in the graph when any input needs a gradient.
    pub(crate) fn from_op(
        storage: Storage,
        shape: impl Into<Shape>,
        inputs: &[&Tensor],
        grad_fn: impl FnOnce() -> Box<dyn GradFn>,
    ) -> Tensor {
        let grad = GradLink::for_op(inputs, grad_fn);
        Tensor::from_parts(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), grad)
    }

    /// A view sharing this tensor's storage with another layout, recorded in the graph.
    pub(crate) fn view_op(&self, layout: Layout, grad_fn: impl FnOnce() -> Box<dyn GradFn>) -> Tensor {
        let grad = GradLink::for_op(&[self], grad_fn);
        Tensor::from_parts(self.0.storage.clone(), layout, grad)
    }

    /// A tensor from a vector of values and a shape.
    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let expected = shape.checked_elem_count("from_vec")?;
        if data.len() != expected {
            return Err(Error::ElementCount { op: "from_vec", got: data.len(), expected, shape });
        }
        Tensor::from_cpu_storage(T::into_storage(data), shape, device)
    }

    /// A tensor from a slice of values and a shape.
    pub fn from_slice<T: WithDType>(data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: WithDType>(value: T, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(vec![value], (), device)
    }

    /// Moves a host buffer onto `device` as a contiguous tensor.
    pub fn from_cpu_storage(storage: CpuStorage, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let expected = shape.checked_elem_count("from_cpu_storage")?;
        if storage.len() != expected {
            return Err(Error::ElementCount { op: "from_cpu_storage", got: storage.len(), expected, shape });
        }
        match device {
            Device::Cpu => Ok(Tensor::from_storage(Storage::Cpu(storage), shape)),
            other => {
                let dev = crate::gpu::gpu_device("from_cpu_storage", *other)?;
                let g = crate::gpu::GpuStorage::upload("from_cpu_storage", &dev, &storage)?;
                Ok(Tensor::from_storage(Storage::Gpu(g), shape))
            }
        }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("zeros")?;
        Tensor::from_cpu_storage(CpuStorage::zeros(dtype, n), shape, device)
    }

    /// A tensor of ones.
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    /// A tensor filled with `value` (converted to `dtype`).
    pub fn full(value: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.checked_elem_count("full")?;
        Tensor::from_cpu_storage(CpuStorage::full(dtype, n, value), shape, device)
    }

    /// Zeros with this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), &self.device())
    }

    /// Ones with this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), &self.device())
    }

    /// `value` everywhere with this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, self.shape(), self.dtype(), &self.device())
    }

    // ----- accessors ----------------------------------------------------------------------

    /// The unique id of this handle.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    /// The dims.
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    /// The size of one dim (negative dims count from the end).
    pub fn dim(&self, dim: impl crate::Dim) -> Result<usize> {
        Ok(self.dims()[dim.to_index(self.shape(), "dim")?])
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.shape().rank()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape().elem_count()
    }
    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// The device.
    pub fn device(&self) -> Device {
        self.0.device
    }
    /// The view's layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// Strides in elements.
    pub fn stride(&self) -> &[usize] {
        self.0.layout.strides()
    }
    /// Whether the view is row-major contiguous.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Whether two handles share one storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Read access to the storage (for backends and custom ops).
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().expect("storage lock poisoned")
    }

    /// Runs `f` on the CPU buffer and layout; errors on other devices.
    pub(crate) fn with_cpu<R>(&self, op: &'static str, f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>) -> Result<R> {
        let storage = self.storage();
        #[allow(unreachable_patterns)]
        match &*storage {
            Storage::Cpu(s) => f(s, self.layout()),
            _ => Err(self.device().unavailable(op)),
        }
    }

    /// A fresh contiguous copy of the viewed elements, on the same device.
    pub(crate) fn contiguous_copy(&self) -> Result<Storage> {
        match &*self.storage() {
            Storage::Cpu(s) => Ok(Storage::Cpu(s.copy_strided(self.layout()))),
            Storage::Gpu(g) => Ok(Storage::Gpu(crate::gpu::contiguous("contiguous", g, self.layout())?)),
        }
    }

    /// Runs `f` on the GPU buffer and layout; errors on the CPU.
    pub(crate) fn with_gpu<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&crate::gpu::GpuStorage, &Layout) -> Result<R>,
    ) -> Result<R> {
        match &*self.storage() {
            Storage::Gpu(g) => f(g, self.layout()),
            Storage::Cpu(_) => Err(Error::invalid(op, "expected a GPU tensor".to_string())),
        }
    }

    // ----- host access --------------------------------------------------------------------

    /// All elements in row-major order. Errors when `T` is not the tensor's dtype.
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let c = self.to_cpu_storage()?;
        Ok(T::slice(&c).expect("dtype checked").to_vec())
    }

    /// Elements of a rank-2 tensor as rows.
    pub fn to_vec2<T: WithDType>(&self) -> Result<Vec<Vec<T>>> {
        if self.rank() != 2 {
            return Err(Error::invalid("to_vec2", format!("expected a rank-2 tensor, got shape {:?}", self.shape())));
        }
        let cols = self.dims()[1];
        Ok(self.to_vec::<T>()?.chunks(cols.max(1)).map(|c| c.to_vec()).take(self.dims()[0]).collect())
    }

    /// The single element of a tensor with one element.
    pub fn to_scalar<T: WithDType>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::invalid("to_scalar", format!("expected one element, got shape {:?}", self.shape())));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// All elements converted to f64 (any dtype), row-major.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.to_dtype(DType::F64)?.to_vec::<f64>()
    }

    /// A contiguous copy of the elements as CPU storage.
    pub fn to_cpu_storage(&self) -> Result<CpuStorage> {
        match &*self.storage() {
            Storage::Cpu(s) => Ok(s.copy_strided(self.layout())),
            Storage::Gpu(g) => {
                const OP: &str = "to_cpu_storage";
                if self.layout().is_contiguous() && self.layout().offset() == 0 && g.len() == self.elem_count() {
                    return g.download(OP);
                }
                crate::gpu::contiguous(OP, g, self.layout())?.download(OP)
            }
        }
    }

    /// Moves (copies) the tensor to `device`. Differentiable.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if *device == self.device() {
            return Ok(self.clone());
        }
        let host = self.to_cpu_storage()?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(host),
            other => {
                let dev = crate::gpu::gpu_device("to_device", *other)?;
                Storage::Gpu(crate::gpu::GpuStorage::upload("to_device", &dev, &host)?)
            }
        };
        Ok(Tensor::from_op(storage, self.shape().clone(), &[self], || Box::new(ToDeviceBack(self.device()))))
    }

    /// Checks that two tensors share dtype and device.
    pub(crate) fn same_dtype_device(&self, other: &Tensor, op: &'static str) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device(), rhs: other.device() });
        }
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: other.dtype() });
        }
        Ok(())
    }
}

/// Backward of `to_device`: the gradient moves back to the source device.
struct ToDeviceBack(Device);
impl GradFn for ToDeviceBack {
    fn name(&self) -> &str {
        "to_device"
    }
    fn backward(&self, _i: &[Tensor], _o: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_device(&self.0)?)])
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}]", self.shape(), self.dtype(), self.device())
    }
}
