//! Views share storage and copy nothing; `contiguous()` copies only when needed; every view
//! reads the right elements for every dtype.

use attune_tensor::testing::test_device;
use attune_tensor::{DType, Infer, Result, Tensor};

fn iota(shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f64).collect::<Vec<_>>(), shape, &test_device())
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Element of a row-major [d0, d1, d2] iota at (i, j, k).
fn at(dims: &[usize], idx: &[usize]) -> f64 {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i) as f64
}

#[test]
fn views_share_storage_and_read_the_right_elements_for_every_dtype() -> Result<()> {
    for dtype in DType::ALL {
        let t = iota(&[2, 3, 4], dtype);
        let p = t.permute([2usize, 0, 1])?;
        assert!(p.same_storage(&t) && !p.is_contiguous());
        assert_eq!(p.dims(), &[4, 2, 3]);
        let got = p.to_f64_vec()?;
        let mut want = vec![];
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    want.push(at(&[2, 3, 4], &[i, j, k]));
                }
            }
        }
        assert_eq!(got, want, "{dtype}");
        let n = t.narrow(-1isize, 1, 2)?.narrow(1usize, 2, 1)?;
        assert!(n.same_storage(&t));
        assert_eq!(n.to_f64_vec()?, vec![at(&[2, 3, 4], &[0, 2, 1]), 10.0, at(&[2, 3, 4], &[1, 2, 1]), 22.0]);
        let c = p.contiguous()?;
        assert!(!c.same_storage(&t) && c.is_contiguous());
        assert_eq!(c.to_f64_vec()?, want);
        assert!(t.contiguous()?.same_storage(&t), "contiguous() of contiguous data must not copy");
    }
    Ok(())
}

#[test]
fn reshape_is_a_view_on_contiguous_data_and_copies_otherwise() -> Result<()> {
    let t = iota(&[2, 3, 4], DType::F32);
    let r = t.reshape(Infer([-1, 4]))?;
    assert!(r.same_storage(&t));
    assert_eq!(r.dims(), &[6, 4]);
    let tt = t.transpose(0usize, 2usize)?;
    let r2 = tt.reshape([24])?;
    assert!(!r2.same_storage(&t));
    assert_eq!(r2.to_f64_vec()?, tt.contiguous()?.to_f64_vec()?);
    assert_eq!(t.flatten(1usize, 2usize)?.dims(), &[2, 12]);
    assert_eq!(t.flatten_all()?.dims(), &[24]);
    Ok(())
}

#[test]
fn broadcast_expand_squeeze_unsqueeze() -> Result<()> {
    let t = iota(&[3, 1], DType::F64);
    let b = t.broadcast_as([2, 3, 4])?;
    assert!(b.same_storage(&t));
    assert_eq!(b.stride(), &[0, 1, 0]);
    let v = b.to_f64_vec()?;
    for (i, x) in v.iter().enumerate() {
        assert_eq!(*x, ((i / 4) % 3) as f64);
    }
    assert_eq!(t.expand(&[5, -1, 2])?.dims(), &[5, 3, 2]);
    let u = t.unsqueeze(0usize)?.unsqueeze(-1isize)?;
    assert_eq!(u.dims(), &[1, 3, 1, 1]);
    assert_eq!(u.squeeze(0usize)?.squeeze(-1isize)?.dims(), &[3, 1]);
    assert_eq!(t.select(0usize, 2)?.to_f64_vec()?, vec![2.0]);
    Ok(())
}

#[test]
fn zero_size_dims_work_through_views_and_ops() -> Result<()> {
    let t = Tensor::zeros([2, 0, 3], DType::F32, &test_device())?;
    assert_eq!(t.elem_count(), 0);
    assert_eq!(t.transpose(0usize, 2usize)?.contiguous()?.dims(), &[3, 0, 2]);
    assert_eq!(t.sum(1usize, false)?.to_vec::<f32>()?, vec![0.0; 6]);
    assert_eq!(t.exp()?.add(&t)?.dims(), &[2, 0, 3]);
    assert_eq!(Tensor::cat(&[t.clone(), t.clone()], 1usize)?.dims(), &[2, 0, 3]);
    Ok(())
}

#[test]
fn ops_on_non_contiguous_views_match_contiguous_copies() -> Result<()> {
    let a = iota(&[4, 5], DType::F32).t()?; // [5, 4], strides [1, 5]
    let b = iota(&[5, 6], DType::F32).narrow(1usize, 1, 4)?; // [5, 4], strides [6, 1]
    let got = a.mul(&b)?.add(&a)?.to_f64_vec()?;
    let (ac, bc) = (a.contiguous()?, b.contiguous()?);
    let want = ac.mul(&bc)?.add(&ac)?.to_f64_vec()?;
    assert_eq!(got, want);
    assert_eq!(a.sum(0usize, false)?.to_f64_vec()?, ac.sum(0usize, false)?.to_f64_vec()?);
    Ok(())
}

#[test]
fn low_precision_dtypes_are_stored_as_such() -> Result<()> {
    let t = Tensor::from_vec(vec![1.0f32, 1.0 + 1.0 / 1024.0, 1.0 / 3.0], [3], &test_device())?;
    let h = t.to_dtype(DType::F16)?;
    let b = t.to_dtype(DType::BF16)?;
    assert_eq!(h.to_vec::<half::f16>()?[1].to_f32(), 1.0 + 1.0 / 1024.0);
    assert_eq!(b.to_vec::<half::bf16>()?[1].to_f32(), 1.0, "bf16 has 8 mantissa bits");
    let s = h.add(&h)?.to_vec::<half::f16>()?;
    assert_eq!(s[2], half::f16::from_f32(2.0 * half::f16::from_f32(1.0 / 3.0).to_f32()));
    Ok(())
}
