# Writes tests/data/indexing_numpy.txt: kernels of the language's version 2 (indexing,
# slicing, concat, pad, broadcast_to, size expressions, rank 6) with the values NumPy
# gives for them. Run: python3 tests/data/indexing_numpy.py > tests/data/indexing_numpy.txt
# Input i of a case with shape s is arange(prod(s)) - prod(s) / 2, as f32, row-major.
import numpy as np

cases = []

def case(name, src, shapes, fn):
    ins = []
    for s in shapes:
        n = int(np.prod(s))
        ins.append((np.arange(n, dtype=np.float32) - np.float32(n // 2)).reshape(s))
    outs = fn(*ins)
    if not isinstance(outs, tuple):
        outs = (outs,)
    cases.append((name, src, shapes, [np.asarray(o, dtype=np.float32) for o in outs]))

f = np.float32
case("slice_steps", "kernel k(x: f32[4, 6]) -> f32[2, 3] { return x[1:3, ::2]; }",
     [(4, 6)], lambda x: x[1:3, ::2])
case("negative_steps", "kernel k(x: f32[4, 6]) -> f32[4, 2] { return x[::-1, 4:1:-2]; }",
     [(4, 6)], lambda x: x[::-1, 4:1:-2])
case("integer_indices", "kernel k(x: f32[4, 6]) -> (f32[6], f32[4]) { return (x[2], x[:, -1]); }",
     [(4, 6)], lambda x: (x[2], x[:, -1]))
case("ellipsis", "kernel k(x: f32[2, 3, 4]) -> (f32[2, 3], f32[3, 4], f32[2, 1, 2]) { return (x[..., 1], x[-1, ...], x[:, 1:2, ..., ::3]); }",
     [(2, 3, 4)], lambda x: (x[..., 1], x[-1, ...], x[:, 1:2, ..., ::3]))
case("clamping", "kernel k(x: f32[64]) -> (f32[64], f32[4], f32[64]) { return (x[:1000], x[-4:100], x[-1000::1]); }",
     [(64,)], lambda x: (x[:1000], x[-4:100], x[-1000::1]))
case("negative_past_the_start", "kernel k(x: f32[10]) -> (f32[10], f32[3]) { return (x[100::-1], x[8:2:-2]); }",
     [(10,)], lambda x: (x[100::-1], x[8:2:-2]))
case("rotate_half", "kernel k<D = 4>(x: f32[3, D]) -> f32[3, D] { return concat([-x[..., D / 2:], x[..., :D / 2]], axis=-1); }",
     [(3, 4)], lambda x: np.concatenate([-x[..., 2:], x[..., :2]], axis=-1))
case("concat_three", "kernel k(a: f32[2, 3], b: f32[1, 3], c: f32[2, 3]) -> f32[5, 3] { return concat([a, b, c * 2], axis=0); }",
     [(2, 3), (1, 3), (2, 3)], lambda a, b, c: np.concatenate([a, b, c * f(2)], axis=0))
case("concat_middle_axis", "kernel k(a: f32[2, 1, 3], b: f32[2, 2, 3]) -> f32[2, 3, 3] { return concat([a, b], axis=1); }",
     [(2, 1, 3), (2, 2, 3)], lambda a, b: np.concatenate([a, b], axis=1))
case("pad", "kernel k(x: f32[2, 3]) -> f32[5, 6] { return pad(x, before=[1, 0], after=[2, 3], value=-1.5); }",
     [(2, 3)], lambda x: np.pad(x, ((1, 2), (0, 3)), constant_values=-1.5))
case("pad_default_zero", "kernel k(x: f32[2, 2, 2]) -> f32[2, 4, 3] { return pad(x, before=[0, 1, 0], after=[0, 1, 1]); }",
     [(2, 2, 2)], lambda x: np.pad(x, ((0, 0), (1, 1), (0, 1))))
case("broadcast_to", "kernel k(x: f32[3, 1]) -> f32[2, 3, 4] { return broadcast_to(x, [2, 3, 4]); }",
     [(3, 1)], lambda x: np.broadcast_to(x, (2, 3, 4)))
case("size_expressions", "kernel k<N = 4, D = 8>(x: f32[N, D]) -> f32[N, D / 2] { let h: f32[N, D - D / 2] = x[:, D / 2:]; return h / D + x[:, :(D - 4)] * (N + 1); }",
     [(4, 8)], lambda x: x[:, 4:] / f(8) + x[:, :4] * f(5))
case("size_in_reshape_and_axis", "kernel k<S = 2, H = 3>(x: f32[S * H, 4]) -> f32[S, 4] { return sum(reshape(x, [S, H, 4]), axis=S - 1); }",
     [(6, 4)], lambda x: x.reshape(2, 3, 4).sum(axis=1))
case("rank6", "kernel k(x: f32[1, 2, 1, 2, 1, 3]) -> f32[1, 2, 1, 2, 1, 1] { return max(x * 2, axis=5, keepdims=true); }",
     [(1, 2, 1, 2, 1, 3)], lambda x: (x * f(2)).max(axis=5, keepdims=True))
case("matmul_rank5", "kernel k(a: f32[2, 1, 2, 3, 4], b: f32[2, 4, 5]) -> f32[2, 1, 2, 3, 5] { return a @ b; }",
     [(2, 1, 2, 3, 4), (2, 4, 5)], lambda a, b: np.matmul(a, b))
case("slice_feeds_matmul", "kernel k(a: f32[3, 6], b: f32[8, 2]) -> f32[3, 2] { return a[:, :4] @ b[1:5, :]; }",
     [(3, 6), (8, 2)], lambda a, b: a[:, :4] @ b[1:5, :])
case("slice_feeds_reduction", "kernel k(x: f32[5, 4]) -> f32[3] { return sum(x[::2, 1:], axis=-1); }",
     [(5, 4)], lambda x: x[::2, 1:].sum(axis=-1))
case("negative_index_binds_tightest", "kernel k(x: f32[3, 4], y: f32[4, 2]) -> (f32[4], f32[3, 1]) { return (-x[0], x @ y[..., :1]); }",
     [(3, 4), (4, 2)], lambda x, y: (-x[0], x @ y[..., :1]))
case("slice_of_slice", "kernel k(x: f32[8, 8]) -> f32[2, 3] { let y = x[1:, ::-1]; return y[2:6:2, 1:4]; }",
     [(8, 8)], lambda x: x[1:, ::-1][2:6:2, 1:4])
case("pad_then_reduce", "kernel k(x: f32[3, 2]) -> f32[3] { return max(pad(x, before=[0, 1], after=[0, 1], value=100), axis=1); }",
     [(3, 2)], lambda x: np.pad(x, ((0, 0), (1, 1)), constant_values=100).max(axis=1))

for name, src, shapes, outs in cases:
    print(f"case {name}")
    print(f"src {src}")
    for o in outs:
        vals = " ".join(repr(float(v)) for v in o.reshape(-1))
        print(f"out {','.join(str(d) for d in o.shape)} {vals}")
    print()
