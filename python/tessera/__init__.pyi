"""Type stubs of the `tessera` package (docs/python.md is the reference)."""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

_Path = Union[str, os.PathLike[str]]
_Spec = Tuple[str, str, Tuple[int, ...]]

# The NumPy dtype of each of the language's dtypes, in which outputs come back: f32, bf16,
# f16, f8e4m3, f8e5m2, and i32 (numpy.int32) and bool (numpy.bool_). An i32 parameter takes
# any NumPy integer array whose values fit in i32, a bool parameter a bool array only.
DTYPES: Dict[str, np.dtype]

class Error(Exception): ...

class Diagnostic:
    severity: str
    code: str
    message: str
    line: int
    column: int
    def __init__(self, severity: str, code: str, message: str, line: int, column: int) -> None: ...
    def as_dict(self) -> Dict[str, Any]: ...

class CompileError(Error):
    diagnostics: List[Diagnostic]
    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ...) -> None: ...

class InputError(Error, TypeError, ValueError): ...
class RunError(Error): ...

class CheckError(Error):
    comparisons: List[str]
    def __init__(self, message: str, comparisons: Sequence[str] = ...) -> None: ...

class Report(Dict[str, Any]):
    def __init__(self, data: Mapping[str, Any], text: str) -> None: ...

class Result:
    outputs: Tuple[np.ndarray, ...]
    report: Optional[Report]
    max_error: Optional[float]
    comparisons: List[str]

class Kernel:
    @property
    def name(self) -> str: ...
    @property
    def params(self) -> List[_Spec]: ...
    @property
    def results(self) -> List[_Spec]: ...
    @property
    def asm(self) -> str: ...
    @property
    def passes(self) -> str: ...
    def ir(self, stage: str = ..., *, after: Optional[str] = ...) -> str: ...
    def save(self, path: _Path) -> None: ...
    def run(
        self,
        *args: Any,
        check: bool = ...,
        trace: Optional[_Path] = ...,
        inputs: Optional[Mapping[str, Any]] = ...,
        random: Optional[int] = ...,
        debug_checks: Optional[bool] = ...,
        max_instructions: Optional[int] = ...,
        max_cycles: Optional[int] = ...,
        **kwargs: Any,
    ) -> Result: ...
    def __call__(
        self, *args: Any, inputs: Optional[Mapping[str, Any]] = ..., **kwargs: Any
    ) -> Union[np.ndarray, Tuple[np.ndarray, ...]]: ...
    def reference(
        self,
        *args: Any,
        inputs: Optional[Mapping[str, Any]] = ...,
        random: Optional[int] = ...,
        **kwargs: Any,
    ) -> Union[np.ndarray, Tuple[np.ndarray, ...]]: ...

def compile(
    source: str,
    *,
    kernel: Optional[str] = ...,
    defines: Optional[Mapping[str, int]] = ...,
    dtype_policy: str = ...,
    disable_passes: Sequence[str] = ...,
    verify_ir: bool = ...,
    name: str = ...,
) -> Kernel: ...
def compile_file(
    path: _Path,
    *,
    kernel: Optional[str] = ...,
    defines: Optional[Mapping[str, int]] = ...,
    dtype_policy: str = ...,
    disable_passes: Sequence[str] = ...,
    verify_ir: bool = ...,
) -> Kernel: ...
def load(path: _Path) -> Kernel: ...
