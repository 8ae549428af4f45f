//! The error codes of the frontend, one per error class, in one table.
//!
//! Codes are stable: tests and users refer to them, so a code is never reused for another
//! class. `E01xx` are lexical and syntax errors, `E02xx` names, `E03xx` calls and their
//! arguments, `E04xx` shapes, `E05xx` types, sizes and dims, `E06xx` statements and the
//! signature, `E07xx` the file and kernel selection, `E08xx` integer expressions of sizes,
//! indexing and joining, `E09xx` the integer and boolean dtypes, comparisons, selection and
//! gathers of language version 2, `E10xx` convolution and pooling.

/// A character the lexer does not know.
pub const UNKNOWN_CHARACTER: &str = "E0101";
/// A number that is not a valid integer or float literal (`1e`, `2x`, `1.2.3`).
pub const MALFORMED_NUMBER: &str = "E0102";
/// A token where the grammar expects something else.
pub const UNEXPECTED_TOKEN: &str = "E0103";
/// The file ends in the middle of a kernel.
pub const UNEXPECTED_EOF: &str = "E0104";
/// An expression nested deeper than the limit.
pub const NESTED_TOO_DEEPLY: &str = "E0105";

/// A value name that is neither a parameter nor a `let`.
pub const UNKNOWN_NAME: &str = "E0201";
/// A call of a function that is not a builtin.
pub const UNKNOWN_BUILTIN: &str = "E0202";
/// A name defined twice in one kernel (sizes, parameters and lets share one namespace).
pub const DUPLICATE_NAME: &str = "E0203";
// E0204 (a size name used as a value) is retired: since version 2 a size is a weak scalar
// where a value is expected. The code is never reused.

/// A call with the wrong number of positional arguments.
pub const WRONG_ARGUMENT_COUNT: &str = "E0301";
/// A keyword argument the builtin does not take.
pub const UNKNOWN_KEYWORD: &str = "E0302";
/// A keyword argument given twice.
pub const DUPLICATE_KEYWORD: &str = "E0303";
/// A required keyword argument left out.
pub const MISSING_KEYWORD: &str = "E0304";
/// An argument of the wrong kind (a list where a tensor is expected, a tensor where an
/// integer is expected, ...).
pub const WRONG_ARGUMENT_KIND: &str = "E0305";
/// A positional argument after a keyword argument.
pub const POSITIONAL_AFTER_KEYWORD: &str = "E0306";

/// Shapes that do not broadcast.
pub const SHAPES_DO_NOT_BROADCAST: &str = "E0401";
/// A matmul whose inner dimensions differ.
pub const MATMUL_INNER_MISMATCH: &str = "E0402";
/// A matmul operand of rank 1 (or a scalar).
pub const MATMUL_RANK: &str = "E0403";
/// A reduction axis outside the operand's rank.
pub const AXIS_OUT_OF_RANGE: &str = "E0404";
/// A transpose permutation that is not a permutation of the axes.
pub const BAD_PERMUTATION: &str = "E0405";
/// A reshape that changes the number of elements.
pub const RESHAPE_ELEMENT_COUNT: &str = "E0406";
/// A reshape target dim that is not >= 1 (or more than one `-1`).
pub const BAD_RESHAPE_DIM: &str = "E0407";
/// An operation that needs a tensor applied to a scalar.
pub const SCALAR_OPERAND: &str = "E0408";
/// An operation whose operand or result rank is outside what it supports (rank 1 to 4
/// for every value, rank >= 2 for `transpose` and `tril`).
pub const OPERATION_RANK: &str = "E0409";

/// A size with neither a default nor a define.
pub const MISSING_SIZE: &str = "E0501";
/// A define naming no size of the kernel.
pub const UNKNOWN_DEFINE: &str = "E0502";
/// A dim or size that is zero or negative.
pub const ZERO_DIM: &str = "E0503";
/// A dim, size or element count too large.
pub const DIM_OVERFLOW: &str = "E0504";
/// A declared type of rank outside 1 to 6.
pub const TYPE_RANK: &str = "E0505";
/// A dim naming no size of the kernel.
pub const UNBOUND_SIZE: &str = "E0506";

/// A returned value whose type differs from the signature's.
pub const RESULT_MISMATCH: &str = "E0601";
/// A return with a different number of values than the signature declares.
pub const RESULT_COUNT: &str = "E0602";
/// A kernel without `return`.
pub const MISSING_RETURN: &str = "E0603";
/// A second `return`.
pub const DUPLICATE_RETURN: &str = "E0604";
/// A statement after the `return`.
pub const MISPLACED_RETURN: &str = "E0605";
/// A `let` whose value does not have the annotated type.
pub const LET_ANNOTATION_MISMATCH: &str = "E0606";

/// A file without any kernel.
pub const NO_KERNEL: &str = "E0701";
/// Two kernels with the same name.
pub const DUPLICATE_KERNEL: &str = "E0702";
/// A kernel selected by name (`-k`) that the file does not hold.
pub const UNKNOWN_KERNEL: &str = "E0703";

/// An expression where an integer expression of literals and sizes is expected.
pub const NOT_AN_INTEGER: &str = "E0801";
/// A `/` of sizes that leaves a remainder (or divides by zero).
pub const INEXACT_DIVISION: &str = "E0802";
/// An integer expression whose value exceeds 2^48 in magnitude.
pub const INTEGER_OVERFLOW: &str = "E0803";
/// An integer index outside `[-n, n)`.
pub const INDEX_OUT_OF_RANGE: &str = "E0804";
/// A slice step of zero.
pub const ZERO_STEP: &str = "E0805";
/// More indices than the operand has axes.
pub const TOO_MANY_INDICES: &str = "E0806";
/// `...` twice in one index.
pub const DUPLICATE_ELLIPSIS: &str = "E0807";
/// An index that drops every axis.
pub const INDEX_DROPS_EVERY_AXIS: &str = "E0808";
/// Concat parts that differ in rank or in a dim off the joined axis.
pub const CONCAT_MISMATCH: &str = "E0809";
/// Pad widths that are not one non-negative integer per axis.
pub const BAD_PAD_WIDTHS: &str = "E0810";
/// A `broadcast_to` target the operand does not broadcast to.
pub const BAD_BROADCAST_TARGET: &str = "E0811";
/// An integer or boolean operand meeting a float one (or a boolean meeting an integer)
/// without an `as`.
pub const MIXED_KINDS: &str = "E0901";
/// An integer literal meeting an `i32` that does not fit in it.
pub const INTEGER_LITERAL_RANGE: &str = "E0902";
/// An operation its operand's dtype does not support (`/` or `exp` of an `i32`, arithmetic
/// on `bool`, a logical operation on numbers).
pub const DTYPE_NOT_SUPPORTED: &str = "E0903";
/// A chained comparison such as `a < b < c`.
pub const CHAINED_COMPARISON: &str = "E0904";
/// A `where` condition that is not `bool`.
pub const WHERE_CONDITION: &str = "E0905";
/// `take` indices that are not an `i32` tensor.
pub const TAKE_INDICES: &str = "E0906";
/// `argmax`, `argmin` or `cumsum` given a list of axes: they take one axis.
pub const SINGLE_AXIS_ONLY: &str = "E0940";
/// `argmax`, `argmin` or `cumsum` of a `bool` tensor.
pub const BOOL_SCAN_OPERAND: &str = "E0941";

/// A `conv` operand of the wrong rank: `x` not `[N, C, L]` or `[N, C, H, W]`, or `w` not of
/// `x`'s rank.
pub const CONV_RANK: &str = "E1000";
/// A `conv` whose channels (`C` or `O`) do not divide by `groups`, or `groups` below 1.
pub const CONV_GROUPS: &str = "E1001";
/// A `conv` weight whose channel dim is not `C / groups`.
pub const CONV_WEIGHT_CHANNELS: &str = "E1002";
/// A `conv` list (`stride`, `padding`, `dilation`) without one entry per spatial axis.
pub const CONV_LIST_LENGTH: &str = "E1003";
/// A `conv` stride or dilation below 1, or a negative padding.
pub const CONV_BAD_PARAMETER: &str = "E1004";
/// A `conv` window (dilated) larger than the padded input.
pub const CONV_WINDOW: &str = "E1005";

/// A pool whose operand is not `[N, C, L]` or `[N, C, H, W]`.
pub const POOL_RANK: &str = "E1020";
/// A pool's `window`, `stride`, `padding` or `dilation` list without one entry per
/// spatial axis.
pub const POOL_LIST_LENGTH: &str = "E1021";
/// A pool window, stride or dilation below 1, or a negative padding.
pub const POOL_NOT_POSITIVE: &str = "E1022";
/// A pool padding over half its window.
pub const POOL_PADDING: &str = "E1023";
/// A pool window (dilated) longer than the padded input.
pub const POOL_WINDOW_TOO_LARGE: &str = "E1024";
/// A pool of an `i32` or `bool` operand.
pub const POOL_DTYPE: &str = "E1025";

/// Every code with a one-line summary, in order (used by the documentation test).
pub const ALL: &[(&str, &str)] = &[
    (UNKNOWN_CHARACTER, "unknown character"),
    (MALFORMED_NUMBER, "malformed number"),
    (UNEXPECTED_TOKEN, "unexpected token"),
    (UNEXPECTED_EOF, "unexpected end of file"),
    (NESTED_TOO_DEEPLY, "expression nested too deeply"),
    (UNKNOWN_NAME, "unknown name"),
    (UNKNOWN_BUILTIN, "unknown builtin"),
    (DUPLICATE_NAME, "duplicate name"),
    (WRONG_ARGUMENT_COUNT, "wrong number of arguments"),
    (UNKNOWN_KEYWORD, "unknown keyword argument"),
    (DUPLICATE_KEYWORD, "duplicate keyword argument"),
    (MISSING_KEYWORD, "missing keyword argument"),
    (WRONG_ARGUMENT_KIND, "argument of the wrong kind"),
    (
        POSITIONAL_AFTER_KEYWORD,
        "positional argument after keyword argument",
    ),
    (SHAPES_DO_NOT_BROADCAST, "shapes do not broadcast"),
    (MATMUL_INNER_MISMATCH, "matmul inner dimension mismatch"),
    (MATMUL_RANK, "matmul operand of rank below 2"),
    (AXIS_OUT_OF_RANGE, "axis out of range"),
    (BAD_PERMUTATION, "bad permutation"),
    (RESHAPE_ELEMENT_COUNT, "reshape changes the element count"),
    (BAD_RESHAPE_DIM, "bad reshape dim"),
    (SCALAR_OPERAND, "operation needs a tensor, found a scalar"),
    (OPERATION_RANK, "rank not supported by the operation"),
    (MISSING_SIZE, "size without a value"),
    (UNKNOWN_DEFINE, "define naming no size"),
    (ZERO_DIM, "dim or size below 1"),
    (DIM_OVERFLOW, "dim, size or element count too large"),
    (TYPE_RANK, "rank outside 1 to 6"),
    (UNBOUND_SIZE, "dim naming no size"),
    (RESULT_MISMATCH, "returned type differs from the signature"),
    (RESULT_COUNT, "wrong number of returned values"),
    (MISSING_RETURN, "missing return"),
    (DUPLICATE_RETURN, "duplicate return"),
    (MISPLACED_RETURN, "statement after return"),
    (LET_ANNOTATION_MISMATCH, "let annotation mismatch"),
    (NO_KERNEL, "no kernel in the file"),
    (DUPLICATE_KERNEL, "duplicate kernel name"),
    (UNKNOWN_KERNEL, "unknown kernel"),
    (NOT_AN_INTEGER, "not an integer expression of sizes"),
    (INEXACT_DIVISION, "inexact division of sizes"),
    (INTEGER_OVERFLOW, "integer expression too large"),
    (INDEX_OUT_OF_RANGE, "index out of range"),
    (ZERO_STEP, "slice step of zero"),
    (TOO_MANY_INDICES, "too many indices"),
    (DUPLICATE_ELLIPSIS, "`...` used twice"),
    (INDEX_DROPS_EVERY_AXIS, "index drops every axis"),
    (CONCAT_MISMATCH, "concat parts do not match"),
    (BAD_PAD_WIDTHS, "bad pad widths"),
    (BAD_BROADCAST_TARGET, "bad broadcast_to target"),
    (MIXED_KINDS, "integers or booleans mixed with floats"),
    (INTEGER_LITERAL_RANGE, "integer literal outside i32"),
    (DTYPE_NOT_SUPPORTED, "operation not defined for the dtype"),
    (CHAINED_COMPARISON, "chained comparison"),
    (WHERE_CONDITION, "where condition not bool"),
    (TAKE_INDICES, "take indices not i32"),
    (
        SINGLE_AXIS_ONLY,
        "argmax, argmin or cumsum over a list of axes",
    ),
    (BOOL_SCAN_OPERAND, "argmax, argmin or cumsum of bool"),
    (CONV_RANK, "conv operand of the wrong rank"),
    (CONV_GROUPS, "conv channels not divisible by groups"),
    (CONV_WEIGHT_CHANNELS, "conv weight channels not C / groups"),
    (CONV_LIST_LENGTH, "conv list of the wrong length"),
    (
        CONV_BAD_PARAMETER,
        "conv stride, dilation or padding out of range",
    ),
    (CONV_WINDOW, "conv window larger than the padded input"),
    (POOL_RANK, "pool operand not [N, C, L] or [N, C, H, W]"),
    (
        POOL_LIST_LENGTH,
        "pool list without one entry per spatial axis",
    ),
    (POOL_NOT_POSITIVE, "pool window, stride or dilation below 1"),
    (POOL_PADDING, "pool padding over half the window"),
    (
        POOL_WINDOW_TOO_LARGE,
        "pool window larger than the padded input",
    ),
    (POOL_DTYPE, "pool of integers or booleans"),
];

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (code, _) in super::ALL {
            assert!(seen.insert(*code), "{code} is used twice");
        }
    }
}
