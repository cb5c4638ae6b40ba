//! HardAttentionPooling: the draw follows the attention distribution and respects lengths, the
//! log-probability and the pooled vector are what they claim with finite-difference gradients,
//! the discrete choice passes no gradient to the scorer, and REINFORCE alone teaches the scorer
//! where the informative token is.

mod common;

use attune_nn::reinforce::reinforce_loss;
use attune_nn::{AttentionPooling, HardAttentionPooling, NnError, ParamBuilder, ParamStore};
use attune_optim::{Adam, AdamConfig, Optimizer, ParamGroup};
use attune_tensor::{DType, Device, Rng, Tensor};
use common::{check_grads, randn_var};

const CPU: Device = Device::Cpu;

fn layer(seed: u64, dim: usize, k: usize) -> (ParamStore, HardAttentionPooling) {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, seed, DType::F64, &CPU);
    let pool = HardAttentionPooling::new(&pb.sub("pool"), dim, k).unwrap();
    (store, pool)
}

#[test]
fn draws_follow_the_attention_distribution_and_never_pass_a_length() {
    let n = 20_000;
    let (_store, pool) = layer(3, 4, n);
    let x = randn_var(&[2, 6, 4], 5);
    let lens = [6usize, 3];
    let out = pool.sample(&x, Some(&lens), &mut Rng::new(11)).unwrap();
    let w = out.weights.to_vec2::<f64>().unwrap();
    for (row, len) in lens.iter().enumerate() {
        assert_eq!(out.positions[row].len(), n);
        let mut counts = [0usize; 6];
        for &p in &out.positions[row] {
            counts[p] += 1;
        }
        assert!(counts[*len..].iter().all(|&c| c == 0), "row {row}: drew past its length {len}: {counts:?}");
        for (i, &c) in counts[..*len].iter().enumerate() {
            let p = w[row][i];
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let freq = c as f64 / n as f64;
            assert!((freq - p).abs() < 4.0 * se + 1e-12, "row {row} pos {i}: frequency {freq} vs weight {p}");
        }
    }
}

#[test]
fn log_prob_and_pooled_are_the_drawn_positions_and_match_the_soft_layers_weights() {
    let (store, pool) = layer(4, 4, 3);
    let x = randn_var(&[2, 5, 4], 6);
    let lens = [5usize, 2];
    let out = pool.sample(&x, Some(&lens), &mut Rng::new(1)).unwrap();
    // The soft layer built from the same seed holds the same parameters and gives the same
    // distribution.
    let soft_store = ParamStore::new();
    let soft = AttentionPooling::new(&ParamBuilder::new(&soft_store, 4, DType::F64, &CPU).sub("pool"), 4).unwrap();
    let values = |s: &ParamStore| -> Vec<(String, Vec<f64>)> {
        s.state_dict().into_iter().map(|(n, t)| (n, t.to_vec::<f64>().unwrap())).collect()
    };
    assert_eq!(values(&store), values(&soft_store), "one parameterisation for the soft and the hard layer");
    let (_, soft_w) = soft.forward(&x, Some(&lens)).unwrap();
    let (w, sw) = (out.weights.to_vec2::<f64>().unwrap(), soft_w.to_vec2::<f64>().unwrap());
    let xv = x.to_vec::<f64>().unwrap();
    let (lp, pooled) = (out.log_prob.to_vec::<f64>().unwrap(), out.pooled.to_vec2::<f64>().unwrap());
    for row in 0..2 {
        for i in 0..5 {
            assert!((w[row][i] - sw[row][i]).abs() < 1e-12, "weights differ from AttentionPooling's");
        }
        let want: f64 = out.positions[row].iter().map(|&p| w[row][p].ln()).sum();
        assert!((lp[row] - want).abs() < 1e-10, "row {row}: log_prob {} vs {want}", lp[row]);
        for d in 0..4 {
            let mean = out.positions[row].iter().map(|&p| xv[(row * 5 + p) * 4 + d]).sum::<f64>() / 3.0;
            assert!((pooled[row][d] - mean).abs() < 1e-12);
        }
    }
}

#[test]
fn log_prob_and_pooled_gradients_match_finite_differences() {
    let (store, pool) = layer(5, 3, 2);
    let x = randn_var(&[2, 4, 3], 8);
    let lens = [4usize, 3];
    // A fresh generator per call: the same draw every time, so only the parameters move.
    let f = || pool.sample(&x, Some(&lens), &mut Rng::new(9)).unwrap();
    check_grads("log_prob", &store, std::slice::from_ref(&x), || f().log_prob, 12, 1e-6);
    check_grads("pooled", &store, std::slice::from_ref(&x), || f().pooled, 12, 1e-6);
}

#[test]
fn the_discrete_choice_sends_no_gradient_to_the_scorer() {
    let (store, pool) = layer(6, 4, 2);
    let x = randn_var(&[3, 5, 4], 2);
    let out = pool.sample(&x, None, &mut Rng::new(3)).unwrap();
    let grads = out.pooled.sum_all().unwrap().backward().unwrap();
    for (name, v) in store.named() {
        let g = grads.get(&v).map(|g| g.to_vec::<f64>().unwrap()).unwrap_or_default();
        assert!(g.iter().all(|&v| v == 0.0), "{name} got a gradient through the sampled positions");
    }
    let gx = grads.get(&x).expect("the tokens get the pooled vector's gradient").to_vec::<f64>().unwrap();
    assert!(gx.iter().any(|&v| v != 0.0));
}

#[test]
fn greedy_takes_the_most_probable_distinct_positions_within_the_length() {
    let (_store, pool) = layer(7, 4, 3);
    let x = randn_var(&[2, 6, 4], 4);
    let lens = [6usize, 2];
    let out = pool.greedy(&x, Some(&lens)).unwrap();
    let w = out.weights.to_vec2::<f64>().unwrap();
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|&i, &j| w[0][j].total_cmp(&w[0][i]));
    assert_eq!(out.positions[0], order[..3].to_vec());
    // Two valid positions for three picks: the best two, then the best again.
    let best = if w[1][0] >= w[1][1] { [0, 1, 0] } else { [1, 0, 1] };
    assert_eq!(out.positions[1], best.to_vec());
}

/// A bandit over positions: each sequence hides one marked token (feature 0 set) at a random
/// position among noise tokens, and the reward is 1 when the single draw finds it. Nothing but
/// REINFORCE reaches the scorer, and it must learn to put most of its weight on the mark.
#[test]
fn reinforce_alone_teaches_the_scorer_where_the_marked_token_is() {
    let (batch, len, dim) = (32, 8, 4);
    let (store, pool) = layer(8, dim, 1);
    let group = ParamGroup::new(store.named());
    let mut adam = Adam::new(vec![group], AdamConfig { lr: 0.05, ..AdamConfig::default() }).unwrap();
    let mut rng = Rng::new(21);
    let mut data_rng = Rng::new(22);
    let mut mark_weight = Vec::new();
    for _ in 0..150 {
        let noise = data_rng.randn([batch, len, dim], DType::F64, &CPU).unwrap().mul_scalar(0.3).unwrap();
        let mut xv = noise.to_vec::<f64>().unwrap();
        let picks = data_rng.rand([batch], DType::F64, &CPU).unwrap().to_vec::<f64>().unwrap();
        let marks: Vec<usize> = picks.iter().map(|u| ((u * len as f64) as usize).min(len - 1)).collect();
        for (b, &m) in marks.iter().enumerate() {
            xv[(b * len + m) * dim] += 2.0;
        }
        let x = Tensor::from_vec(xv, [batch, len, dim], &CPU).unwrap();
        let out = pool.sample(&x, None, &mut rng).unwrap();
        let rewards: Vec<f64> = (0..batch).map(|b| f64::from(out.positions[b][0] == marks[b])).collect();
        let w = out.weights.to_vec2::<f64>().unwrap();
        mark_weight.push(marks.iter().enumerate().map(|(b, &m)| w[b][m]).sum::<f64>() / batch as f64);
        let mean_reward = rewards.iter().sum::<f64>() / batch as f64;
        let baseline = Tensor::from_vec(vec![mean_reward; batch], [batch, 1], &CPU).unwrap();
        let r = Tensor::from_vec(rewards, [batch], &CPU).unwrap();
        let loss = reinforce_loss(&out.log_prob.unsqueeze(1usize).unwrap(), &r, Some(&baseline)).unwrap();
        adam.step(&loss.policy.backward().unwrap()).unwrap();
    }
    let start = mark_weight[..10].iter().sum::<f64>() / 10.0;
    let end = mark_weight[140..].iter().sum::<f64>() / 10.0;
    eprintln!("weight on the marked token: {start:.3} over the first 10 steps, {end:.3} over the last 10");
    assert!(start < 0.3, "the untrained scorer should be near uniform (1/8), got {start}");
    assert!(end > 0.8, "after 150 REINFORCE steps the mark holds {end} of the weight (from {start})");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let store = ParamStore::new();
    let pb = ParamBuilder::new(&store, 1, DType::F64, &CPU);
    assert!(matches!(HardAttentionPooling::new(&pb, 4, 0), Err(NnError::Input { .. })));
    let (_s, pool) = layer(2, 4, 2);
    let flat = randn_var(&[2, 4], 1);
    assert!(matches!(pool.sample(&flat, None, &mut Rng::new(1)), Err(NnError::Input { .. })));
    let x = randn_var(&[2, 3, 4], 1);
    assert!(matches!(pool.greedy(&x, Some(&[3, 0])), Err(NnError::Input { .. })));
    assert!(matches!(pool.sample(&x, Some(&[4, 1]), &mut Rng::new(1)), Err(NnError::Input { .. })));
}
