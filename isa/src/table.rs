//! The instruction table: the single source of truth of the ISA.
//!
//! `for_each_op!` hands every opcode to a macro of the caller's: its doc comment (the
//! semantics, numerics and cost that `ISA.md` reproduces), its opcode byte, its variant
//! name, its mnemonic, the engines that may run it, and its fields in encoding order.
//! The `Op` enum, the encoder, the decoder, the assembler, the disassembler, the
//! verifier's field checks and the reference document are all generated from it, so they
//! cannot drift (the model is Pulley's `for_each_op!`).
//!
//! Doc comment conventions, read by the ISA.md generator: the first paragraph is the
//! summary; a paragraph starting `Numerics:` states the exact arithmetic; a paragraph
//! starting `Cost:` states the timing model's formula.

/// Calls `$m! { ... }` with the whole table. Each entry has the form
/// `#[doc] Variant = opcode, "mnemonic", engines, { field: Type, ... };`.
#[macro_export]
macro_rules! for_each_op {
    ($m:ident) => {
        $m! {
            /// No operation. Useful as a carrier of extra semaphore waits or signals.
            ///
            /// Numerics: none.
            ///
            /// Cost: 1 cycle on any engine.
            Nop = 0x00, "nop", $crate::EngineClass::ANY, {};

            /// End of the stream. Every stream ends with exactly one `end`, and nothing follows it.
            ///
            /// Numerics: none.
            ///
            /// Cost: 0 cycles.
            End = 0x01, "end", $crate::EngineClass::ANY, {};

            /// DMA copy: reads the `src` pattern element by element and writes the `dst`
            /// pattern in the same order, converting from `src`'s dtype to `dst`'s. Either side
            /// is an HBM pattern or an SBUF tile (never PSUM); both sides have the same number of
            /// elements. Runs on the stream's own queue.
            ///
            /// Numerics: each element is decoded to f32 exactly, then rounded to the destination
            /// dtype with round-to-nearest-even (bf16/f16 overflow to infinity; FP8 saturates to
            /// the largest finite value of the sign; NaN stays NaN). Same-dtype copies are exact
            /// bit copies.
            ///
            /// Cost: `latency + ceil(bytes / queue_rate)` where `bytes` is the larger of the two
            /// sides' effective sizes and a side's effective size sums every contiguous run of
            /// bytes rounded up to at least 64. Default latency 2,000 cycles, queue rate 16
            /// B/cycle; all queues together share 256 B/cycle. The next transfer of the same
            /// queue may start its latency while this one moves data (the queue pipelines), but
            /// data phases of one queue are serial.
            Dma = 0x10, "dma", $crate::EngineClass::DMA, { dst: DmaAp, src: DmaAp };

            /// Indirect DMA (a gather of rows): for each partition `p` of `dst`, an SBUF tile of
            /// up to 128 partitions, reads the row `r = idx[p]` of the HBM tensor `src` into that
            /// partition. `idx` is an SBUF tile of `i32` with one element per partition of `dst`
            /// (`[P, 1]`). `src`'s first dimension is the indexed one: its size is the row count
            /// `rows` and its stride the row stride (in elements); its other dimensions (at least
            /// one) walk one row, whose elements are as many as `dst` has free elements per
            /// partition. With `wrap`, an index in `[-rows, 0)` counts from the end (`r + rows`),
            /// as the language's negative indices do.
            ///
            /// An index outside `[0, rows)` (outside `[-rows, rows)` with `wrap`) is a fault of
            /// the instruction: the run stops with an error naming the instruction, the
            /// partition and the index as `idx` holds it. Every index is checked before anything
            /// moves, so a faulting gather reads no row and writes nothing.
            ///
            /// Numerics: as `dma`: same-dtype rows are exact bit copies; otherwise each element is
            /// decoded to f32 and rounded to `dst`'s dtype. `idx` is read as raw 32-bit two's
            /// complement integers, never through f32.
            ///
            /// Cost: as a `dma` on the stream's queue: `latency + ceil(bytes / queue_rate)` where
            /// `bytes` is the larger of the two sides' effective sizes; each gathered row is its
            /// own run (or runs, by `src`'s row pattern) of at least 64 bytes, and the source side
            /// counts the P rows read, not the whole tensor. The `idx` tile is read at issue and
            /// adds no bytes.
            DmaGather = 0x11, "dma_gather", $crate::EngineClass::DMA,
                { dst: TileAp, idx: TileAp, src: HbmAp, wrap: bool };

            /// Tensor engine matrix multiply: `out[M, N] (+)= stationary[K, M]^T @ moving[K, N]`.
            /// `stationary` and `moving` are SBUF tiles on the same K partitions (K <= 128);
            /// `stationary` has M <= 128 free elements, `moving` N <= 512; `out` is an f32 PSUM
            /// tile of M partitions and N free elements inside one 2 KiB bank. With
            /// `accumulate=false` the group starts: `out` is overwritten; with `true` the products
            /// are added to what `out` holds.
            ///
            /// Numerics: operands of bf16, f16 and FP8 are decoded to f32 and their products are
            /// exact; f32 operands are multiplied in f32 with round-to-nearest-even. For each
            /// output element the sum starts from 0 (or the PSUM value when accumulating) and adds
            /// the products for k = 0, 1, .., K-1 in that order, each addition rounded to f32.
            ///
            /// Cost: `max(ceil(N / rate), 32)` cycles with rate = moving columns per cycle (2 for
            /// bf16/f16, 4 for FP8, 0.5 for f32, by the moving operand's dtype). When the
            /// stationary pattern differs from the previous matmul's, loading it costs 32 cycles
            /// which overlap the previous matmul (the load may start when the previous matmul
            /// starts).
            Matmul = 0x20, "matmul", $crate::EngineClass::TENSOR,
                { out: TileAp, stationary: TileAp, moving: TileAp, accumulate: bool };

            /// Tensor engine transpose: `out[F, P] = src[P, F]` with `src` an SBUF tile of P <= 128
            /// partitions and F <= 128 free elements, `out` a PSUM tile (one bank). Timed as a
            /// matmul of `src` (stationary) against the identity, as `docs/machine.md` describes it.
            ///
            /// Numerics: values are copied exactly (decoded to f32, then rounded to `out`'s
            /// dtype): infinities, NaN and -0 pass through, where an f32 sum of products with
            /// the identity would make a row holding an infinity NaN and -0 into +0.
            ///
            /// Cost: as a matmul with N = P moving columns of `src`'s dtype, including the
            /// stationary load.
            Transpose = 0x21, "transpose", $crate::EngineClass::TENSOR, { out: TileAp, src: TileAp };

            /// Elementwise on two tiles: `out = a OP b`, all three with the same partition count
            /// and the same number of free elements per partition (walked in row-major order).
            ///
            /// Numerics: inputs decoded to f32, one f32 operation, rounded to `out`'s dtype.
            ///
            /// Cost: `64 + 2N` cycles on Vector (`64 + 8N` on GpSimd), N free elements per partition.
            TensorTensor = 0x30, "tensor_tensor", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { op: AluOp, out: TileAp, a: TileAp, b: TileAp };

            /// Tile with per-partition scalars: `out = (src OP0 s0) OP1 s1`. Each scalar is an
            /// immediate or a `[P, 1]` tile. `bypass` as OP1 makes it a single operation.
            ///
            /// Numerics: f32 throughout; the intermediate is kept in f32; one rounding to
            /// `out`'s dtype at the end.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd).
            TensorScalar = 0x31, "tensor_scalar", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { out: TileAp, src: TileAp, op0: AluOp, s0: ScalarArg, op1: AluOp, s1: ScalarArg };

            /// Reduction along the innermost free dimension of `src`: `out` has the same
            /// partitions and the free elements of `src` without its last dimension (one element
            /// per partition when `src` has one dimension).
            ///
            /// Numerics: accumulates in f32 from the first element of the row to the last: the
            /// accumulator starts as the first element and each following element is combined
            /// into it (add: each addition rounded to f32; max/min propagate NaN), then the result
            /// is rounded once to `out`'s dtype.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd), N free elements of `src`.
            TensorReduce = 0x32, "tensor_reduce", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { op: ReduceOp, out: TileAp, src: TileAp };

            /// Reduction followed by per-partition scalar operations on its result: `out =
            /// (reduce(src) OP0 s0) OP1 s1`, with the reduction of `tensor_reduce` and the
            /// operations of `tensor_scalar` (each scalar an immediate or a `[P, 1]` tile;
            /// `bypass` as OP1 makes it a single operation). The epilogue of a reduction (the
            /// mean's division, a negated and scaled maximum, a running maximum) then costs no
            /// instruction of its own.
            ///
            /// Numerics: the reduction accumulates in f32 exactly as `tensor_reduce`; its f32
            /// result, not rounded, goes through OP0 and OP1 in f32 as in `tensor_scalar`, and is
            /// rounded once to `out`'s dtype: the same bits as `tensor_reduce` into an f32 tile
            /// followed by `tensor_scalar`.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd), N free elements of `src`,
            /// as `tensor_reduce`: the operations on each result ride on the reduction's pass.
            TensorReduceScalar = 0x35, "tensor_reduce_scalar", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { op: ReduceOp, out: TileAp, src: TileAp, op0: AluOp, s0: ScalarArg, op1: AluOp, s1: ScalarArg };

            /// Elementwise selection by a mask: `out = mask != 0 ? a : b`, all four tiles with
            /// the same partition count and the same number of free elements per partition
            /// (walked in row-major order). Language version 2's `where`, whose condition is
            /// a `bool` tile of 0 and 1.
            ///
            /// Numerics: the chosen input is decoded to f32 and rounded to `out`'s dtype; the
            /// other is read but unused. A NaN mask element counts as nonzero.
            ///
            /// Cost: `64 + 3N` cycles on Vector (`64 + 12N` on GpSimd), N free elements per
            /// partition: the elementwise cost per input, for three inputs.
            Select = 0x36, "select", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { out: TileAp, mask: TileAp, a: TileAp, b: TileAp };

            /// Inclusive scan (running sum) along the innermost free dimension of `src`: each
            /// line (one index of the other free dimensions, in row-major order) is scanned on
            /// its own, `out[.., j] = carry + src[.., 0] + .. + src[.., j]`. `out` has `src`'s
            /// shape. `carry`, when given, holds one value per line (`[P, lines]`, row-major):
            /// the running value a previous chunk of the same line ended with, so that long
            /// lines scan in chunks.
            ///
            /// Numerics: in order: the accumulator starts as the line's first element (or
            /// `carry + first` with a carry), and each following element is added to it in
            /// f32, each addition rounded to f32 (never reordered, so infinities, NaN and -0
            /// behave as in the sequential sum); each running value is rounded to `out`'s
            /// dtype as it is written, the accumulator staying f32. When `src` and `out` (and
            /// `carry`) are `i32` the values are read as integers and added with 32-bit
            /// wrapping, never through f32.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd), N free elements of `src`.
            TensorScan = 0x37, "tensor_scan", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { out: TileAp, src: TileAp, carry: Option<TileAp> };

            /// Maximum (`max`) or minimum (`min`) along the innermost free dimension of `src`,
            /// with its first position: `out` gets the value and `index` (an `i32` tile) the
            /// position within the line, or, with `positions` (an `i32` tile of `src`'s shape),
            /// the element of `positions` at that place, so partial results of chunks combine
            /// with their own positions. `out` and `index` are shaped as `tensor_reduce`'s
            /// `out`. `add` is not allowed.
            ///
            /// Numerics: the line is walked from its first element; the first NaN wins
            /// outright, otherwise an element replaces the current best only when strictly
            /// greater (`max`) or smaller (`min`), so the first of equal values wins and -0
            /// equals +0 (NumPy's `argmax`/`argmin`). The value is decoded to f32 and rounded
            /// to `out`'s dtype; positions are written as exact `i32`, and `positions` is read
            /// as exact `i32`, never through f32.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd), N free elements of `src`
            /// (`64 + 2N` and `64 + 8N` with `positions`, a second input).
            TensorArgReduce = 0x38, "tensor_arg_reduce", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { op: ReduceOp, out: TileAp, index: TileAp, src: TileAp, positions: Option<TileAp> };

            /// Copy with dtype conversion: `out = src` element by element in row-major order.
            ///
            /// Numerics: decode to f32, round to `out`'s dtype.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd).
            TensorCopy = 0x33, "tensor_copy", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { out: TileAp, src: TileAp };

            /// Fill a tile with one value.
            ///
            /// Numerics: the f32 immediate rounded to `out`'s dtype.
            ///
            /// Cost: `64 + N` cycles on Vector (`64 + 4N` on GpSimd).
            Memset = 0x34, "memset", $crate::EngineClass::VECTOR.or($crate::EngineClass::GPSIMD),
                { out: TileAp, value: Imm };

            /// Scalar engine activation: `out = f(src * scale + bias)` with per-partition (or
            /// immediate) `scale` and `bias`. With `accum` (a `[P, 1]` tile) it also writes the
            /// sum of each partition's results.
            ///
            /// Numerics: `src * scale` rounded to f32, `+ bias` rounded to f32, then `f` on f32
            /// (transcendentals evaluated in f64 by the documented libm routines and rounded once
            /// to f32), then rounded to `out`'s dtype. The `accum` sum adds the f32 results (before
            /// the rounding to `out`'s dtype) in row-major order, starting from the first, each
            /// addition rounded to f32, and is rounded once to `accum`'s dtype.
            ///
            /// Cost: `64 + N` cycles.
            Activate = 0x40, "activate", $crate::EngineClass::SCALAR,
                { out: TileAp, src: TileAp, func: ActFunc, scale: ScalarArg, bias: ScalarArg, accum: Option<TileAp> };

            /// GpSimd iota: `out[p, i..] = affine(p, i..)` as a number.
            ///
            /// Numerics: the affine expression is computed exactly in i64, converted to f32
            /// (round to nearest even) and rounded to `out`'s dtype.
            ///
            /// Cost: `64 + 4N` cycles.
            Iota = 0x50, "iota", $crate::EngineClass::GPSIMD, { out: TileAp, expr: Affine };

            /// GpSimd affine select, for masks: `out = (affine(p, i..) CMP 0) ? src : fill`,
            /// element by element over `out`'s pattern (and `src`'s, which has the same shape).
            ///
            /// Numerics: the expression in i64; selected values are decoded to f32 and rounded to
            /// `out`'s dtype; `fill` likewise.
            ///
            /// Cost: `64 + 4N` cycles.
            AffineSelect = 0x51, "affine_select", $crate::EngineClass::GPSIMD,
                { out: TileAp, src: TileAp, cmp: CmpOp, expr: Affine, fill: Imm };

            /// GpSimd cross-partition transpose: `out[F, P] = src[P, F]` with `src` an SBUF tile
            /// of P partitions and F <= 128 free elements (walked in row-major order) and `out`
            /// an SBUF tile of F partitions and P free elements. Unlike the Tensor engine's
            /// `transpose` it needs no PSUM bank and no copy out of it, at GpSimd's pace.
            ///
            /// Numerics: values are copied exactly (decoded to f32, then rounded to `out`'s dtype).
            ///
            /// Cost: `64 + 4N` cycles with N = max(P, F).
            PartitionTranspose = 0x52, "partition_transpose", $crate::EngineClass::GPSIMD,
                { out: TileAp, src: TileAp };
        }
    };
}
