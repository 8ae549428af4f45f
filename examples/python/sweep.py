"""Checks a kernel against NumPy, then sweeps a size and prints its efficiency per size:
the loop a kernel engineer runs while tuning.

    pip install ./python
    python examples/python/sweep.py              # softmax over 128 .. 2048 rows
    python examples/python/sweep.py --sizes 128,512
"""

import argparse
import pathlib

import numpy as np

import tessera

ROOT = pathlib.Path(__file__).resolve().parents[2]


def softmax(x):
    """The NumPy implementation the kernel is checked against."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default=str(ROOT / "examples" / "softmax.tsr"))
    parser.add_argument("--size", default="N", help="the size to sweep (a -D name)")
    parser.add_argument("--sizes", default="128,256,512,1024,2048")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.size:>6} {'cycles':>10} {'bound':>10} {'roofline':>10} {'max error':>10}")
    for n in (int(s) for s in args.sizes.split(",")):
        k = tessera.compile_file(args.kernel, defines={args.size: n})
        (name, _, shape), = k.params
        x = rng.standard_normal(shape).astype(np.float32)
        r = k.run(x, check=True)
        # The kernel against NumPy, beyond the check against the reference evaluator.
        np.testing.assert_allclose(r.outputs[0], softmax(x), rtol=1e-4, atol=1e-6)
        rep = r.report
        eff = rep.get("roofline_efficiency")
        print(
            f"{n:>6} {rep['total_cycles']:>10} {rep.get('bound_cycles') or '-':>10} "
            f"{eff if eff is None else round(eff, 3)!s:>10} {r.max_error:>10.2e}"
        )


if __name__ == "__main__":
    main()
