//! A generator of tiled bf16 matmul programs (assembly text), shared by the 512^3 test and
//! the `matmul_speed` example.
//!
//! `C[M, N] (f32) = AT[K, M]^T @ B[K, N]`, inputs `at` and `b` in bf16 (`at` is A stored
//! transposed, so that every load is row-contiguous). The program:
//! - loads every K tile (128 rows) of `at` and `b` into SBUF in two halves of 64
//!   partitions, load `i` on DMA queue `i % 16`; every load of K tile `kt` signals
//!   semaphore `kt`, so the matmuls of `kt` wait for `s{kt} >= 4`;
//! - computes output tiles `(mt, nt)` of 128 x 512 in order (mt outer): for each, the K
//!   tiles accumulate in PSUM bank `t % 8` (`accumulate=false` for the first); the last
//!   matmul signals `s16`; the first waits for the vector engine to have emptied the bank
//!   (`s17 >= t - 7`) when it is reused;
//! - the vector engine copies each finished bank to an SBUF staging slot `t % 4` (waiting
//!   `s16 >= t + 1`, and for the slot's previous output DMAs, `s{20 + slot}`), signalling
//!   `s17`;
//! - the output is written by four DMAs of 32 partitions each, on queues `(4t + j) % 16`,
//!   waiting `s17 >= t + 1` and signalling the slot's semaphore.
//!
//! SBUF use per partition: `2 * K/128 * (M + N)` bytes of operands plus 8 KiB of staging,
//! so up to M = N = K = 2048 fits the 192 KiB partitions.

#![allow(dead_code)]

/// The assembly text of the program for `m`, `k`, `n` (multiples of 128, 128 and 512).
pub fn matmul_program(m: usize, k: usize, n: usize) -> String {
    assert!(m & 127 == 0 && k & 127 == 0 && n & 511 == 0);
    let (kts, mts, nts) = (k / 128, m / 128, n / 512);
    assert!(kts <= 16, "one semaphore per K tile");
    let at_bytes = k * m * 2;
    let b_bytes = k * n * 2;
    let c_off = at_bytes + b_bytes;
    let hbm = c_off + m * n * 4;
    // SBUF layout per partition: at tiles, then b tiles, then 4 staging slots of 2 KiB.
    let at_sb = |kt: usize| kt * m * 2;
    let b_sb = |kt: usize| kts * m * 2 + kt * n * 2;
    let stage = |slot: usize| kts * (m + n) * 2 + slot * 2048;
    let mut dma: Vec<Vec<String>> = vec![Vec::new(); 16];
    let mut load = 0usize;
    for kt in 0..kts {
        for (src_off, cols, sb) in [(0usize, m, at_sb(kt)), (at_bytes, n, b_sb(kt))] {
            for h in 0..2 {
                let row = kt * 128 + h * 64;
                dma[load % 16].push(format!(
                    "dma dst=sbuf.bf16[{}:64, {}; {}:1], src=hbm.bf16[{}; 64:{}, {}:1] signal(s{})",
                    h * 64,
                    sb,
                    cols,
                    src_off + row * cols * 2,
                    cols,
                    cols,
                    kt
                ));
                load += 1;
            }
        }
    }
    let mut tensor = Vec::new();
    let mut vector = Vec::new();
    let mut t = 0usize;
    for mt in 0..mts {
        for nt in 0..nts {
            let bank = t % 8;
            for kt in 0..kts {
                let mut waits = vec![format!("s{kt}>=4")];
                if kt == 0 && t >= 8 {
                    waits.push(format!("s17>={}", t - 7));
                }
                let signal = if kt == kts - 1 { " signal(s16)" } else { "" };
                tensor.push(format!(
                    "wait({}) matmul out=psum.f32[0:128, {}; 512:1], stationary=sbuf.bf16[0:128, {}; 128:1], moving=sbuf.bf16[0:128, {}; 512:1], accumulate={}{}",
                    waits.join(", "),
                    bank * 2048,
                    at_sb(kt) + mt * 256,
                    b_sb(kt) + nt * 1024,
                    kt > 0,
                    signal
                ));
            }
            let slot = t % 4;
            let mut waits = vec![format!("s16>={}", t + 1)];
            if t >= 4 {
                waits.push(format!("s{}>={}", 20 + slot, 4 * (t / 4)));
            }
            vector.push(format!(
                "wait({}) tensor_copy out=sbuf.f32[0:128, {}; 512:1], src=psum.f32[0:128, {}; 512:1] signal(s17)",
                waits.join(", "),
                stage(slot),
                bank * 2048
            ));
            for j in 0..4 {
                let row = mt * 128 + j * 32;
                dma[(4 * t + j) % 16].push(format!(
                    "wait(s17>={}) dma dst=hbm.f32[{}; 32:{}, 512:1], src=sbuf.f32[{}:32, {}; 512:1] signal(s{})",
                    t + 1,
                    c_off + (row * n + nt * 512) * 4,
                    n,
                    j * 32,
                    stage(slot),
                    20 + slot
                ));
            }
            t += 1;
        }
    }
    let mut text = format!(
        ".hbm {hbm}\n.tensor at input bf16 [{k}, {m}] @0\n.tensor b input bf16 [{k}, {n}] @{at_bytes}\n.tensor c output f32 [{m}, {n}] @{c_off}\n"
    );
    let mut stream = |name: &str, insts: &[String]| {
        text.push_str(&format!("\n.stream {name}\n"));
        for i in insts {
            text.push_str(&format!("    {i}\n"));
        }
        text.push_str("    end\n");
    };
    stream("tensor", &tensor);
    stream("vector", &vector);
    for (q, insts) in dma.iter().enumerate() {
        if !insts.is_empty() {
            stream(&format!("dma{q}"), insts);
        }
    }
    text
}

/// The plain-Rust reference: `c[m][n] = sum_k at[k][m] * b[k][n]` in f32, starting from
/// +0.0 and adding k = 0, 1, .. in order, each step one f32 multiply and one f32 add.
pub fn matmul_reference(at: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for mi in 0..m {
        let row = &mut c[mi * n..(mi + 1) * n];
        for ki in 0..k {
            let s = at[ki * m + mi];
            for (o, &x) in row.iter_mut().zip(&b[ki * n..(ki + 1) * n]) {
                *o += s * x;
            }
        }
    }
    c
}
