"""Tessera from Python: compile tensor kernels for a Trainium-like accelerator and run them
on its bit-exact interpreter with a timing model.

    import numpy as np, tessera
    k = tessera.compile_file("examples/softmax.tsr")
    y = k(np.random.rand(128, 1000).astype(np.float32))
    r = k.run(np.ones((128, 1000), np.float32), check=True)
    print(r.report)          # the timing report of `tessera run --report`

The compiler and interpreter are the Rust ones of the `tessera` CLI (the native module
`tessera._tessera`); this module turns NumPy arrays into the bytes they read and their
bytes back into arrays, and the native errors into the classes below. See docs/python.md.
"""

from __future__ import annotations

import json as _json
import os as _os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import ml_dtypes as _ml
import numpy as _np

from . import _tessera

__all__ = [
    "compile",
    "compile_file",
    "load",
    "Kernel",
    "Result",
    "Report",
    "Diagnostic",
    "Error",
    "CompileError",
    "InputError",
    "RunError",
    "CheckError",
    "DTYPES",
]

#: The NumPy dtype of each of the language's dtypes (i32 and bool too): outputs come back
#: in these, and an input in its parameter's dtype is read bit for bit.
DTYPES: Dict[str, _np.dtype] = {
    "f32": _np.dtype(_np.float32),
    "bf16": _np.dtype(_ml.bfloat16),
    "f16": _np.dtype(_np.float16),
    "f8e4m3": _np.dtype(_ml.float8_e4m3fn),
    "f8e5m2": _np.dtype(_ml.float8_e5m2),
    "i32": _np.dtype(_np.int32),
    "bool": _np.dtype(_np.bool_),
}

# The tag the native module reads each accepted input dtype as; float64 is rounded once,
# directly to the parameter's dtype.
_TAGS: Dict[_np.dtype, str] = {dt: name for name, dt in DTYPES.items()}
_TAGS[_np.dtype(_np.float64)] = "f64"
# The other integer dtypes fill `i32` parameters when their values fit in i32 (the native
# module checks each value and names the first that does not).
for _tag, _dt in (
    ("i8", _np.int8),
    ("i16", _np.int16),
    ("i64", _np.int64),
    ("u8", _np.uint8),
    ("u16", _np.uint16),
    ("u32", _np.uint32),
    ("u64", _np.uint64),
):
    _TAGS[_np.dtype(_dt)] = _tag

# The run options: keyword-only, never taken as inputs (an input of that name goes in
# `inputs={...}`).
_OPTIONS = ("check", "trace", "inputs", "random", "debug_checks", "max_instructions", "max_cycles")


class Error(Exception):
    """The base class of every error Tessera raises."""


class CompileError(Error):
    """The kernel does not compile: a syntax or type error in the source (with
    `diagnostics`), an unknown kernel or pass name, or a kernel too large for the machine.
    `str()` is the rendered diagnostic, with the source line and a caret, as the CLI
    prints it."""

    def __init__(self, message: str, diagnostics: Sequence["Diagnostic"] = ()):
        super().__init__(message)
        #: The diagnostics, in source order (empty when the error is not in the source).
        self.diagnostics: List[Diagnostic] = list(diagnostics)


class InputError(Error, TypeError, ValueError):
    """An input that does not fit the call: a wrong shape or dtype, an unknown parameter
    name, an input given twice or missing. Also a `TypeError` and a `ValueError`, as
    Python's own calls raise for such mistakes."""


class RunError(Error):
    """The run failed on the interpreter: a fault, a limit (instructions, cycles), a
    deadlock, an output not written, a `.tbin` that does not load, or an output file that
    cannot be written."""


class CheckError(Error):
    """`check=True` found an output outside the error the reference allows.
    `comparisons` holds the per-output lines `tessera run --check` prints."""

    def __init__(self, message: str, comparisons: Sequence[str] = ()):
        super().__init__(message)
        #: One line per output: its largest errors and worst element.
        self.comparisons: List[str] = list(comparisons)


class Diagnostic:
    """One diagnostic of a `CompileError`: severity (`error`, `warning`, `note`), code
    (`E0101`), message, and the 1-based line and column of its primary span (0 if it has
    none)."""

    __slots__ = ("severity", "code", "message", "line", "column")

    def __init__(self, severity: str, code: str, message: str, line: int, column: int):
        self.severity = severity
        self.code = code
        self.message = message
        self.line = line
        self.column = column

    def as_dict(self) -> Dict[str, Any]:
        """The diagnostic as a dict with the keys severity, code, message, line, column."""
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return (
            f"Diagnostic({self.severity}[{self.code}] at {self.line}:{self.column}: "
            f"{self.message!r})"
        )


def _translate(e: "_tessera.NativeError") -> Error:
    """The public exception of a native error."""
    kind, message, details = e.args
    if kind == "compile":
        return CompileError(message, [Diagnostic(*d) for d in details])
    if kind in ("input", "usage"):
        return InputError(message)
    if kind == "run":
        return RunError(message)
    if kind == "check":
        return CheckError(message, details)
    return Error(message)


def _native(fn, *args, **kwargs):
    """Calls the native module, raising its errors as the public classes."""
    try:
        return fn(*args, **kwargs)
    except _tessera.NativeError as e:
        raise _translate(e) from None


class Report(dict):
    """The timing report of a run: a dict with the keys of `tessera run --report-json`
    (total cycles, engines, roofline bound and efficiency, ...), whose `str()` is the text
    of `tessera run --report`."""

    def __init__(self, data: Mapping[str, Any], text: Any):
        super().__init__(data)
        # The text, or a function that makes it (made on the first `str()`).
        self._text = text

    def __str__(self) -> str:
        if callable(self._text):
            self._text = self._text()
        return self._text


class Result:
    """What `Kernel.run` returns: `outputs` (a tuple of arrays, in result order),
    `report` (a `Report`; None for a reference run), and after `check=True`, `max_error`
    (the largest absolute error of any output against the reference) and `comparisons`
    (the per-output lines of `tessera run --check`)."""

    __slots__ = ("outputs", "max_error", "comparisons", "_timing", "_report")

    def __init__(self, outputs, timing, max_error, comparisons):
        self.outputs: Tuple[_np.ndarray, ...] = outputs
        self.max_error: Optional[float] = max_error
        self.comparisons: List[str] = comparisons
        self._timing = timing
        self._report: Optional[Report] = None

    @property
    def report(self) -> Optional[Report]:
        """The timing report (a `Report`), built on first use: making it costs more than
        running a small kernel, so a run that never looks at it does not pay for it."""
        if self._report is None and self._timing is not None:
            self._report = Report(_json.loads(self._timing.json()), self._timing.text)
        return self._report

    def __repr__(self) -> str:
        cycles = self._timing.total_cycles if self._timing is not None else None
        shapes = ", ".join(f"{o.dtype}{list(o.shape)}" for o in self.outputs)
        return f"Result(outputs=({shapes}), total_cycles={cycles}, max_error={self.max_error})"


def _wire(obj: Any) -> Tuple[Any, str, Tuple[int, ...]]:
    """An input as the native module reads it: a flat uint8 view of its bytes (no copy for
    a C-contiguous little-endian array), its dtype tag and its shape."""
    a = _np.asarray(obj)
    shape = tuple(int(d) for d in a.shape)
    tag = _TAGS.get(a.dtype)
    if tag is None and not a.dtype.isnative and a.dtype.newbyteorder("=") in _TAGS:
        a = a.astype(a.dtype.newbyteorder("="))
        tag = _TAGS[a.dtype]
    if tag is None:
        return (None, "unsupported:" + str(a.dtype), shape)
    a = _np.ascontiguousarray(a)
    return (a.reshape(-1).view(_np.uint8), tag, shape)


def _array(buf: bytearray, dtype: str, shape: Sequence[int]) -> _np.ndarray:
    """An output array over the bytes the native module copied out of simulated HBM (no
    further copy; the array owns them and is writable)."""
    return _np.frombuffer(buf, dtype=DTYPES[dtype]).reshape(tuple(shape))


def _signature(specs: Iterable[Tuple[str, str, Tuple[int, ...]]]) -> str:
    return ", ".join(f"{n}: {d}[{', '.join(str(x) for x in s)}]" for n, d, s in specs)


class Kernel:
    """A compiled kernel (from `compile`/`compile_file`) or a loaded program (`load`).

    Call it on NumPy arrays to run it on the interpreter: `k(x)`, `k(x=x)`,
    `k(inputs={"x": x})`; one result comes back as an array, several as a tuple.
    `run` also returns the timing report and can check against the reference.
    """

    def __init__(self, native: "_tessera.Kernel"):
        self._k = native

    @property
    def name(self) -> str:
        """The kernel's name (as the program records it, for a loaded program)."""
        return self._k.name

    @property
    def params(self) -> List[Tuple[str, str, Tuple[int, ...]]]:
        """The parameters: a list of (name, dtype, shape), e.g. [("x", "f32", (128, 1000))]."""
        return [(n, d, tuple(s)) for n, d, s in self._k.params]

    @property
    def results(self) -> List[Tuple[str, str, Tuple[int, ...]]]:
        """The results: a list of (name, dtype, shape), in result order."""
        return [(n, d, tuple(s)) for n, d, s in self._k.results]

    @property
    def asm(self) -> str:
        """The program as assembly text (`tessera compile --emit asm`)."""
        return self._k.asm()

    @property
    def passes(self) -> str:
        """The pipeline as `tessera compile --list-passes` prints it, with the passes this
        kernel was compiled without marked `(disabled)`."""
        return self._k.passes()

    def ir(self, stage: str = "tensor", *, after: Optional[str] = None) -> str:
        """The tensor IR (`stage="tensor"`) or tile IR (`"tile"`) of the compiled kernel,
        as `--emit tensor-ir|tile-ir`; with `after=PASS` (or `"all"`), the dumps of
        `--dump-after PASS` (the kernel is compiled again). Not for a loaded program."""
        return _native(self._k.ir, stage, after)

    def save(self, path: Union[str, "_os.PathLike[str]"]) -> None:
        """Writes the program as a `.tbin` (`--emit bin`), replacing the file in one step.
        A kernel from `compile_file` records its source, so `load(path).run(check=True)`
        works; one from `compile` (a string) records none."""
        _native(self._k.save, _os.fspath(path))

    def _bind(self, args, kwargs, inputs):
        named = list(kwargs.items())
        if inputs is not None:
            for name, value in dict(inputs).items():
                if name in kwargs:
                    raise InputError(
                        f"input `{name}` is given twice (as a keyword and in inputs=); "
                        "give each input once"
                    )
                named.append((name, value))
        return [_wire(a) for a in args], [(str(n), _wire(v)) for n, v in named]

    def run(
        self,
        *args: Any,
        check: bool = False,
        trace: Optional[Union[str, "_os.PathLike[str]"]] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        random: Optional[int] = None,
        debug_checks: Optional[bool] = None,
        max_instructions: Optional[int] = None,
        max_cycles: Optional[int] = None,
        **kwargs: Any,
    ) -> Result:
        """Runs the kernel on the interpreter and returns a `Result`.

        Inputs go positionally, as keywords, or in `inputs={name: array}` (for a
        parameter named like an option or a Python keyword); `random=SEED` fills the ones
        not given with the CLI's reproducible values. `check=True` compares with the
        reference evaluator within the allowed error (raises `CheckError` beyond it);
        `trace=PATH` writes the Chrome trace; `debug_checks` turns the interpreter's
        checks on or off (default: `TESSERA_DEBUG_CHECKS`, else off); `max_instructions`
        and `max_cycles` bound the run (`RunError` past them)."""
        pos, named = self._bind(args, kwargs, inputs)
        outs, timing, lines, max_error = _native(
            self._k.run,
            pos,
            named,
            random=random,
            check=check,
            trace=None if trace is None else _os.fspath(trace),
            debug_checks=debug_checks,
            max_instructions=max_instructions,
            max_cycles=max_cycles,
        )
        return Result(tuple(_array(*o) for o in outs), timing, max_error, lines)

    def __call__(self, *args: Any, inputs: Optional[Mapping[str, Any]] = None, **kwargs: Any):
        """Runs the kernel and returns its result (an array), or a tuple of them when it
        has several. Inputs and options as for `run`."""
        outputs = self.run(*args, inputs=inputs, **kwargs).outputs
        return outputs[0] if len(outputs) == 1 else outputs

    def reference(
        self,
        *args: Any,
        inputs: Optional[Mapping[str, Any]] = None,
        random: Optional[int] = None,
        **kwargs: Any,
    ):
        """The kernel's results by the reference evaluator (`tessera run --reference`), in
        the results' dtypes: an array, or a tuple for several. Inputs as for `run`. A
        loaded program uses the kernel its recorded source gives."""
        pos, named = self._bind(args, kwargs, inputs)
        outs, _, _, _ = _native(self._k.run, pos, named, random=random, reference=True)
        outputs = tuple(_array(*o) for o in outs)
        return outputs[0] if len(outputs) == 1 else outputs

    def __repr__(self) -> str:
        results = ", ".join(f"{d}[{', '.join(str(x) for x in s)}]" for _, d, s in self.results)
        origin = "" if self._k.compiled else " (loaded)"
        return f"<tessera.Kernel {self.name}({_signature(self.params)}) -> {results}{origin}>"


def _defines(defines: Optional[Mapping[str, int]]) -> List[Tuple[str, int]]:
    out = []
    for name, value in (defines or {}).items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"define {name}: `{value!r}` is not an integer")
        out.append((str(name), value))
    return out


def _policy(dtype_policy: str) -> bool:
    if dtype_policy not in ("wide", "strict"):
        raise InputError(f"dtype_policy: `{dtype_policy}` is neither `wide` nor `strict`")
    return dtype_policy == "strict"


def compile(
    source: str,
    *,
    kernel: Optional[str] = None,
    defines: Optional[Mapping[str, int]] = None,
    dtype_policy: str = "wide",
    disable_passes: Sequence[str] = (),
    verify_ir: bool = False,
    name: str = "<string>",
) -> Kernel:
    """Compiles a kernel from its source text. `kernel` picks one of several kernels;
    `defines` sets sizes (`-D`); `dtype_policy` is `wide` (default) or `strict`;
    `disable_passes` lists optimising passes to skip; `verify_ir` runs the IR verifier
    after every pass; `name` is the file name diagnostics show. Raises `CompileError`."""
    return Kernel(
        _native(
            _tessera.compile,
            source,
            name,
            None,
            kernel,
            _defines(defines),
            _policy(dtype_policy),
            list(disable_passes),
            verify_ir,
        )
    )


def compile_file(
    path: Union[str, "_os.PathLike[str]"],
    *,
    kernel: Optional[str] = None,
    defines: Optional[Mapping[str, int]] = None,
    dtype_policy: str = "wide",
    disable_passes: Sequence[str] = (),
    verify_ir: bool = False,
) -> Kernel:
    """Compiles a kernel from a `.tsr` file, with the options of `compile`. The program
    records the file as its origin (for `save` and then `load(...).run(check=True)`)."""
    path = _os.fspath(path)
    return Kernel(
        _native(
            _tessera.compile,
            None,
            path,
            path,
            kernel,
            _defines(defines),
            _policy(dtype_policy),
            list(disable_passes),
            verify_ir,
        )
    )


def load(path: Union[str, "_os.PathLike[str]"]) -> Kernel:
    """Loads a `.tbin` program (from `Kernel.save` or `tessera compile --emit bin`).
    Raises `RunError` when it does not decode, verify or fit the machine."""
    return Kernel(_native(_tessera.load, _os.fspath(path)))
