//! `probe.safetensors`: a few held-out inputs (`tokens`, or a Vision Transformer's `images`)
//! and the logits Attune computes for them in eval mode, so `benches/peers/torch_train.py check --checkpoint DIR` can load the checkpoint into
//! PyTorch and compare.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use attune_nn::Ctx;
use attune_tensor::{DType, Device, Tensor};

use crate::batch::DeviceBatch;
use crate::net::Net;
use crate::tasks::{Split, Task};

/// Writes `dir/probe.safetensors` from 4 validation examples (training ones without a valid
/// split); nothing for the RAM, which has no PyTorch peer yet.
pub fn write(dir: &Path, net: &Net, task: &dyn Task, device: &Device) -> Result<()> {
    let Some(model) = net.transformer() else {
        return Ok(());
    };
    let _guard = attune_tensor::no_grad();
    // A run that trains on every example (valid_fraction 0) probes with training examples.
    let split = if task.split_size(Split::Valid) == Some(0) { Split::Train } else { Split::Valid };
    let batch = DeviceBatch::new(&task.batch(split, 0, 4)?, device)?;
    let logits = model.forward(batch.input(), batch.lengths.as_deref(), &mut Ctx::eval())?;
    // A Vision Transformer's input is images, under their own key.
    let input = if batch.images.is_some() { "images" } else { "tokens" };
    let mut tensors =
        vec![(input.to_string(), batch.input().clone()), ("logits".to_string(), logits.to_dtype(DType::F32)?)];
    if let Some(l) = &batch.lengths {
        let l: Vec<i64> = l.iter().map(|&v| v as i64).collect();
        tensors.push(("lengths".to_string(), Tensor::from_vec(l.clone(), [l.len()], device)?));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    attune_nn::checkpoint::save_tensors(&dir.join("probe.safetensors"), &tensors, Some(meta))?;
    Ok(())
}
