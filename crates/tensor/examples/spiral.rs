//! Trains a 2-64-64-3 MLP on the three-arm spiral with attune-tensor's autograd and SGD with
//! momentum written on `Var::set`: the whole stack (creation, Philox noise, matmul,
//! broadcasting, relu, fused cross-entropy, backward, in-place updates) in one run.
//!
//! `cargo run --release -p attune-tensor --example spiral -- [--steps N] [--seed S]`

use attune_tensor::{CrossEntropyOpts, DType, Device, Result, Rng, Tensor, Var};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLASSES: usize = 3;
const PER_CLASS: usize = 200;

/// Points on three interleaved spiral arms with Gaussian angle noise, and their labels.
fn spiral(rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    let n = CLASSES * PER_CLASS;
    let noise = rng.randn([n], DType::F64, &Device::Cpu)?.to_vec::<f64>()?;
    let mut xs = Vec::with_capacity(2 * n);
    let mut ys = Vec::with_capacity(n);
    for c in 0..CLASSES {
        for i in 0..PER_CLASS {
            let r = i as f64 / PER_CLASS as f64;
            let t = c as f64 * 4.0 + r * 4.0 + noise[c * PER_CLASS + i] * 0.2;
            xs.extend([(r * t.sin()) as f32, (r * t.cos()) as f32]);
            ys.push(c as i64);
        }
    }
    Ok((Tensor::from_vec(xs, [n, 2], &Device::Cpu)?, Tensor::from_vec(ys, [n], &Device::Cpu)?))
}

/// A (fan_in, fan_out) weight with He-normal initialisation, and a zero bias.
fn layer(rng: &mut Rng, fan_in: usize, fan_out: usize) -> Result<(Var, Var)> {
    let w = rng.randn([fan_in, fan_out], DType::F32, &Device::Cpu)?.mul_scalar((2.0 / fan_in as f64).sqrt())?;
    Ok((w.to_var()?, Tensor::zeros([fan_out], DType::F32, &Device::Cpu)?.to_var()?))
}

fn parse_flag(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let steps = parse_flag("--steps", 1000);
    let mut rng = Rng::new(parse_flag("--seed", 0));
    let (x, y) = spiral(&mut rng)?;
    let (x_test, y_test) = spiral(&mut rng)?;
    let layers = [layer(&mut rng, 2, 64)?, layer(&mut rng, 64, 64)?, layer(&mut rng, 64, CLASSES)?];
    let params: Vec<&Var> = layers.iter().flat_map(|(w, b)| [w, b]).collect();
    let mut velocity: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect::<Result<_>>()?;
    let (lr, momentum) = (0.2, 0.9);

    let forward = |x: &Tensor| -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in layers.iter().enumerate() {
            h = h.matmul(w)?.add(b)?;
            if i + 1 < layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    };
    let accuracy = |logits: &Tensor, y: &Tensor| -> Result<f64> {
        let pred = logits.argmax(-1isize, false)?.to_vec::<i64>()?;
        let labels = y.to_vec::<i64>()?;
        Ok(pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64)
    };

    println!(
        "spiral: {} points, {CLASSES} classes, MLP 2-64-64-{CLASSES}, SGD lr {lr} momentum {momentum}",
        y.elem_count()
    );
    let start = Instant::now();
    let mut last = (f64::NAN, 0.0);
    for step in 1..=steps {
        let logits = forward(&x)?;
        let loss = logits.cross_entropy(&y, CrossEntropyOpts::default())?;
        let grads = loss.backward()?;
        for (p, v) in params.iter().zip(velocity.iter_mut()) {
            let g = grads.get(p).expect("every parameter is used");
            *v = v.mul_scalar(momentum)?.add(g)?;
            p.set(&p.sub(&v.mul_scalar(lr)?)?)?;
        }
        if step % 100 == 0 || step == steps {
            let test_logits = attune_tensor::with_no_grad(|| forward(&x_test))?;
            last = (loss.to_scalar::<f32>()? as f64, accuracy(&test_logits, &y_test)?);
            let train = accuracy(&logits, &y)?;
            println!(
                "step {step:>5}  loss {:.4}  train accuracy {:.1}%  held-out accuracy {:.1}%",
                last.0,
                100.0 * train,
                100.0 * last.1
            );
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The example doubles as a smoke test of the stack: a spiral this clean is learnt.
    if last.1 < 0.9 {
        eprintln!("held-out accuracy {:.1}% is below 90%: something in the stack is broken", 100.0 * last.1);
        std::process::exit(1);
    }
    println!(
        "done: {steps} steps in {elapsed:.2} s ({:.0} steps/s); final loss {:.4}, held-out accuracy {:.1}%",
        steps as f64 / elapsed,
        last.0,
        100.0 * last.1
    );
    Ok(())
}
