//! The causal mask of flash attention, applied on the PE array (`tiling/attention.rs`,
//! `mask_chunk`: one more matmul adds twice the identity times a triangle of the largest
//! finite bf16, negated, to a chunk of scores that crosses the diagonal), on inputs whose
//! scores are huge (about 1e34): a masked score that did not become -inf would then be
//! the row's maximum for about half the rows and move the output to another key's value
//! row. With scores that far apart the softmax is exactly one-hot (each exponential is
//! exactly 0 or 1 in any order of evaluation), so the compiled kernel must give the
//! reference's bits under the default policy too, at diagonal offsets that are and are not
//! multiples of 128, partial query tiles and several heads.

use tessera::driver::{self, CompileOptions, Source};
use tessera::passes::fusion::Root;
use tessera::reference::HostTensor;

/// Runs `text` on inputs with q and k scaled by `scale` and returns the compiled kernel's
/// output and the reference's.
fn run_scaled(text: &str, scale: f32) -> (HostTensor, HostTensor) {
    let source = Source {
        name: "k.tsr".to_string(),
        text: text.to_string(),
    };
    let c = driver::compile(&source, &CompileOptions::default(), &mut String::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let flash = c.groups.as_ref().is_some_and(|g| {
        g.groups
            .iter()
            .any(|g| matches!(g.root, Root::Attention(_)))
    });
    assert!(flash, "not flash-lowered:\n{text}");
    let params = driver::params_of(&c.tensor);
    let inputs: Vec<HostTensor> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = driver::random_tensor(p, 1, i as u64);
            // q and k (the first two parameters) scaled; v as drawn.
            let s = if i < 2 { scale } else { 1.0 };
            let values: Vec<f32> = t.data.iter().map(|x| x * s).collect();
            HostTensor::from_f32(t.dtype, &t.shape, &values)
        })
        .collect();
    let program = driver::program_of(&c).expect("program");
    let (mut outputs, _) = driver::execute(program, &params, &inputs).expect("run");
    let mut want = tessera::reference::evaluate(&c.tensor, &inputs).expect("reference");
    (outputs.remove(0), want.remove(0))
}

fn kernel(heads: u64, sq: u64, sk: u64, d: u64, k: i64) -> String {
    format!(
        "kernel attention(q: bf16[{heads}, {sq}, {d}], k: bf16[{heads}, {sk}, {d}], v: bf16[{heads}, {sk}, {d}]) -> bf16[{heads}, {sq}, {d}] {{\n\
         let s = tril((q @ transpose(k)) * 0.125, k={k}, fill=-inf);\n\
         let e = exp(s - max(s, axis=-1, keepdims=true));\n\
         return ((e / sum(e, axis=-1, keepdims=true)) as bf16 @ v) as bf16;\n\
         }}\n"
    )
}

#[test]
fn huge_masked_scores_become_minus_infinity_on_the_pe_array() {
    // (heads, queries, keys, head dim, diagonal offset)
    let cases = [
        (2, 300, 300, 64, 0),
        (1, 640, 640, 128, 0),
        (3, 200, 700, 64, 77),
        (1, 130, 900, 128, 500),
    ];
    for (heads, sq, sk, d, k) in cases {
        let text = kernel(heads, sq, sk, d, k);
        let (got, want) = run_scaled(&text, 1.0e17);
        assert_eq!(got.data.len(), want.data.len());
        let mut differ = 0;
        for (g, w) in got.data.iter().zip(&want.data) {
            let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
            differ += usize::from(!same);
        }
        assert_eq!(
            differ,
            0,
            "{differ} of {} outputs differ from the reference (heads {heads}, S_q {sq}, \
             S_k {sk}, D {d}, k {k})",
            got.data.len()
        );
        // The case means something: the reference is finite everywhere (NaN rows would compare
        // equal without testing the mask).
        assert!(
            want.data.iter().all(|x| x.is_finite()),
            "reference not finite"
        );
    }
}
