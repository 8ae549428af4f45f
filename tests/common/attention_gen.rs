//! A random generator of attention kernels as users write them, for the differential
//! test's second mode: the compositions around matmuls and softmax that the chain
//! generator (`kernel_gen`) never makes, where fusion once gave silent wrong answers.
//!
//! Each kernel computes `softmax(q @ k^T [* c] [masked]) @ v` with a random choice of:
//! - producers of q, k and v: parameters of any dtype, casts from f32, scalings,
//!   activations, projections `(x @ w) as bf16` of one shared input;
//! - operand forms: K given as `k` (used as `transpose(k)`) or as `kt`, V given as `v`, as
//!   `transpose(vt)` or as `reshape(vflat, [S, D])`;
//! - the probabilities' dtype (f32, bf16, f16, both FP8) and the output's (the same five),
//!   normalisation before or after the second matmul;
//! - a causal mask (`tril` with `-inf`, `k` from -1 to a few), a head or batch axis, and
//!   grouped-query sharing (K and V with a 1 on the group axis, broadcast over it, or
//!   with fewer leading axes than q);
//! - results used twice (the scores' row maximum or the probabilities' row sum returned
//!   as well, which keeps the pattern from being fused).
//!
//! Sizes are small (at most a few hundred queries and keys, with now and then more than
//! one 512-key block) so that hundreds of cases run in CI. Every kernel checks; the
//! differential test runs it under the default policy and under strict.

use super::kernel_gen::Rng;

/// A generated attention kernel.
#[derive(Clone, Debug)]
pub struct AttnKernel {
    pub source: String,
    /// The compositions it exercises, for the coverage count (`q:proj`, `p:f8e4m3`, ...).
    pub features: Vec<String>,
}

const DTYPES: [&str; 5] = ["f32", "bf16", "f16", "f8e4m3", "f8e5m2"];

/// The state of one kernel under construction.
struct Gen {
    r: Rng,
    params: Vec<String>,
    features: Vec<String>,
    lead: Vec<u64>,
    /// K's and V's leading axes, when they differ from q's (grouped-query attention).
    kv_lead: Option<Vec<u64>>,
    in_dtype: &'static str,
    projected: bool,
}

impl Gen {
    /// The dims of a tensor with the leading axes, then `rows` and `cols`.
    fn dims(&self, rows: &str, cols: &str) -> String {
        let mut all: Vec<String> = self.lead.iter().map(|x| x.to_string()).collect();
        all.push(rows.to_string());
        all.push(cols.to_string());
        all.join(", ")
    }

    /// The dims of operand `name` (K and V take `kv_lead` when it is set).
    fn dims_of(&self, name: &str, rows: &str, cols: &str) -> String {
        match &self.kv_lead {
            Some(lead) if name != "q" => {
                let mut all: Vec<String> = lead.iter().map(|x| x.to_string()).collect();
                all.push(rows.to_string());
                all.push(cols.to_string());
                all.join(", ")
            }
            _ => self.dims(rows, cols),
        }
    }

    /// An operand `name` of `rows x cols` from a random producer; returns its expression.
    fn produce(&mut self, name: &str, rows: &str, cols: &str) -> String {
        let shape = self.dims_of(name, rows, cols);
        let d = self.in_dtype;
        if self.projected && self.r.chance(0.7) {
            self.params.push(format!("w{name}: bf16[E, {cols}]"));
            self.features.push(format!("{name}:proj"));
            return format!("((x @ w{name}) as bf16)");
        }
        let (param, expr, feature) = match self.r.below(6) {
            0 => (
                format!("{name}32: f32[{shape}]"),
                format!("({name}32 as {d})"),
                "cast",
            ),
            1 => (
                format!("{name}: {d}[{shape}]"),
                format!("(({name} * 2.0) as {d})"),
                "scaled",
            ),
            2 => (
                format!("{name}32: f32[{shape}]"),
                format!("(silu({name}32) as {d})"),
                "silu",
            ),
            _ => (format!("{name}: {d}[{shape}]"), name.to_string(), "param"),
        };
        self.params.push(param);
        self.features.push(format!("{name}:{feature}"));
        expr
    }
}

/// Generates the kernel of `seed`.
pub fn generate_attention(seed: u64) -> AttnKernel {
    let mut r = Rng::new(seed ^ 0xA77E_2026);
    // Sizes: mostly small; one case in eight crosses a 512-key block.
    let sq = if r.chance(0.15) {
        1 + r.below(4)
    } else {
        1 + r.below(200)
    };
    let mut sk = if r.chance(0.125) {
        513 + r.below(300)
    } else {
        1 + r.below(260)
    };
    let d = r.pick(&[4u64, 8, 16, 32, 64, 96, 128]);
    let dv = if r.chance(0.7) {
        d
    } else {
        r.pick(&[8u64, 32, 64, 200])
    };
    let lead: Vec<u64> = match r.below(6) {
        0 => vec![1 + r.below(3)],
        1 => vec![1 + r.below(2), 1 + r.below(3)],
        _ => vec![],
    };
    let in_dtype = r.pick(&["bf16", "bf16", "f16", "f32", "f8e4m3"]);
    let projected = lead.is_empty() && r.chance(0.25);
    if projected {
        // Projections make q, k and v from one input: as many keys as queries.
        sk = sq;
    }
    // Grouped-query attention: K and V shared by the query heads of a group, as a 1 on
    // the group axis or as a missing leading axis (both broadcast as `@` does).
    let kv_lead = match lead.len() {
        2 if r.chance(0.5) => {
            if r.chance(0.5) {
                Some(vec![lead[0], 1])
            } else {
                Some(vec![lead[1]])
            }
        }
        1 if r.chance(0.3) => Some(vec![]),
        _ => None,
    };
    let mut features = vec![format!("rank:{}", lead.len() + 2)];
    if let Some(kl) = &kv_lead {
        features.push(format!("kv:shared-{}", kl.len()));
    }
    let mut g = Gen {
        r,
        params: Vec::new(),
        features,
        lead,
        kv_lead,
        in_dtype,
        projected,
    };
    if projected {
        g.params.push("x: bf16[SQ, E]".to_string());
    }
    let q = g.produce("q", "SQ", "D");
    let kt = if g.r.chance(0.3) {
        let shape = g.dims_of("k", "D", "SK");
        g.params.push(format!("kt: {in_dtype}[{shape}]"));
        g.features.push("k:given-transposed".into());
        "kt".to_string()
    } else {
        format!("transpose({})", g.produce("k", "SK", "D"))
    };
    let v = match g.r.below(5) {
        0 => {
            let shape = g.dims_of("v", "DV", "SK");
            g.params.push(format!("vt: {in_dtype}[{shape}]"));
            g.features.push("v:transposed".into());
            "transpose(vt)".to_string()
        }
        1 if g.lead.is_empty() && g.kv_lead.is_none() => {
            g.params.push(format!("vflat: {in_dtype}[{}]", sk * dv));
            g.features.push("v:reshaped".into());
            "reshape(vflat, [SK, DV])".to_string()
        }
        _ => g.produce("v", "SK", "DV"),
    };
    // Scores, scaled and masked in either order.
    let mut lets: Vec<String> = Vec::new();
    let mut s = format!("({q} @ {kt})");
    let scale = g.r.chance(0.6);
    let scale_first = g.r.chance(0.5);
    let mask = g.r.chance(0.3).then(|| g.r.pick(&[-1i64, 0, 0, 0, 1, 3]));
    let c = g.r.pick(&["0.125", "0.17677669529663687", "0.5", "2.0"]);
    if scale && scale_first {
        s = format!("({s} * {c})");
        g.features.push("scale:before-mask".into());
    }
    if let Some(k) = mask {
        s = format!("tril({s}, k={k}, fill=-inf)");
        g.features.push(format!("mask:k={k}"));
    }
    if scale && !scale_first {
        s = format!("({s} * {c})");
        g.features.push("scale:after-mask".into());
    }
    lets.push(format!("let s = {s};"));
    lets.push("let m = max(s, axis=-1, keepdims=true);".into());
    lets.push("let e = exp(s - m);".into());
    lets.push("let l = sum(e, axis=-1, keepdims=true);".into());
    let p_dtype = g.r.pick(&DTYPES);
    let out_dtype = g.r.pick(&DTYPES);
    g.features.push(format!("p:{p_dtype}"));
    g.features.push(format!("out:{out_dtype}"));
    let cast = |x: &str, d: &str| {
        if d == "f32" {
            x.to_string()
        } else {
            format!("({x} as {d})")
        }
    };
    let after = g.r.chance(0.3);
    let o = if after {
        g.features.push("norm:after-pv".into());
        format!("(({} @ {v}) / l)", cast("e", p_dtype))
    } else {
        g.features.push("norm:before-pv".into());
        lets.push("let p = e / l;".into());
        format!("({} @ {v})", cast("p", p_dtype))
    };
    lets.push(format!("let o = {};", cast(&o, out_dtype)));
    let out_type = format!("{out_dtype}[{}]", g.dims("SQ", "DV"));
    let (result, ret) = if g.r.chance(0.15) {
        g.features.push("used-twice".into());
        let extra = if after || g.r.chance(0.5) {
            "m"
        } else {
            lets.push("let ps = sum(p, axis=-1, keepdims=true);".into());
            "ps"
        };
        (
            format!("({out_type}, f32[{}])", g.dims("SQ", "1")),
            format!("return (o, {extra});"),
        )
    } else {
        (out_type, "return o;".to_string())
    };
    let mut sizes = vec![
        format!("SQ = {sq}"),
        format!("SK = {sk}"),
        format!("D = {d}"),
        format!("DV = {dv}"),
    ];
    if projected {
        sizes.push(format!("E = {}", g.r.pick(&[16u64, 64, 128, 160])));
    }
    let mut source = format!(
        "kernel attn<{}>({}) -> {result} {{\n",
        sizes.join(", "),
        g.params.join(", ")
    );
    for l in lets {
        source.push_str(&format!("    {l}\n"));
    }
    source.push_str(&format!("    {ret}\n}}\n"));
    AttnKernel {
        source,
        features: g.features,
    }
}
