//! The error function, written for attune-tensor (no libm `erf` on stable Rust).
//!
//! Accuracy (checked against mpmath at 40 digits and against quadrature in the tests):
//! `erf` within 3e-16 relative everywhere; `erfc` within 1e-15 relative for x < 1, 4e-15 for
//! x < 6 and 6e-14 up to its underflow near x = 26.5 (the rounding of x*x inside exp(-x*x)
//! dominates there: its relative error grows like x^2 * 1.1e-16).
//! f32 callers compute in f64 and round once: correctly rounded except, rarely, next to a
//! halfway point between two f32 values.
//!
//! Method: four polynomial pieces, each a Chebyshev least-squares fit made for this file with
//! `mpmath.chebyfit` at 40 digits (12 to 17 coefficients, fit error below 3e-17):
//! erf(x)/x in x^2 on |x| < 1, then e^(x^2) erfc(x) in x - 1.5 on [1, 2) and in x - 2.75 on
//! [2, 3.5), and x e^(x^2) erfc(x) in 12.25/x^2 beyond 3.5 (this form tends to 1/sqrt(pi), so
//! one polynomial covers the whole tail). Each piece's variable stays within [-1, 1], so the
//! monomial Horner form loses no accuracy. erf = 1 - erfc for |x| >= 1, where erfc < 0.16,
//! so the subtraction cancels nothing.

/// erf(x)/x as a polynomial in z = x^2 for |x| < 1.
// The constant term is the fit's value of 2/sqrt(pi), equal to it to the last digit.
#[allow(clippy::approx_constant)]
const P0: [f64; 12] = [
    -7.795898827002142e-10,
    1.3720064546777686e-08,
    -1.6208483801871705e-07,
    1.6447424703317362e-06,
    -1.492473690741966e-05,
    0.00012055294904839707,
    -0.0008548325975389692,
    0.0052239776071164225,
    -0.02686617064323777,
    0.11283791670945006,
    -0.37612638903183543,
    1.1283791670955126,
];

/// e^(x^2) erfc(x) as a polynomial in u = x - 1.5 for 1 <= x < 2.
const P1: [f64; 16] = [
    -4.932844202000261e-08,
    1.8038197652346406e-07,
    -5.946998373950516e-07,
    2.061689065129881e-06,
    -6.975285854904505e-06,
    2.286543658874603e-05,
    -7.265888759557882e-05,
    0.00022330981211640024,
    -0.0006619300686179933,
    0.0018861348854630824,
    -0.005145957547915988,
    0.013377340952802835,
    -0.03293090529956347,
    0.07615103985548055,
    -0.16362291773256007,
    0.3215854164543175,
];

/// e^(x^2) erfc(x) as a polynomial in u = x - 2.75 for 2 <= x < 3.5.
const P2: [f64; 17] = [
    8.831959586426476e-11,
    -4.056754880659121e-10,
    1.6207327188991065e-09,
    -7.156467021431838e-09,
    3.121415013712102e-08,
    -1.3264839014463818e-07,
    5.519743740073735e-07,
    -2.247366566986457e-06,
    8.94015629298454e-06,
    -3.469861074039318e-05,
    0.0001311818005084561,
    -0.00048219508487679243,
    0.0017195818852900986,
    -0.005934337897002171,
    0.019758592987322854,
    -0.06323763756063479,
    0.1936620962790687,
];

/// x e^(x^2) erfc(x) as a polynomial in v = 12.25 / x^2 for x >= 3.5 (v in (0, 1]).
const P3: [f64; 15] = [
    1.5409128434750463e-08,
    -1.3491458852535326e-07,
    5.615775710802918e-07,
    -1.5100720542034935e-06,
    3.0523861766763863e-06,
    -5.219771558432255e-06,
    8.444815455109856e-06,
    -1.4277235644759767e-05,
    2.709280630242683e-05,
    -6.039465688958212e-05,
    0.00016441785003357492,
    -0.0005754638547891971,
    0.0028197730114753916,
    -0.023028146267244202,
    0.5641895835477563,
];

/// Evaluates a polynomial given highest degree first. Plain multiply-add (no `mul_add`): the
/// baseline x86-64 target has no FMA instruction and `mul_add` would call libm.
#[inline(always)]
fn horner<const N: usize>(c: &[f64; N], v: f64) -> f64 {
    let mut r = c[0];
    for &a in &c[1..] {
        r = r * v + a;
    }
    r
}

/// erfc(x) for x >= 1 (also correct, NaN in and out, for NaN).
#[inline]
fn erfc_from_one(x: f64) -> f64 {
    let e = (-x * x).exp();
    if x < 2.0 {
        e * horner(&P1, x - 1.5)
    } else if x < 3.5 {
        e * horner(&P2, x - 2.75)
    } else {
        e / x * horner(&P3, 12.25 / (x * x))
    }
}

/// The error function `erf(x) = 2/sqrt(pi) * integral from 0 to x of e^(-t^2) dt`.
#[inline]
pub fn erf(x: f64) -> f64 {
    let a = x.abs();
    if a < 1.0 {
        return x * horner(&P0, x * x);
    }
    // Beyond 6, erfc(a) < 2.2e-17 and rounds away; `1 - 0` also covers infinity.
    let r = 1.0 - erfc_from_one(a);
    if x < 0.0 { -r } else { r }
}

/// The complementary error function `erfc(x) = 1 - erf(x)`, accurate relative to its own
/// (small) value for large positive x.
#[inline]
pub fn erfc(x: f64) -> f64 {
    if x < 1.0 {
        // erf(x) <= 0.85 here, so 1 - erf(x) >= 0.15 keeps full relative accuracy.
        1.0 - erf(x)
    } else {
        erfc_from_one(x)
    }
}

/// erf for f32, computed in f64 and rounded once.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    erf(x as f64) as f32
}
