# Writes tests/data/pooling_pytorch.txt: kernels with max_pool and avg_pool and the values
# PyTorch's max_pool1d/2d and avg_pool1d/2d give for them, computed here with NumPy by
# PyTorch's own rules (written independently of the compiler's reference evaluator):
# output sizes with the ceil_mode rule that the last window starts inside the input or the
# left padding, max over the window with -inf padding (NaN propagates), avg as an f32 sum
# from +0.0 in row-major window order divided by PyTorch's divisor (the window clipped to
# the padded input with count_include_pad, else to the input).
# Run: python3 tests/data/pooling_pytorch.py > tests/data/pooling_pytorch.txt
# Input i (row-major) of a case is ((i * 7919) mod 257 - 128) / 16 as f32; in cases whose
# name ends in `_special`, NaN where i mod 37 = 5 and -inf where i mod 41 = 7.
import math
import numpy as np

f32 = np.float32


def inputs(shape, special):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    x = (((i * 7919) % 257) - 128).astype(np.float32) / f32(16)
    if special:
        x[i % 37 == 5] = np.nan
        x[i % 41 == 7] = -np.inf
    return x.reshape(shape)


def out_len(n, k, s, p, d, ceil):
    num = n + 2 * p - d * (k - 1) - 1
    assert num >= 0
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def pool(x, kind, k, s, p, d, ceil, cip):
    # x: [N, C, *spatial]; 1-D pools get a spatial axis of 1 in front.
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
        k, s, p, d = [1] + k, [1] + s, [0] + p, [1] + d
    N, C, H, W = x.shape
    OH = out_len(H, k[0], s[0], p[0], d[0], ceil)
    OW = out_len(W, k[1], s[1], p[1], d[1], ceil)
    out = np.zeros((N, C, OH, OW), dtype=np.float32)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
                    if kind == "max":
                        m = f32(-np.inf)
                        for i in range(k[0]):
                            for j in range(k[1]):
                                y, z = h0 + i * d[0], w0 + j * d[1]
                                if 0 <= y < H and 0 <= z < W:
                                    v = x[n, c, y, z]
                                    if np.isnan(v) or np.isnan(m):
                                        m = f32(np.nan)
                                    elif v > m:
                                        m = v
                        out[n, c, oh, ow] = m
                    else:
                        acc = f32(0.0)
                        for i in range(k[0]):
                            for j in range(k[1]):
                                y, z = h0 + i, w0 + j
                                if 0 <= y < H and 0 <= z < W:
                                    acc = f32(acc + x[n, c, y, z])
                        # PyTorch's avg_pool2d divisor.
                        h1 = min(h0 + k[0], H + p[0])
                        w1 = min(w0 + k[1], W + p[1])
                        size = (h1 - h0) * (w1 - w0)
                        if not cip:
                            size = (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))
                        out[n, c, oh, ow] = f32(acc / f32(size))
    return out[:, :, 0, :] if one_d else out


def lst(v):
    return "[" + ", ".join(str(a) for a in v) + "]"


print("# Produced by: python3 tests/data/pooling_pytorch.py > tests/data/pooling_pytorch.txt")
print("# Inputs: ((i * 7919) mod 257 - 128) / 16; `_special` cases NaN at i mod 37 = 5, -inf at i mod 41 = 7.")


def case(name, kind, shape, k, s=None, p=None, d=None, ceil=False, cip=True):
    sp = len(shape) - 2
    s_ = s if s is not None else k
    p_ = p if p is not None else [0] * sp
    d_ = d if d is not None else [1] * sp
    x = inputs(shape, name.endswith("_special"))
    y = pool(x, kind, list(k), list(s_), list(p_), list(d_), ceil, cip)
    args = [f"window={lst(k)}"]
    if s is not None:
        args.append(f"stride={lst(s)}")
    if p is not None:
        args.append(f"padding={lst(p)}")
    if d is not None:
        args.append(f"dilation={lst(d)}")
    if ceil:
        args.append("ceil_mode=true")
    if kind == "avg" and not cip:
        args.append("count_include_pad=false")
    ty = lambda t: "f32[" + ", ".join(str(a) for a in t) + "]"
    src = f"kernel k(x: {ty(shape)}) -> {ty(y.shape)} {{ return {kind}_pool(x, {', '.join(args)}); }}"
    print(f"case {name}")
    print(f"src {src}")
    vals = " ".join(repr(float(v)) if not math.isnan(v) else "NaN" for v in y.reshape(-1))
    print(f"out {','.join(str(a) for a in y.shape)} {vals}")
    print()


case("max1d", "max", (2, 3, 10), [3], [2], [1])
case("max1d_dilation_ceil", "max", (2, 3, 10), [2], [3], [1], [2], ceil=True)
case("max1d_ceil_rule", "max", (1, 2, 5), [2], [2], [1], ceil=True)
case("max2d_ceil", "max", (2, 2, 7, 6), [3, 2], [2, 2], [1, 1], ceil=True)
case("max2d_floor", "max", (2, 2, 7, 6), [3, 2], [2, 2], [1, 1])
case("max2d_default_stride", "max", (1, 3, 6, 6), [2, 2])
case("max2d_dilation", "max", (1, 2, 9, 8), [3, 3], [1, 2], [1, 0], [2, 3])
case("max2d_resnet_special", "max", (2, 2, 8, 8), [3, 3], [2, 2], [1, 1])
case("max_global", "max", (2, 4, 3, 7), [3, 7])
case("avg1d", "avg", (2, 3, 10), [3], [2], [1])
case("avg1d_exclude_ceil", "avg", (2, 3, 10), [3], [2], [1], ceil=True, cip=False)
case("avg2d_ceil_include", "avg", (2, 2, 7, 6), [3, 3], [2, 2], [1, 1], ceil=True)
case("avg2d_ceil_exclude", "avg", (2, 2, 7, 6), [3, 3], [2, 2], [1, 1], ceil=True, cip=False)
case("avg2d_floor_exclude", "avg", (2, 2, 7, 6), [3, 2], [1, 2], [1, 1], cip=False)
case("avg2d_2x2", "avg", (1, 4, 8, 8), [2, 2])
case("avg2d_special", "avg", (2, 2, 8, 8), [3, 3], [2, 2], [1, 1])
case("avg_global", "avg", (2, 4, 5, 5), [5, 5])
