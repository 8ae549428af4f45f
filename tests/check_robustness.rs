//! Robustness of the frontend: no input makes `parse` or `check_file` panic, overflow the
//! stack or run away. Deep inputs run on threads with the default 2 MiB test stack, so a
//! recursive walk over a 20,000-deep expression would be caught here.

mod common;

use proptest::prelude::*;
use tessera::diagnostic::{render, Diagnostic};
use tessera::frontend::{check_file, codes, parse};

/// Runs `f` on a thread with a 2 MiB stack (the default of test threads).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawning a thread")
        .join()
        .expect("the frontend must not panic or overflow the stack")
}

/// Checks a source on a small stack; returns the diagnostics (empty on success) and
/// renders them, so rendering is exercised too.
fn check_small(src: String) -> Vec<Diagnostic> {
    on_small_stack(move || {
        let diags = check_file(&src, &[], None).err().unwrap_or_default();
        let _ = render(&diags, "deep.tsr", &src, true);
        let _ = render(&diags, "deep.tsr", &src, false);
        diags
    })
}

fn kernel_returning(expr: &str) -> String {
    format!("kernel k(x: f32[4]) -> f32[4] {{\n    return {expr};\n}}\n")
}

fn codes_of(diags: &[Diagnostic]) -> Vec<&'static str> {
    diags.iter().map(|d| d.code).collect()
}

#[test]
fn twenty_thousand_parentheses() {
    let n = 20_000;
    let src = kernel_returning(&format!("{}x{}", "(".repeat(n), ")".repeat(n)));
    let diags = check_small(src);
    assert_eq!(codes_of(&diags), vec![codes::NESTED_TOO_DEEPLY]);
    assert!(
        diags[0].message.contains("limit 256"),
        "{}",
        diags[0].message
    );
}

#[test]
fn twenty_thousand_unclosed_parentheses() {
    let src = kernel_returning(&"(".repeat(20_000));
    let diags = check_small(src);
    assert!(!diags.is_empty());
}

#[test]
fn twenty_thousand_minuses() {
    let src = kernel_returning(&format!("{}x", "-".repeat(20_000)));
    let diags = check_small(src);
    assert_eq!(codes_of(&diags), vec![codes::NESTED_TOO_DEEPLY]);
}

#[test]
fn twenty_thousand_additions() {
    let src = kernel_returning(&vec!["x"; 20_000].join(" + "));
    let diags = check_small(src);
    assert_eq!(codes_of(&diags), vec![codes::NESTED_TOO_DEEPLY]);
}

#[test]
fn deep_calls_and_casts() {
    let n = 20_000;
    let calls = kernel_returning(&format!("{}x{}", "exp(".repeat(n), ")".repeat(n)));
    assert_eq!(
        codes_of(&check_small(calls)),
        vec![codes::NESTED_TOO_DEEPLY]
    );
    let casts = kernel_returning(&format!("x{}", " as f32".repeat(n)));
    assert_eq!(
        codes_of(&check_small(casts)),
        vec![codes::NESTED_TOO_DEEPLY]
    );
    let mixed = kernel_returning(&format!("{}x{}", "-(x * ".repeat(n), ")".repeat(n)));
    assert_eq!(
        codes_of(&check_small(mixed)),
        vec![codes::NESTED_TOO_DEEPLY]
    );
}

#[test]
fn nesting_just_under_the_limit_is_accepted() {
    // 255 parentheses around a name: 256 levels.
    let n = 255;
    let src = kernel_returning(&format!("{}x{}", "(".repeat(n), ")".repeat(n)));
    assert_eq!(check_small(src), vec![]);
    let src = kernel_returning(&vec!["x"; 200].join(" + "));
    assert_eq!(check_small(src), vec![]);
}

#[test]
fn huge_dims_are_errors() {
    let src = "kernel k(x: f32[10000000000000000000000000]) -> f32[4] { return x; }";
    let diags = check_small(src.to_string());
    assert_eq!(codes_of(&diags), vec![codes::DIM_OVERFLOW]);
    let src = "kernel k<N = 99999999999999999999999>(x: f32[N]) -> f32[N] { return x; }";
    assert_eq!(
        codes_of(&check_small(src.to_string())),
        vec![codes::DIM_OVERFLOW]
    );
    let src =
        "kernel k(x: f32[4294967296, 4294967296, 4294967296, 4294967296]) -> f32[1] { return x; }";
    assert!(codes_of(&check_small(src.to_string())).contains(&codes::DIM_OVERFLOW));
}

#[test]
fn huge_defines_and_axes() {
    let src =
        "kernel k<N>(x: f32[N, 4]) -> f32[N] { return sum(x, axis=99999999999999999999999); }";
    let diags = on_small_stack(move || {
        check_file(src, &[("N".to_string(), i64::MAX)], None)
            .err()
            .unwrap_or_default()
    });
    assert!(!diags.is_empty());
    let src = "kernel k<N>(x: f32[N]) -> f32[N] { return x; }";
    let diags = check_file(src, &[("N".to_string(), i64::MIN)], None).unwrap_err();
    assert_eq!(codes_of(&diags), vec![codes::ZERO_DIM]);
}

#[test]
fn empty_and_blank_files() {
    for src in ["", "   \n\t\n", "// only a comment"] {
        let diags = check_small(src.to_string());
        assert_eq!(codes_of(&diags), vec![codes::NO_KERNEL], "{src:?}");
    }
}

#[test]
fn binary_garbage() {
    // A deterministic pseudo-random byte stream, read as (lossy) UTF-8.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [1usize, 7, 100, 5_000, 100_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let src = String::from_utf8_lossy(&bytes).into_owned();
        let diags = check_small(src);
        assert!(!diags.is_empty());
    }
    // NUL bytes and control characters.
    let diags = check_small("kernel\0k(x: f32[4]) -> f32[4] { return x; }\u{7}".to_string());
    assert!(!diags.is_empty());
}

#[test]
fn many_errors_and_many_kernels() {
    let mut src = String::new();
    for i in 0..2_000 {
        src.push_str(&format!(
            "kernel k{i}(x: f32[4]) -> f32[4] {{ let y = x $ 1; return y +; }}\n"
        ));
    }
    let diags = check_small(src);
    assert!(diags.len() >= 2_000, "{}", diags.len());
    let mut src = String::new();
    for i in 0..2_000 {
        src.push_str(&format!(
            "kernel k{i}(x: f32[4]) -> f32[4] {{ return x; }}\n"
        ));
    }
    let kernels = check_file(&src, &[], None).expect("valid kernels");
    assert_eq!(kernels.len(), 2_000);
}

#[test]
fn parse_never_fails() {
    let (file, diags) = parse("kernel a(x: f32[4]) -> f32[4] { return x; } kernel");
    assert_eq!(file.kernels.len(), 1);
    assert_eq!(codes_of(&diags), vec![codes::UNEXPECTED_EOF]);
}

#[test]
fn unknown_kernel_lists_the_names() {
    let src =
        "kernel a(x: f32[4]) -> f32[4] { return x; }\nkernel b(x: f32[4]) -> f32[4] { return x; }";
    let diags = check_file(src, &[], Some("c")).unwrap_err();
    assert_eq!(codes_of(&diags), vec![codes::UNKNOWN_KERNEL]);
    assert!(
        diags[0].notes[0].contains("`a`, `b`"),
        "{:?}",
        diags[0].notes
    );
    let kernels = check_file(src, &[], Some("b")).expect("kernel b");
    assert_eq!(kernels.len(), 1);
    assert_eq!(kernels[0].name, "b");
}

/// The vocabulary of the random token soups below.
const WORDS: &[&str] = &[
    "kernel",
    "let",
    "return",
    "as",
    "true",
    "false",
    "inf",
    "f32",
    "bf16",
    "f16",
    "f8e4m3",
    "f8e5m2",
    "x",
    "y",
    "N",
    "k",
    "exp",
    "sum",
    "max",
    "transpose",
    "reshape",
    "tril",
    "axis",
    "keepdims",
    "perm",
    "fill",
    "maximum",
    "0",
    "1",
    "-1",
    "128",
    "0.5",
    "1e-6",
    "1e",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    ",",
    ":",
    ";",
    "=",
    "->",
    "+",
    "-",
    "*",
    "/",
    "@",
    "$",
    "é",
    "99999999999999999999999",
];

proptest! {
    #![proptest_config(common::proptest_config(512))]

    #[test]
    fn token_soup_never_panics(words in prop::collection::vec(0..WORDS.len(), 0..200)) {
        let src: String = words.iter().map(|&i| WORDS[i]).collect::<Vec<_>>().join(" ");
        let result = check_file(&src, &[], None);
        if let Err(diags) = &result {
            let _ = render(diags, "soup.tsr", &src, false);
        }
    }

    #[test]
    fn mutated_kernels_never_panic(
        cut in 0usize..400,
        insert in 0..WORDS.len(),
        defines in prop::collection::vec(("[NMKQ]", -3i64..5000), 0..3),
    ) {
        let base = "kernel softmax<N = 256, D = 1000>(x: f32[N, D]) -> f32[N, D] {\n\
                    let m = max(x, axis=1, keepdims=true);\n\
                    let e = exp(x - m);\n\
                    return e / sum(e, axis=-1, keepdims=true);\n}\n\
                    kernel lin(x: bf16[512, 768], w: bf16[768, 3072], b: f32[3072]) -> bf16[512, 3072] {\n\
                    return gelu_tanh(x @ w + b) as bf16;\n}\n";
        let at = cut.min(base.len());
        let src = format!("{} {} {}", &base[..at], WORDS[insert], &base[at..]);
        let result = check_file(&src, &defines, None);
        if let Err(diags) = &result {
            prop_assert!(!diags.is_empty());
            let _ = render(diags, "mutated.tsr", &src, false);
        }
    }
}

/// The property tests above draw the same cases on every run unless a seed is asked for.
#[test]
fn property_tests_use_a_fixed_seed() {
    use proptest::test_runner::RngSeed;
    let config = common::proptest_config(7);
    assert_eq!(config.cases, 7);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        assert!(
            matches!(config.rng_seed, RngSeed::Fixed(_)),
            "{:?}",
            config.rng_seed
        );
    }
}

/// A byte-order mark at the start of a file is skipped (editors on Windows write one), and
/// diagnostics after it keep their lines and columns.
#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let ok = "\u{feff}kernel k(x: f32[4]) -> f32[4] {\n    return x * 2.0;\n}\n";
    assert!(check_file(ok, &[], None).is_ok());
    let bad = "\u{feff}kernel k(x: f32[4]) -> f32[4] {\n    return y;\n}\n";
    let diags = check_file(bad, &[], None).expect_err("an unknown name");
    let text = render(&diags, "bom.tsr", bad, false);
    assert!(text.contains("bom.tsr:2:12"), "{text}");
    assert!(!text.contains("unknown character"), "{text}");
}
