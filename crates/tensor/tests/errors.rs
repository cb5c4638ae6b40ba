//! Every class of user mistake is an error value whose message names the problem and the fix.

use attune_tensor::testing::test_device;
use attune_tensor::{DType, Device, Error, Infer, Tensor};

fn f32s(shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), shape, &test_device()).unwrap()
}

fn msg<T: std::fmt::Debug>(r: attune_tensor::Result<T>) -> (Error, String) {
    let e = r.unwrap_err();
    let s = e.to_string();
    (e, s)
}

#[test]
fn shape_mismatch_in_from_vec_names_counts_and_shape() {
    let (e, s) = msg(Tensor::from_vec(vec![1f32; 5], [2, 3], &test_device()));
    assert!(matches!(e, Error::ElementCount { .. }));
    assert!(s.contains("from_vec") && s.contains('5') && s.contains("[2, 3]") && s.contains('6'), "{s}");
}

#[test]
fn non_broadcastable_shapes_are_named() {
    let (e, s) = msg(f32s(&[2, 3]).add(&f32s(&[4])));
    assert!(matches!(e, Error::NotBroadcastable { .. }));
    assert!(s.contains("add") && s.contains("[2, 3]") && s.contains("[4]"), "{s}");
}

#[test]
fn dtype_mismatch_suggests_to_dtype() {
    let b = f32s(&[3]).to_dtype(DType::F64).unwrap();
    let (e, s) = msg(f32s(&[3]).mul(&b));
    assert!(matches!(e, Error::DTypeMismatch { .. }));
    assert!(s.contains("mul") && s.contains("f32") && s.contains("f64") && s.contains("to_dtype"), "{s}");
}

#[test]
fn float_only_ops_reject_integers() {
    let i = Tensor::from_vec(vec![1i64, 2], [2], &test_device()).unwrap();
    let (e, s) = msg(i.exp());
    assert!(matches!(e, Error::UnsupportedDType { .. }));
    assert!(s.contains("exp") && s.contains("i64"), "{s}");
}

#[test]
fn unavailable_devices_are_errors_not_panics() {
    // Without a GPU, Cuda is a typed error naming the device and the fix (the emulator, Emu,
    // is always available).
    if Device::cuda_is_available() {
        eprintln!("skipped: a GPU is present, so Device::Cuda(0) is available");
        return;
    }
    let dev = Device::Cuda(0);
    let (e, s) = msg(Tensor::zeros([2], DType::F32, &dev));
    assert!(matches!(e, Error::DeviceNotAvailable { .. }));
    assert!(s.contains(&dev.to_string()) && s.contains("Device::Cpu"), "{s}");
    let (_, s) = msg(f32s(&[2]).to_device(&dev));
    assert!(s.contains("to_device"), "{s}");
}

#[test]
fn bad_dims_name_the_valid_range() {
    let t = f32s(&[2, 3]);
    let (e, s) = msg(t.sum(2usize, false));
    assert!(matches!(e, Error::DimOutOfRange { .. }));
    assert!(s.contains("sum") && s.contains("dim 2") && s.contains("-2..2"), "{s}");
    let (_, s) = msg(t.transpose(0usize, -3isize));
    assert!(s.contains("transpose") && s.contains("-3"), "{s}");
    let (e, s) = msg(t.sum([1isize, -1], false));
    assert!(matches!(e, Error::DuplicateDim { .. }));
    assert!(s.contains("sum") && s.contains("more than once"), "{s}");
    let (e, _) = msg(t.permute([0usize, 0]));
    assert!(matches!(e, Error::DuplicateDim { .. }));
}

#[test]
fn out_of_range_views_are_errors() {
    let t = f32s(&[2, 3]);
    let (_, s) = msg(t.narrow(1usize, 2, 2));
    assert!(s.contains("narrow") && s.contains("2..4") && s.contains("size 3"), "{s}");
    let (e, s) = msg(t.select(0usize, 5));
    assert!(matches!(e, Error::IndexOutOfRange { .. }));
    assert!(s.contains("select") && s.contains('5'), "{s}");
    let (_, s) = msg(t.squeeze(0usize));
    assert!(s.contains("squeeze") && s.contains("size 2"), "{s}");
    let (_, s) = msg(t.reshape([4, 2]));
    assert!(s.contains("reshape") && s.contains("[4, 2]"), "{s}");
    let (_, s) = msg(t.reshape(Infer([-1, 4])));
    assert!(s.contains("-1") && s.contains("6 elements"), "{s}");
}

#[test]
fn cat_mismatch_names_the_dim() {
    let (e, s) = msg(Tensor::cat(&[f32s(&[2, 3]), f32s(&[2, 4])], 0usize));
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    assert!(s.contains("cat") && s.contains("[2, 3]") && s.contains("[2, 4]"), "{s}");
    let (_, s) = msg(Tensor::cat::<Tensor>(&[], 0usize));
    assert!(s.contains("at least one"), "{s}");
}

#[test]
fn wrong_host_type_is_a_dtype_error() {
    let (e, s) = msg(f32s(&[2]).to_vec::<f64>());
    assert!(matches!(e, Error::DTypeMismatch { .. }));
    assert!(s.contains("to_vec"), "{s}");
}
