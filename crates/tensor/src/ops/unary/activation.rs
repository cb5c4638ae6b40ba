//! Activations: relu, sigmoid, silu and the two GELU forms.
//!
//! Logistic forms are written as `x / (1 + e^-z)`, which stays accurate where the textbook
//! `0.5 * x * (1 + tanh(z/2))` cancels (large negative x, where 1 + tanh is tiny).

use super::special::erfc;
use super::{Saved, UnaryKernel, kernel, kernel_back, unary_op, unary_op_any};
use crate::cpu::math::{FastExp, mul_add};
use crate::{Result, Tensor};
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

/// sqrt(2/pi), the scale of the tanh approximation of GELU.
const GELU_K: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2;
/// The cubic coefficient of the tanh approximation of GELU.
const GELU_C: f64 = 0.044715;
/// 1/sqrt(2 pi), the peak of the standard normal density.
const INV_SQRT_2PI: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 * 0.5;

// relu passes NaN through (NaN < 0 is false) and has derivative 0 at 0, like PyTorch.
kernel!(Relu, "relu", |x| if x < 0.0 { 0.0 } else { x });
kernel!(ReluGrad, "relu_backward", |x| if x > 0.0 { 1.0 } else { 0.0 });
kernel!(Sigmoid, "sigmoid", |x| 1.0 / (1.0 + (-x).fexp()));
kernel!(SigmoidGrad, "sigmoid_backward", |y| y * (1.0 - y));
kernel!(Silu, "silu", |x| x / (1.0 + (-x).fexp()));
kernel!(SiluGrad, "silu_backward", |x| {
    let s = 1.0 / (1.0 + (-x).fexp());
    s * (1.0 + x * (1.0 - s))
});

/// GELU, tanh approximation: `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`,
/// computed as the equal `x * sigmoid(2u)`.
pub(crate) struct Gelu;
impl UnaryKernel for Gelu {
    const NAME: &'static str = "gelu";
    #[inline(always)]
    fn f32(x: f32) -> f32 {
        let u2 = (2.0 * GELU_K) as f32 * (x + GELU_C as f32 * x * x * x);
        x / (1.0 + (-u2).fexp())
    }
    #[inline(always)]
    fn f64(x: f64) -> f64 {
        let u2 = 2.0 * GELU_K * (x + GELU_C * x * x * x);
        x / (1.0 + (-u2).fexp())
    }
}

/// d/dx of [`Gelu`]: `s + x s (1 - s) 2u'` with `s = sigmoid(2u)`, `u' = sqrt(2/pi) (1 + 3c x^2)`.
pub(crate) struct GeluGrad;
impl UnaryKernel for GeluGrad {
    const NAME: &'static str = "gelu_backward";
    #[inline(always)]
    fn f32(x: f32) -> f32 {
        let (k, c) = (GELU_K as f32, GELU_C as f32);
        let s = 1.0 / (1.0 + (-2.0 * k * (x + c * x * x * x)).fexp());
        let t = s * (1.0 - s);
        // t == 0 where s saturates; skipping the product avoids 0 * inf for huge |x|.
        if t == 0.0 { s } else { s + t * x * 2.0 * k * (1.0 + 3.0 * c * x * x) }
    }
    #[inline(always)]
    fn f64(x: f64) -> f64 {
        let (k, c) = (GELU_K, GELU_C);
        let s = 1.0 / (1.0 + (-2.0 * k * (x + c * x * x * x)).fexp());
        let t = s * (1.0 - s);
        if t == 0.0 { s } else { s + t * x * 2.0 * k * (1.0 + 3.0 * c * x * x) }
    }
}

/// `erfc(z)` in f32 without libm calls, so GELU loops vectorise: the Chebyshev fit of
/// Numerical Recipes' `erfcc` (`t = 1/(1 + z/2)`, `erfc(z) = t exp(-z^2 + P(t))`, relative
/// error below 1.2e-7 for z >= 0), with `erfc(-z) = 2 - erfc(z)` for negative arguments.
#[inline(always)]
#[allow(clippy::excessive_precision)]
fn erfc_f32(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / mul_add(0.5, a, 1.0);
    // The fit's coefficients, highest degree first.
    let mut p = 0.170_872_8;
    for c in
        [-0.822_152_2, 1.488_515_9, -1.135_204, 0.278_868_07, -0.186_288_06, 0.096_784_18, 0.374_091_96, 1.000_023_7]
    {
        p = mul_add(p, t, c);
    }
    let p = mul_add(p, t, -1.265_512_2);
    let e = t * mul_add(-a, a, p).fexp();
    if z < 0.0 { 2.0 - e } else { e }
}

/// Exact GELU `x * Phi(x) = 0.5 x erfc(-x / sqrt 2)`: f64 through [`erfc`], f32 through
/// [`erfc_f32`]; erfc keeps the relative accuracy for negative x where `1 + erf` would cancel.
pub(crate) struct GeluErf;
impl UnaryKernel for GeluErf {
    const NAME: &'static str = "gelu_erf";
    #[inline(always)]
    fn f32(x: f32) -> f32 {
        0.5 * x * erfc_f32(-x * FRAC_1_SQRT_2 as f32)
    }
    #[inline]
    fn f64(x: f64) -> f64 {
        0.5 * x * erfc(-x * FRAC_1_SQRT_2)
    }
}

/// d/dx of exact GELU: `Phi(x) + x phi(x)`.
pub(crate) struct GeluErfGrad;
impl UnaryKernel for GeluErfGrad {
    const NAME: &'static str = "gelu_erf_backward";
    #[inline(always)]
    fn f32(x: f32) -> f32 {
        0.5 * erfc_f32(-x * FRAC_1_SQRT_2 as f32) + x * INV_SQRT_2PI as f32 * (-0.5 * x * x).fexp()
    }
    #[inline]
    fn f64(x: f64) -> f64 {
        0.5 * erfc(-x * FRAC_1_SQRT_2) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
    }
}

impl Tensor {
    /// `max(self, 0)` (NaN stays NaN; also for integers). The gradient at 0 is 0, like PyTorch.
    pub fn relu(&self) -> Result<Tensor> {
        unary_op_any(
            self,
            "relu",
            [0.0; 2],
            Relu::f32,
            Relu::f64,
            |x| x.max(0),
            || kernel_back::<ReluGrad>("relu", Saved::Input),
        )
    }
    /// The logistic function `1 / (1 + e^-self)`.
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary_op::<Sigmoid>(self, || kernel_back::<SigmoidGrad>("sigmoid", Saved::Output))
    }
    /// SiLU (swish): `self * sigmoid(self)`.
    pub fn silu(&self) -> Result<Tensor> {
        unary_op::<Silu>(self, || kernel_back::<SiluGrad>("silu", Saved::Input))
    }
    /// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`, GPT-2's form):
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    pub fn gelu(&self) -> Result<Tensor> {
        unary_op::<Gelu>(self, || kernel_back::<GeluGrad>("gelu", Saved::Input))
    }
    /// Exact GELU `x * Phi(x)` with the normal CDF `Phi` from erf (PyTorch's default `gelu`).
    /// f64 is accurate to a few ulp; f32 and lower use a vectorisable f32 erfc (relative error
    /// about 1e-6 at worst, far below what training notices, and 10x faster than scalar f64).
    pub fn gelu_erf(&self) -> Result<Tensor> {
        unary_op::<GeluErf>(self, || kernel_back::<GeluErfGrad>("gelu_erf", Saved::Input))
    }
}
