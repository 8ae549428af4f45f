"""Tests of the Python package `tessera`: every call of issue 22, the error classes, dtype
round trips, the ways to pass inputs, threads, save/load and traces."""

import hashlib
import json
import pathlib
import threading
import time

import ml_dtypes
import numpy as np
import pytest

import tessera

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOFTMAX = ROOT / "examples" / "softmax.tsr"
ATTENTION = ROOT / "examples" / "attention.tsr"

ADD = """
kernel add<N = 64>(x: f32[N, 32], y: f32[N, 32]) -> f32[N, 32] {
    return x + y;
}
"""


def softmax_np(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def softmax():
    return tessera.compile_file(SOFTMAX)


@pytest.fixture(scope="module")
def add():
    return tessera.compile(ADD)


def test_compile_file_params_results_repr(softmax):
    assert softmax.params == [("x", "f32", (128, 1000))]
    assert softmax.results == [("out0", "f32", (128, 1000))]
    assert softmax.name == "softmax"
    assert repr(softmax).startswith("<tessera.Kernel softmax(x: f32[128, 1000]) -> f32[128, 1000]")


def test_call_matches_numpy(softmax):
    x = np.random.default_rng(0).standard_normal((128, 1000)).astype(np.float32)
    y = softmax(x)
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float32 and y.shape == (128, 1000)
    np.testing.assert_allclose(y, softmax_np(x), rtol=1e-5, atol=1e-6)
    y[0, 0] = 5.0  # outputs are writable arrays the caller owns


def test_compile_string_with_defines_and_run_check():
    src = ATTENTION.read_text()
    k = tessera.compile(src, kernel="attention", defines={"S": 256})
    assert [p[0] for p in k.params] == ["q", "k", "v"]
    assert k.params[0] == ("q", "bf16", (256, 64))
    rng = np.random.default_rng(1)
    q, kk, v = (rng.standard_normal((256, 64)).astype(ml_dtypes.bfloat16) for _ in range(3))
    r = k.run(q, kk, v, check=True)
    assert isinstance(r, tessera.Result)
    (o,) = r.outputs
    assert o.dtype == ml_dtypes.bfloat16 and o.shape == (256, 64)
    assert r.max_error is not None and 0 <= r.max_error < 0.1
    assert len(r.comparisons) == 1 and r.comparisons[0].startswith("out0: max abs error")
    # The report is the --report-json dict, and its str() the --report text.
    assert isinstance(r.report, dict)
    assert r.report["total_cycles"] > 0
    assert "total" in str(r.report).lower() and str(r.report) != repr(dict(r.report))
    # The reference evaluator, in the result's dtype, close to the run.
    ref = k.reference(q, kk, v)
    assert ref.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(ref.astype(np.float32), o.astype(np.float32), atol=0.05)


def test_positional_keyword_and_inputs_dict_agree(add):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 32)).astype(np.float32)
    y = rng.standard_normal((64, 32)).astype(np.float32)
    want = x + y
    for got in (add(x, y), add(x, y=y), add(y=y, x=x), add(inputs={"x": x, "y": y}),
                add(x, inputs={"y": y})):
        np.testing.assert_array_equal(got, want)


def test_parameter_named_like_an_option_or_keyword():
    k = tessera.compile(
        "kernel k(check: f32[4, 8], lambda: f32[4, 8]) -> f32[4, 8] { return check - lambda; }"
    )
    a = np.full((4, 8), 3.0, np.float32)
    b = np.full((4, 8), 1.0, np.float32)
    r = k.run(inputs={"check": a, "lambda": b}, check=True)
    np.testing.assert_array_equal(r.outputs[0], a - b)
    # `check=` stays the option: an array there is not taken as the input.
    np.testing.assert_array_equal(k(a, b), a - b)


def test_parameters_named_in_and_random_with_a_trace(tmp_path):
    k = tessera.compile(
        "kernel k(in: f32[4, 8], random: f32[4, 8]) -> f32[4, 8] { return in + random; }"
    )
    one = np.ones((4, 8), np.float32)
    r = k.run(inputs={"in": one, "random": 2 * one}, trace=tmp_path / "t.json")
    np.testing.assert_array_equal(r.outputs[0], 3 * one)
    assert json.loads((tmp_path / "t.json").read_text())


def test_ambiguous_calls_raise(add):
    x = np.zeros((64, 32), np.float32)
    with pytest.raises(tessera.InputError, match="given twice"):
        add(x, x=x)
    with pytest.raises(tessera.InputError, match="given twice"):
        add(x=x, inputs={"x": x})
    with pytest.raises(tessera.InputError, match="no parameter `z` \\(its parameters: x, y\\)"):
        add(x, x, z=x)
    with pytest.raises(tessera.InputError, match="no input for parameter `y` \\(f32\\[64, 32\\]\\)"):
        add(x)
    with pytest.raises(tessera.InputError, match="takes 2 input"):
        add(x, x, x)
    # InputError is also a TypeError and a ValueError, and a tessera.Error.
    with pytest.raises(TypeError):
        add(x)
    with pytest.raises(tessera.Error):
        add(x)


def test_wrong_shape_and_dtype(add):
    x = np.zeros((64, 32), np.float32)
    with pytest.raises(
        tessera.InputError,
        match=r"input `y` has shape \(3,\), the parameter is f32\[64, 32\]",
    ):
        add(x, np.zeros(3, np.float32))
    with pytest.raises(tessera.InputError, match="input `y` \\(f32\\[64, 32\\]\\): the array.s dtype int32 does not fit the parameter"):
        add(x, np.zeros((64, 32), np.int32))


def test_inputs_are_converted_with_the_languages_rounding(add):
    x64 = np.linspace(-3, 3, 64 * 32).reshape(64, 32)
    zero = np.zeros((64, 32), np.float16)
    got = add(x64, zero)
    np.testing.assert_array_equal(got, x64.astype(np.float32))
    # A non-contiguous, big-endian input is read as its values.
    xt = np.ascontiguousarray(x64.T).T.astype(">f4")
    np.testing.assert_array_equal(add(xt, zero), x64.astype(np.float32))


def test_random_inputs_are_reproducible(softmax):
    a = softmax.run(random=7).outputs[0]
    b = softmax.run(random=7).outputs[0]
    c = softmax.run(random=8).outputs[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "dtype,np_dtype,bits",
    [
        ("bf16", ml_dtypes.bfloat16, np.uint16),
        ("f16", np.float16, np.uint16),
        ("f8e4m3", ml_dtypes.float8_e4m3fn, np.uint8),
        ("f8e5m2", ml_dtypes.float8_e5m2, np.uint8),
    ],
)
def test_every_bit_pattern_round_trips(dtype, np_dtype, bits):
    n = 1 << (8 * np.dtype(bits).itemsize)
    k = tessera.compile(f"kernel copy(x: {dtype}[{n}]) -> {dtype}[{n}] {{ return x as {dtype}; }}")
    x = np.arange(n, dtype=np.uint64).astype(bits).view(np_dtype)
    y = k(x)
    assert y.dtype == np.dtype(np_dtype) and y.shape == (n,)
    xb, yb = x.view(bits), y.view(bits)
    nan = np.isnan(x.astype(np.float32))
    np.testing.assert_array_equal(yb[~nan], xb[~nan])
    assert np.isnan(y[nan].astype(np.float32)).all()


def test_outputs_in_their_own_dtypes():
    k = tessera.compile(
        "kernel k(x: f32[128, 64]) -> (bf16[128, 64], f16[128, 64], f8e4m3[128, 64], "
        "f8e5m2[128, 64], f32[128, 64]) "
        "{ return (x as bf16, x as f16, x as f8e4m3, x as f8e5m2, x * 2.0); }"
    )
    x = np.random.default_rng(3).uniform(-4, 4, (128, 64)).astype(np.float32)
    outs = k(x)
    assert isinstance(outs, tuple) and len(outs) == 5
    want = [x.astype(ml_dtypes.bfloat16), x.astype(np.float16), x.astype(ml_dtypes.float8_e4m3fn),
            x.astype(ml_dtypes.float8_e5m2), x * 2]
    for got, w in zip(outs, want):
        assert got.dtype == w.dtype
        np.testing.assert_array_equal(got.astype(np.float32), w.astype(np.float32))


def test_text_forms(softmax):
    assert "softmax" in softmax.asm or len(softmax.asm) > 100
    assert "exp" in softmax.ir("tensor")
    assert len(softmax.ir("tile")) > 0
    dump = softmax.ir(after="fusion")
    assert dump.startswith("; after fusion")
    assert "fusion" in softmax.passes and "dce" in softmax.passes
    k = tessera.compile(ADD, disable_passes=["fusion"])
    assert "(disabled)" in k.passes
    with pytest.raises(tessera.InputError, match="no stage"):
        softmax.ir("nope")


def test_compile_error_has_diagnostics():
    src = "kernel k(x: f32[4]) -> f32[4] {\n    return x + $;\n}\n"
    with pytest.raises(tessera.CompileError) as info:
        tessera.compile(src, name="bad.tsr")
    e = info.value
    assert isinstance(e, tessera.Error)
    assert e.diagnostics, "no diagnostics"
    d = e.diagnostics[0]
    assert (d.line, d.column) == (2, 16)
    assert d.code.startswith("E") and d.message
    assert d.as_dict()["line"] == 2
    text = str(e)
    assert "bad.tsr:2:16" in text and "^" in text and "return x + $;" in text


def test_compile_errors_without_diagnostics():
    with pytest.raises(tessera.CompileError, match="no pass is called `nope`"):
        tessera.compile(ADD, disable_passes=["nope"])
    two = ADD + "\nkernel other(x: f32[4]) -> f32[4] { return x * 2.0; }\n"
    with pytest.raises(tessera.CompileError, match="holds 2 kernels"):
        tessera.compile(two)
    with pytest.raises(tessera.CompileError, match="cannot read"):
        tessera.compile_file(ROOT / "no-such-file.tsr")
    with pytest.raises(tessera.InputError):
        tessera.compile(ADD, defines={"N": "x"})


def test_run_error_on_limits(softmax):
    with pytest.raises(tessera.RunError, match="instruction"):
        softmax.run(random=1, max_instructions=3)
    assert issubclass(tessera.RunError, tessera.Error)


def test_check_refuses_a_changed_source(tmp_path):
    src = tmp_path / "k.tsr"
    src.write_text("kernel k(x: f32[4, 8]) -> f32[4, 8] { return x * 2.0; }\n")
    tessera.compile_file(src).save(tmp_path / "k.tbin")
    p = tessera.load(tmp_path / "k.tbin")
    x = np.ones((4, 8), np.float32)
    assert p.run(x, check=True).max_error == 0
    src.write_text("kernel k(x: f32[4, 8]) -> f32[4, 8] { return x * 3.0; }\n")
    with pytest.raises(tessera.RunError, match="has changed since it was compiled"):
        p.run(x, check=True)


def test_check_error_on_a_real_mismatch(tmp_path):
    # A compiled kernel matches its reference, so the mismatch needs a program that is not
    # its recorded source's: the program of `x * 3.0` with its origin rewritten to name
    # the file and SHA3-256 of `x * 2.0` (paths of the same length; nothing checksums them).
    a, b = tmp_path / "a.tsr", tmp_path / "b.tsr"
    a.write_text("kernel k(x: f32[4, 8]) -> f32[4, 8] { return x * 2.0; }\n")
    b.write_text("kernel k(x: f32[4, 8]) -> f32[4, 8] { return x * 3.0; }\n")
    tessera.compile_file(b).save(tmp_path / "b.tbin")
    data = (tmp_path / "b.tbin").read_bytes()
    sha = lambda f: hashlib.sha3_256(f.read_bytes()).digest()  # noqa: E731
    path = lambda f: str(f.resolve()).encode()  # noqa: E731
    assert data.count(sha(b)) == 1 and data.count(path(b)) >= 1
    data = data.replace(sha(b), sha(a)).replace(path(b), path(a))
    (tmp_path / "swapped.tbin").write_bytes(data)
    p = tessera.load(tmp_path / "swapped.tbin")
    x = np.ones((4, 8), np.float32)
    np.testing.assert_array_equal(p(x), 3 * x)
    with pytest.raises(tessera.CheckError, match=r"out0\[0\] is 3, the reference says 2") as info:
        p.run(x, check=True)
    assert isinstance(info.value, tessera.Error)
    assert len(info.value.comparisons) == 1
    assert "32 elements outside the allowed error" in info.value.comparisons[0]


def test_save_load_and_trace(softmax, tmp_path):
    path = tmp_path / "softmax.tbin"
    softmax.save(path)
    p = tessera.load(path)
    assert p.params == softmax.params
    assert "(loaded)" in repr(p)
    x = np.random.default_rng(4).standard_normal((128, 1000)).astype(np.float32)
    np.testing.assert_array_equal(p(x), softmax(x))
    r = p.run(x, check=True, trace=tmp_path / "t.json")
    assert r.max_error is not None
    trace = json.loads((tmp_path / "t.json").read_text())
    assert trace
    np.testing.assert_allclose(p.reference(x), softmax_np(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(tessera.RunError):
        tessera.load(tmp_path / "t.json")
    with pytest.raises(tessera.InputError, match="no IR"):
        p.ir("tensor")


def test_string_compiled_program_cannot_be_checked_after_load(add, tmp_path):
    add.save(tmp_path / "add.tbin")
    p = tessera.load(tmp_path / "add.tbin")
    x = np.ones((64, 32), np.float32)
    np.testing.assert_array_equal(p(x, x), x + x)
    with pytest.raises(tessera.RunError, match="records no kernel source"):
        p.run(x, x, check=True)


def test_two_threads_run_kernels_at_once(softmax, add):
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((128, 1000)).astype(np.float32) for _ in range(2)]
    a = rng.standard_normal((64, 32)).astype(np.float32)
    results = {}
    errors = []
    barrier = threading.Barrier(2)

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                if i == 0:
                    results[i] = softmax(xs[0])
                else:
                    results[i] = (softmax(xs[1]), add(a, a))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    np.testing.assert_allclose(results[0], softmax_np(xs[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][0], softmax_np(xs[1]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(results[1][1], a + a)


def test_run_releases_the_gil():
    # A Python thread keeps ticking while the main thread is inside a run of ~0.2 s: were
    # the GIL held, it could not tick until the run returned.
    k = tessera.compile_file(SOFTMAX, defines={"N": 4096})
    stop = threading.Event()
    ticks = []

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    start = time.perf_counter()
    k.run(random=1)
    end = time.perf_counter()
    stop.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert len(during) >= 3, f"{len(during)} ticks in {end - start:.3f} s"


def test_panics_and_odd_inputs_never_crash(add):
    for bad in (None, "text", [[1, 2]], object()):
        with pytest.raises(tessera.Error):
            add(bad, bad)
    with pytest.raises(tessera.CompileError):
        tessera.compile("\x00\xff kernel (((")
    with pytest.raises(tessera.CompileError, match="more than the machine's"):
        tessera.compile(
            "kernel k(x: f32[1048576, 1048576]) -> f32[1048576, 1048576] { return x * 2.0; }"
        )


def test_stub_and_docstrings_ship():
    pkg = pathlib.Path(tessera.__file__).parent
    assert (pkg / "__init__.pyi").is_file() and (pkg / "py.typed").is_file()
    for name in tessera.__all__:
        obj = getattr(tessera, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
    for member in ("run", "reference", "ir", "save", "params", "results", "asm", "passes"):
        assert getattr(tessera.Kernel, member).__doc__, member


# i32 and bool inputs and results (issue 18): integer arrays fill i32 parameters exactly,
# bool arrays fill bool ones, and i32 and bool results come back as int32 and bool arrays.

EMBED = """
kernel embed(table: f32[50, 16], ids: i32[12]) -> f32[12, 16] {
    return take(table, ids, axis=0);
}
"""

ARGMAX = """
kernel am(x: f32[16, 40]) -> i32[16] {
    return argmax(x, axis=1);
}
"""

IADD = """
kernel iadd(a: i32[4, 8], b: i32[4, 8]) -> i32[4, 8] {
    return a + b;
}
"""

SELECT = """
kernel sel(m: bool[4, 8], x: f32[4, 8], y: f32[4, 8]) -> (f32[4, 8], bool[4, 8]) {
    return (where(m, x, y), logical_not(m));
}
"""


@pytest.fixture(scope="module")
def embed():
    return tessera.compile(EMBED)


@pytest.fixture(scope="module")
def iadd():
    return tessera.compile(IADD)


@pytest.mark.parametrize("np_dtype", [np.int32, np.int64, np.int16, np.int8, np.uint8, np.uint16])
def test_embedding_take_with_integer_indices(embed, np_dtype):
    assert embed.params[1] == ("ids", "i32", (12,))
    table = np.arange(50 * 16, dtype=np.float32).reshape(50, 16) * 0.5 - 7.0
    ids = np.array([0, 49, 3, 3, 17, 1, 48, 25, 0, 2, 30, 11], dtype=np_dtype)
    r = embed.run(table, ids, check=True)
    np.testing.assert_array_equal(r.outputs[0], np.take(table, ids.astype(np.int64), axis=0))
    assert r.max_error == 0.0


def test_embedding_take_negative_and_big_endian_indices(embed):
    table = np.random.default_rng(5).standard_normal((50, 16)).astype(np.float32)
    ids = np.array([-1, -50, 7, -2, 0, 1, 2, 3, 4, 5, 6, 49], dtype=">i4")
    got = embed(table, ids)
    np.testing.assert_array_equal(got, np.take(table, ids.astype(np.int64), axis=0))
    # The reference evaluator reads the same integers.
    np.testing.assert_array_equal(embed.reference(table, ids), got)


def test_take_index_out_of_range_is_a_run_error(embed):
    table = np.zeros((50, 16), np.float32)
    ids = np.zeros(12, np.int32)
    ids[4] = 50
    with pytest.raises(tessera.RunError, match="50"):
        embed(table, ids)


def test_argmax_returns_int32():
    k = tessera.compile(ARGMAX)
    assert k.results[0][1:] == ("i32", (16,))
    x = np.random.default_rng(7).standard_normal((16, 40)).astype(np.float32)
    x[3, 5] = x[3, 30] = 100.0  # A tie: the first position wins, as in NumPy.
    got = k(x)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.argmax(x, axis=1).astype(np.int32))
    ref = k.reference(x)
    assert ref.dtype == np.int32
    np.testing.assert_array_equal(ref, got)


def test_i32_add_wraps_exactly(iadd):
    a = np.full((4, 8), 2**31 - 3, np.int32)
    a[1] = -(2**31)
    a[2] = 16777217  # Not exact in f32: integers never pass through a float.
    b = np.arange(32, dtype=np.int32).reshape(4, 8) - 16
    got = iadd(a, b)
    assert got.dtype == np.int32
    want = (a.astype(np.int64) + b.astype(np.int64) + 2**31) % 2**32 - 2**31
    np.testing.assert_array_equal(got, want.astype(np.int32))
    r = iadd.run(a, b, check=True)
    np.testing.assert_array_equal(r.outputs[0], got)
    np.testing.assert_array_equal(iadd.reference(a, b), got)


def test_i32_random_inputs_match_the_reference(iadd):
    r = iadd.run(random=3, check=True)
    assert r.outputs[0].dtype == np.int32
    assert r.max_error == 0.0
    np.testing.assert_array_equal(iadd.reference(random=3), r.outputs[0])


def test_bool_where_and_bool_result():
    k = tessera.compile(SELECT)
    rng = np.random.default_rng(9)
    m = rng.random((4, 8)) < 0.5
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y = rng.standard_normal((4, 8)).astype(np.float32)
    r = k.run(m, x, y, check=True)
    sel, inv = r.outputs
    np.testing.assert_array_equal(sel, np.where(m, x, y))
    assert inv.dtype == np.bool_
    np.testing.assert_array_equal(inv, ~m)
    ref_sel, ref_inv = k.reference(m, x, y)
    np.testing.assert_array_equal(ref_sel, sel)
    np.testing.assert_array_equal(ref_inv, inv)
    with pytest.raises(tessera.InputError, match=r"input `m` \(bool\[4, 8\]\): the array's dtype float32"):
        k(m.astype(np.float32), x, y)
    with pytest.raises(tessera.InputError, match=r"input `m` \(bool\[4, 8\]\): the array's dtype int32"):
        k(m.astype(np.int32), x, y)
    with pytest.raises(tessera.InputError, match=r"input `x` \(f32\[4, 8\]\): the array's dtype bool"):
        k(m, m, y)


def test_integer_input_errors(embed, iadd):
    table = np.zeros((50, 16), np.float32)
    with pytest.raises(tessera.InputError, match=r"input `ids` \(i32\[12\]\): the array's dtype float32 does not fit"):
        embed(table, np.zeros(12, np.float32))
    with pytest.raises(tessera.InputError, match=r"input `ids` \(i32\[12\]\): the array's dtype float64"):
        embed(table, np.zeros(12))
    with pytest.raises(tessera.InputError, match=r"input `table` \(f32\[50, 16\]\): the array's dtype int64"):
        embed(np.zeros((50, 16), np.int64), np.zeros(12, np.int32))
    big = np.zeros((4, 8), np.int64)
    big[2, 3] = 2**31
    with pytest.raises(
        tessera.InputError,
        match=r"input `b`: the int64 value 2147483648 \(element 19 in C order\) does not fit in i32",
    ):
        iadd(np.zeros((4, 8), np.int32), big)
    small = np.zeros((4, 8), np.int64)
    small[0, 1] = -(2**31) - 1
    with pytest.raises(tessera.InputError, match=r"input `a`: the int64 value -2147483649 \(element 1 "):
        iadd(small, np.zeros((4, 8), np.int32))
    huge = np.zeros((4, 8), np.uint64)
    huge[3, 7] = 2**64 - 1
    with pytest.raises(tessera.InputError, match=r"the uint64 value 18446744073709551615 \(element 31 "):
        iadd(huge, huge)
    # Values that fit are read exactly, whatever the integer dtype.
    fits = np.full((4, 8), 2**31 - 1, np.int64)
    np.testing.assert_array_equal(iadd(fits, np.zeros((4, 8), np.uint32)), fits.astype(np.int32))
