//! Body of the structured fuzz target `mutate`: the input's bytes choose a small valid,
//! correctly synchronised program (DMA loads, a Vector or GpSimd operation, a matmul into
//! PSUM, an activation out of PSUM, a DMA store, chained by semaphores), then one mutation
//! of one field (an access-pattern field, a wait or signal, an instruction's removal, swap
//! or move to another stream, or a tensor declaration), then encoding, the verifier and a
//! run with small limits.
//!
//! Properties: the unmutated program verifies and runs without any error (so the race
//! detector and PSUM-group check raise nothing on a correctly synchronised program); the
//! mutated one round-trips through the binary encoding, and neither the verifier, the
//! interpreter (with and without the verifier) nor the debug checks panic on it.

use isa::{ApMut, Dtype, Engine, Program, NUM_STREAMS};

/// The input as a stream of choices; zeros once it is exhausted.
pub struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data, pos: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        let v = u64::from_le_bytes([self.byte(), self.byte(), 0, 0, 0, 0, 0, 0]);
        v.checked_rem(n).unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A value that is often at an edge: small, near a power of two, or arbitrary.
    fn value(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(8),
            1 => (1u64 << self.below(64))
                .wrapping_add(self.below(3))
                .wrapping_sub(1),
            2 => u64::MAX - self.below(4),
            _ => u64::from_le_bytes(std::array::from_fn(|_| self.byte())),
        }
    }
}

/// The assembly text of the base program the choices describe.
pub fn base_text(c: &mut Choices) -> String {
    let p = c.pick(&[1u64, 4, 32, 64, 128]);
    let n = 1 + c.below(64);
    let x_off = 0;
    let w_off = (p * n * 4).next_multiple_of(64);
    let y_off = w_off + (p * p * 4).next_multiple_of(64);
    let hbm = y_off + (p * n * 4).next_multiple_of(64);
    // SBUF byte offsets of the tiles: x, w, the elementwise result, the activation result.
    let (ax, aw, ab, ac) = (0, 1024, 2048, 3072);
    let mid = c.pick(&["f32", "bf16"]);
    let engine = c.pick(&["vector", "gpsimd"]);
    let op = c.pick(&["add", "mul", "max", "subtract", "min"]);
    let op = if op == "subtract" { "sub" } else { op };
    let elementwise = match c.below(3) {
        0 => format!(
            "tensor_tensor op={op}, out=sbuf.{mid}[0:{p}, {ab}; {n}:1], a=sbuf.f32[0:{p}, {ax}; {n}:1], b=sbuf.f32[0:{p}, {ax}; {n}:1]"
        ),
        1 => format!(
            "tensor_scalar out=sbuf.{mid}[0:{p}, {ab}; {n}:1], src=sbuf.f32[0:{p}, {ax}; {n}:1], op0={op}, s0=1.5, op1=bypass, s1=0.0"
        ),
        _ => format!("tensor_copy out=sbuf.{mid}[0:{p}, {ab}; {n}:1], src=sbuf.f32[0:{p}, {ax}; {n}:1]"),
    };
    let func = c.pick(isa::ActFunc::ALL).name();
    let accumulate = c.below(2) == 1;
    let second = if accumulate {
        format!(
            "\n    matmul out=psum.f32[0:{p}, 0; {n}:1], stationary=sbuf.f32[0:{p}, {aw}; {p}:1], moving=sbuf.{mid}[0:{p}, {ab}; {n}:1], accumulate=true"
        )
    } else {
        String::new()
    };
    format!(
        ".preset default
.hbm {hbm}
.tensor x input f32 [{p}, {n}] @{x_off}
.tensor w input f32 [{p}, {p}] @{w_off}
.tensor y output f32 [{p}, {n}] @{y_off}

.stream dma0
    dma dst=sbuf.f32[0:{p}, {ax}; {n}:1], src=hbm.f32[{x_off}; {p}:{n}, {n}:1] signal(s0)
    dma dst=sbuf.f32[0:{p}, {aw}; {p}:1], src=hbm.f32[{w_off}; {p}:{p}, {p}:1] signal(s0)
    end

.stream {engine}
    wait(s0>=2) {elementwise} signal(s1)
    end

.stream tensor
    wait(s1>=1) matmul out=psum.f32[0:{p}, 0; {n}:1], stationary=sbuf.f32[0:{p}, {aw}; {p}:1], moving=sbuf.{mid}[0:{p}, {ab}; {n}:1], accumulate=false{second} signal(s2)
    end

.stream scalar
    wait(s2>=1) activate out=sbuf.f32[0:{p}, {ac}; {n}:1], src=psum.f32[0:{p}, 0; {n}:1], func={func}, scale=0.5, bias=0.25, accum=none signal(s3)
    end

.stream dma1
    wait(s3>=1) dma dst=hbm.f32[{y_off}; {p}:{n}, {n}:1], src=sbuf.f32[0:{p}, {ac}; {n}:1]
    end
"
    )
}

/// Applies one mutation to `program`.
pub fn mutate(program: &mut Program, c: &mut Choices) {
    let streams: Vec<usize> = (0..program.streams.len())
        .filter(|&s| program.streams[s].len() > 1)
        .collect();
    let s = if streams.is_empty() {
        0
    } else {
        c.pick(&streams)
    };
    let len = program.streams.get(s).map_or(0, |st| st.len());
    // Instructions before the stream's `end`.
    let body = len.saturating_sub(1) as u64;
    match c.below(6) {
        0 | 1 => {
            let Some(inst) = program
                .streams
                .get_mut(s)
                .and_then(|st| st.get_mut(c.below(body) as usize))
            else {
                return;
            };
            let mut aps = Vec::new();
            inst.op.visit_aps_mut(&mut |ap, _| aps.push(ap));
            if aps.is_empty() {
                return;
            }
            let k = c.below(aps.len() as u64) as usize;
            let field = c.below(6);
            let v = c.value();
            match aps.swap_remove(k) {
                ApMut::Tile(t) => match field {
                    0 => t.offset = v as u32,
                    1 => t.partition = v as u8,
                    2 => t.partitions = v as u8,
                    3 | 4 => {
                        let j = c.below(t.dims.len() as u64) as usize;
                        if let Some(d) = t.dims.get_mut(j) {
                            if field == 3 {
                                d.size = v as u32;
                            } else {
                                d.stride = v as i32;
                            }
                        }
                    }
                    _ => t.dtype = c.pick(&Dtype::ALL),
                },
                ApMut::Hbm(h) => match field {
                    0 | 1 => h.offset = v,
                    2 | 3 => {
                        let j = c.below(h.dims.len() as u64) as usize;
                        if let Some(d) = h.dims.get_mut(j) {
                            if field == 2 {
                                d.size = v;
                            } else {
                                d.stride = v as i64;
                            }
                        }
                    }
                    _ => h.dtype = c.pick(&Dtype::ALL),
                },
            }
        }
        2 => {
            let Some(inst) = program
                .streams
                .get_mut(s)
                .and_then(|st| st.get_mut(c.below(body) as usize))
            else {
                return;
            };
            let sem = c.below(70) as u8;
            match c.below(4) {
                0 => inst.sync.waits.clear(),
                1 => inst.sync.waits.push((sem, c.below(5) as u32)),
                2 => inst.sync.signal = Some(sem),
                _ => inst.sync.signal = None,
            }
        }
        3 => {
            if body > 0 {
                let i = c.below(body) as usize;
                let j = c.below(body) as usize;
                if c.below(2) == 0 {
                    program.streams[s].swap(i, j);
                } else {
                    program.streams[s].remove(i);
                }
            }
        }
        4 => {
            if body > 0 {
                let inst = program.streams[s].remove(c.below(body) as usize);
                let to = c.below(NUM_STREAMS as u64) as usize;
                if let Some(st) = program.streams.get_mut(to) {
                    let at = st.len().saturating_sub(1);
                    st.insert(at, inst);
                }
            }
        }
        _ => {
            let v = c.value();
            let k = c.below(program.tensors.len() as u64 + 1) as usize;
            match program.tensors.get_mut(k) {
                Some(t) if c.below(2) == 0 => t.offset = v,
                Some(t) => {
                    if let Some(d) = t.shape.first_mut() {
                        *d = v;
                    }
                }
                None => program.hbm_size = v,
            }
        }
    }
    // Locations must stay one per instruction.
    program.locs.clear();
}

/// Runs the target on one input.
pub fn fuzz_mutate(data: &[u8]) {
    let mut c = Choices::new(data);
    let text = base_text(&mut c);
    let mut program = match isa::assemble(&text) {
        Ok(p) => p,
        Err(e) => panic!("the generator made text that does not assemble: {e}\n{text}"),
    };
    if let Err(errors) = isa::verify(&program) {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!(
            "the generator made a program that does not verify:\n{}\n{text}",
            lines.join("\n")
        );
    }
    if let Err(e) = super::limits::run_limited(&program, true) {
        panic!("a correctly synchronised program failed: {e}\n{text}");
    }
    mutate(&mut program, &mut c);
    let bytes = isa::encode_program(&program);
    if let Ok(back) = isa::decode_program(&bytes) {
        assert_eq!(back, program, "a mutated program does not round-trip");
    }
    let _ = isa::verify(&program);
    let _ = super::limits::run_limited(&program, true);
    let _ = super::limits::run_limited(&program, false);
    let _ = Engine::from_index(0);
}
