//! The PyTorch reference cases (benches/peers/make_attention_cases.py, computed in float64
//! with explicit masks) against the CPU flash attention and against the oracle. No Python is
//! needed: the generated file is committed.

use attune_attention::cases::{Backend, CaseResult, check_case, load_cases};
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_cases.safetensors")
}

fn run(backend: Backend) {
    let cases = load_cases(data()).expect("the committed case file loads");
    assert!(cases.len() >= 12, "expected the full case set, got {} cases", cases.len());
    let results: Vec<CaseResult> = cases.iter().map(|c| check_case(c, backend)).collect();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            let detail: Vec<String> = r
                .metrics
                .iter()
                .map(|m| {
                    format!("{} {:.3e}/{:.3e}{}", m.tensor, m.worst_err, m.worst_tol, if m.pass { "" } else { " FAIL" })
                })
                .collect();
            format!("{} ({}): {} {}", r.name, r.dtype, r.error.clone().unwrap_or_default(), detail.join(", "))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} torch cases failed on {backend}:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
    // Every case compares out and lse; all but the forward-only one compare the gradients.
    assert!(results.iter().all(|r| r.metric("out").is_some() && r.metric("lse").is_some()));
    assert!(results.iter().filter(|r| r.metric("dq").is_some()).count() >= results.len() - 1);
}

#[test]
fn torch_cases_pass_on_flash() {
    run(Backend::Flash);
}

/// Guards the semantics themselves: the f64 oracle and PyTorch's explicit masks agree.
#[test]
fn torch_cases_pass_on_oracle() {
    run(Backend::Oracle);
}

#[test]
fn torch_cases_cover_every_feature() {
    let cases = load_cases(data()).expect("the committed case file loads");
    let any = |f: &dyn Fn(&attune_attention::cases::Case) -> bool| cases.iter().any(f);
    assert!(any(&|c| c.params.causal));
    assert!(any(&|c| c.params.window.is_some()));
    assert!(any(&|c| c.params.softcap.is_some()));
    assert!(any(&|c| c.params.seqlens_k.is_some()));
    assert!(any(&|c| c.q.dims()[1] == 4 * c.k.dims()[1]), "GQA 4:1");
    assert!(any(&|c| c.k.dims()[1] == 1 && c.q.dims()[1] > 1), "MQA");
    assert!(any(&|c| c.q.dims()[2] != c.k.dims()[2]), "seq_q != seq_k");
    for dt in ["f32", "f16", "bf16"] {
        assert!(any(&|c| c.dtype().as_str() == dt), "a {dt} case");
    }
    // Fully masked rows: some expected lse is -inf.
    assert!(any(&|c| c.lse.as_ref().is_some_and(|l| l.to_f64_vec().unwrap().contains(&f64::NEG_INFINITY))));
}
