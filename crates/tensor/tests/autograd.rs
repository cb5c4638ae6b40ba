//! Autograd mechanics: accumulation over several uses, skipping constants, no-grad scopes,
//! graph release, variables updated in place, and gradient checks of the core ops.

use attune_tensor::grad_check::assert_grad;
use attune_tensor::testing::test_device;
use attune_tensor::{DType, Error, Result, Tensor, Var};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &test_device()).unwrap()
}

#[test]
fn gradients_accumulate_over_several_uses() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0, 2.0, 3.0], &[3]))?;
    // y = x*x + 3x  => dy/dx = 2x + 3
    let y = x.mul(&x)?.add(&x.mul_scalar(3.0)?)?.sum_all()?;
    let g = y.backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, vec![5.0, 7.0, 9.0]);
    Ok(())
}

#[test]
fn constants_get_no_gradient_and_are_not_recorded() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0, 2.0], &[2]))?;
    let c = t(&[5.0, 7.0], &[2]);
    let y = x.mul(&c)?.sum_all()?;
    let g = y.backward()?;
    assert!(g.get(&c).is_none());
    assert_eq!(g.len(), 1);
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, vec![5.0, 7.0]);
    assert!(!c.exp()?.requires_grad());
    Ok(())
}

#[test]
fn no_grad_scope_and_detach_cut_the_graph() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0], &[1]))?;
    let y = attune_tensor::with_no_grad(|| x.exp())?;
    assert!(!y.requires_grad());
    assert!(x.exp()?.requires_grad());
    assert!(!x.exp()?.detach().requires_grad());
    let e = y.sum_all()?.backward().unwrap_err();
    assert!(matches!(e, Error::NoGradient { .. }), "{e}");
    Ok(())
}

#[test]
fn backward_releases_the_graph_unless_retained() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0, 2.0], &[2]))?;
    let y = x.exp()?.sum_all()?;
    let g1 = y.backward_retain_graph()?;
    let g2 = y.backward()?;
    assert_eq!(g1.get(&x).unwrap().to_vec::<f64>()?, g2.get(&x).unwrap().to_vec::<f64>()?);
    let e = y.backward().unwrap_err().to_string();
    assert!(e.contains("released") && e.contains("retain"), "{e}");
    Ok(())
}

#[test]
fn var_set_updates_every_handle_in_place() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0, 2.0], &[2]))?;
    let handle = x.as_tensor().clone();
    x.set(&t(&[3.0, 4.0], &[2]))?;
    assert_eq!(handle.to_vec::<f64>()?, vec![3.0, 4.0]);
    let e = x.set(&t(&[1.0], &[1])).unwrap_err().to_string();
    assert!(e.contains("Var::set") && e.contains("[2]") && e.contains("[1]"), "{e}");
    Ok(())
}

#[test]
fn non_scalar_backward_needs_an_output_gradient() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0, 2.0], &[2]))?;
    let y = x.mul_scalar(2.0)?;
    let e = y.backward().unwrap_err().to_string();
    assert!(e.contains("one-element") && e.contains("backward_with"), "{e}");
    let g = y.backward_with(&t(&[1.0, 10.0], &[2]))?;
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, vec![2.0, 20.0]);
    Ok(())
}

#[test]
fn a_deep_chain_does_not_overflow_the_stack() -> Result<()> {
    let x = Var::from_tensor(&t(&[1.0], &[1]))?;
    let mut y = x.as_tensor().clone();
    for _ in 0..20_000 {
        y = y.add_scalar(1.0)?;
    }
    let g = y.sum_all()?.backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, vec![1.0]);
    Ok(())
}

#[test]
fn a_deep_graph_dropped_without_backward_does_not_overflow_the_stack() -> Result<()> {
    // Dropping a graph is recursive by default; 100k nodes would exhaust a 2 MiB test stack.
    let x = Var::from_tensor(&t(&[1.0], &[1]))?;
    let mut y = x.as_tensor().clone();
    for _ in 0..100_000 {
        y = y.add_scalar(1.0)?;
    }
    assert_eq!(y.to_vec::<f64>()?, vec![100_001.0]);
    drop(y);
    Ok(())
}

#[test]
fn core_ops_pass_finite_difference_checks() -> Result<()> {
    let a = t(&[0.3, -1.2, 0.7, 2.0, -0.4, 1.1], &[2, 3]);
    let b = t(&[0.9, 1.5, -0.6], &[3]);
    assert_grad("add", |x| x[0].add(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("sub", |x| x[0].sub(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("mul", |x| x[0].mul(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("div", |x| x[0].div(&x[1]), &[a.clone(), b.clone()], 1e-6)?;
    assert_grad("exp", |x| x[0].exp(), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("log", |x| x[0].exp()?.log(), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("sum", |x| x[0].sum(0usize, false), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("mean keepdim", |x| x[0].mean(-1isize, true), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("transpose", |x| x[0].t()?.mul(&x[0].t()?), std::slice::from_ref(&a), 1e-6)?;
    assert_grad("narrow", |x| x[0].narrow(1usize, 1, 2)?.exp(), std::slice::from_ref(&a), 1e-6)?;
    assert_grad(
        "cat",
        |x| Tensor::cat(&[x[0].clone(), x[1].unsqueeze(0usize)?], 0usize),
        &[a.clone(), b.clone()],
        1e-6,
    )?;
    assert_grad("broadcast", |x| x[0].broadcast_as([4, 3]), std::slice::from_ref(&b), 1e-6)?;
    assert_grad("reshape", |x| x[0].t()?.reshape([3, 2])?.exp(), std::slice::from_ref(&a), 1e-6)?;
    // Through f32 the function is linear but rounded: a large step keeps rounding negligible.
    let r = attune_tensor::grad_check::grad_check(
        |x| x[0].to_dtype(DType::F32)?.to_dtype(DType::F64),
        std::slice::from_ref(&a),
        1e-2,
    )?;
    assert!(r.max_rel_err < 1e-4, "{r:?}");
    Ok(())
}

#[test]
fn grad_check_detects_a_wrong_gradient() {
    // exp().detach() has zero analytic gradient but a non-zero numeric one.
    let a = t(&[0.3, -1.2], &[2]);
    assert!(assert_grad("broken", |x| x[0].exp().map(|e| e.detach()), &[a], 1e-6).is_err());
}
