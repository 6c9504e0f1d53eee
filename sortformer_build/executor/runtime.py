"""Running the ML programs of a package op by op, in float32 or float16, checking every declared type."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dtypes import compute_dtype, round_to_fp16, storage_dtype
from .errors import DeclaredTypeError, ExecutorError, OpExecutionError, UnsupportedOperationError
from .ops import OpArgs, lookup
from .ops.registry import OpFn, Value
from .spec import Literal, Operation, PackageSpec, ProgramSpec, Var, read_package
from .split import DATA_PARAMETERS, run_split
from .threads import one_blas_thread
from .weights import decode_value

PRECISIONS = ("float32", "float16")

# Ops whose outputs only copy or select input elements: fed fp16 values, they produce fp16 values.
_SELECTING_OPS = frozenset(
    {
        "concat",
        "expand_dims",
        "flatten2d",
        "gather",
        "gather_along_axis",
        "gather_nd",
        "identity",
        "maximum",
        "minimum",
        "pad",
        "relu",
        "reshape",
        "reverse",
        "select",
        "slice_by_index",
        "slice_by_size",
        "sliding_windows",
        "split",
        "squeeze",
        "stack",
        "tile",
        "transpose",
    }
)


def _is_constant_op(op: Operation) -> bool:
    return op.type == "const" or op.type.startswith("constexpr_")


def _hold(value: Value, dtype: str) -> Value:
    """A decoded value in the dtype the executor computes with (fp16 is held as float32)."""
    if isinstance(value, str):
        return value
    return value.astype(compute_dtype(dtype), copy=False)


def _implementation(op: Operation) -> OpFn:
    fn = lookup(op.type)
    if fn is None or op.has_blocks:
        raise UnsupportedOperationError(f"{op.location}: op type '{op.type}' is not supported", (op.type,))
    return fn


def _describe(value: np.ndarray) -> str:
    return f"{value.dtype}[{', '.join(str(d) for d in value.shape)}]"


def _finish(
    op: Operation, var: Var, value: object, to_fp16: bool, arguments: Sequence[Value], threads: int
) -> Value:
    """Check an op result against its declaration; round it to float16 if asked and fp16-typed.

    A result that shares no memory with the op's `arguments` is the op's own new array, so it is
    rounded in place; a view of an argument is rounded into a copy.
    """
    if var.type.dtype == "string":
        if not isinstance(value, str):
            raise DeclaredTypeError(f"{op.location} ({op.type}): output '{var.name}' should be a string")
        return value
    array = np.asarray(value)
    expected = compute_dtype(var.type.dtype)
    if array.dtype != expected or not var.type.accepts_shape(array.shape):
        raise DeclaredTypeError(
            f"{op.location} ({op.type}): output '{var.name}' is {_describe(array)}, "
            f"declared {var.type.describe()} (held as {expected})"
        )
    if to_fp16 and var.type.dtype == "fp16":
        return round_to_fp16(array, reuse=not _shares_memory(array, arguments), threads=threads)
    return array


def _shares_memory(array: np.ndarray, arguments: Sequence[Value]) -> bool:
    return any(isinstance(a, np.ndarray) and np.may_share_memory(array, a) for a in arguments)


def _same_value(a: Value, b: Value) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@dataclass(frozen=True)
class _Step:
    """A non-constant op, its implementation, the values it is the last user of, and whether its
    fp16 results need rounding in float16 mode (not when it only moves already-rounded values)."""

    op: Operation
    fn: OpFn
    release: tuple[str, ...]
    rounds: bool


class Program:
    """One ML program of a package, ready to run; exposes its ops and decodes its weights on request."""

    def __init__(self, spec: ProgramSpec) -> None:
        self.index = spec.index
        self.function = spec.function
        self._blobs = spec.blobs
        self._producers = {var.name: op for op in self.function.operations for var in op.outputs}
        outputs = [var for op in self.function.operations for var in op.outputs]
        self._types = {var.name: var.type for var in (*self.function.inputs, *outputs)}
        self._check_names()
        self._constant_names = self._find_constants()
        self._steps = self._plan()
        self._constants_by_precision: dict[str, dict[str, Value]] = {}

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(var.name for var in self.function.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.function.outputs

    @property
    def operations(self) -> tuple[Operation, ...]:
        return self.function.operations

    @property
    def constant_names(self) -> tuple[str, ...]:
        """Names of the values produced by `const` and `constexpr_*` ops, in program order."""
        return tuple(name for name in self._producers if name in self._constant_names)

    def constant(self, name: str) -> np.ndarray | str:
        """The decoded value of a const / constexpr output, in its declared dtype (fp16 stays float16)."""
        if name not in self._constant_names:
            raise ExecutorError(f"'{name}' is not a const or constexpr output of program {self.index}")
        op = self._producers[name]
        var = next(v for v in op.outputs if v.name == name)
        literal = op.inputs["val"][0] if op.type == "const" else None
        if isinstance(literal, Literal):
            return decode_value(literal.value, self._blobs)
        value = self._constant_value(name, "float32", {}, 1)
        return value if isinstance(value, str) else value.astype(storage_dtype(var.type.dtype))

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        precision: str,
        threads: int = 1,
        op_seconds: dict[str, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the function on `inputs` (by name); returns its outputs as held (float32 for floats).
        Matrix product tiles, element-wise ops and float16 rounding run on up to `threads` threads,
        with the same result as on one; BLAS runs single-threaded inside (`tiles`). `op_seconds`,
        if given, gains the wall seconds spent in each op type (rounding included)."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise ExecutorError(f"program {self.index} is missing inputs {missing}")
        with one_blas_thread():
            env: dict[str, Value] = dict(self._constants(precision, threads))
            for var in self.function.inputs:
                env[var.name] = self._prepare_input(var, inputs[var.name], precision, threads)
            with np.errstate(all="ignore"):
                for step in self._steps:
                    started = time.perf_counter() if op_seconds is not None else 0.0
                    self._execute(step.op, step.fn, env, step.rounds and precision == "float16", threads)
                    if op_seconds is not None:
                        elapsed = time.perf_counter() - started
                        op_seconds[step.op.type] = op_seconds.get(step.op.type, 0.0) + elapsed
                    for name in step.release:
                        del env[name]
        outputs: dict[str, np.ndarray] = {}
        for name in self.output_names:
            value = env[name]
            if isinstance(value, str):
                raise ExecutorError(f"program {self.index}: output '{name}' is a string, not a tensor")
            outputs[name] = value
        return outputs

    def _needs_rounding(self, op: Operation) -> bool:
        if op.type not in _SELECTING_OPS:
            return True
        types = (
            b.type if isinstance(b, Literal) else self._types[b] for bs in op.inputs.values() for b in bs
        )
        return any(t.dtype in ("fp32", "fp64") for t in types)

    def _check_names(self) -> None:
        defined = set(self.input_names)
        for op in self.function.operations:
            for binding in (b for bindings in op.inputs.values() for b in bindings):
                if isinstance(binding, str) and binding not in defined:
                    raise ExecutorError(f"{op.location} ({op.type}) reads '{binding}' before it is defined")
            defined.update(var.name for var in op.outputs)
        missing = [name for name in self.output_names if name not in defined]
        if missing:
            raise ExecutorError(f"program {self.index} outputs {missing}, which no op produces")

    def _find_constants(self) -> frozenset[str]:
        constants: set[str] = set()
        for op in self.function.operations:
            bindings = (b for bs in op.inputs.values() for b in bs)
            if _is_constant_op(op) and all(isinstance(b, Literal) or b in constants for b in bindings):
                constants.update(var.name for var in op.outputs)
        return frozenset(constants)

    def _plan(self) -> list[_Step]:
        running = [
            op
            for op in self.function.operations
            if not any(var.name in self._constant_names for var in op.outputs)
        ]
        last_use: dict[str, int] = {}
        for i, op in enumerate(running):
            for binding in (b for bs in op.inputs.values() for b in bs):
                if isinstance(binding, str):
                    last_use[binding] = i
        kept = set(self.output_names)
        release: dict[int, list[str]] = {}
        for name, i in last_use.items():
            if name not in kept:
                release.setdefault(i, []).append(name)
        return [
            _Step(op, _implementation(op), tuple(release.get(i, ())), self._needs_rounding(op))
            for i, op in enumerate(running)
        ]

    def _constants(self, precision: str, threads: int) -> dict[str, Value]:
        """Held values of all const / constexpr outputs, computed once per precision.

        A second precision shares the first one's arrays wherever the values agree (const outputs always
        do: they are exact in their declared type), so the weights are held once.
        """
        if precision not in self._constants_by_precision:
            earlier = next(iter(self._constants_by_precision.values()), {})
            memo = {name: value for name, value in earlier.items() if self._producers[name].type == "const"}
            with np.errstate(all="ignore"):
                for name in self.constant_names:
                    self._constant_value(name, precision, memo, threads)
            for name, value in earlier.items():
                # const entries were copied in above: comparing an array with itself reads all weights
                if memo[name] is not value and _same_value(memo[name], value):
                    memo[name] = value
            self._constants_by_precision[precision] = memo
        return self._constants_by_precision[precision]

    def _constant_value(self, name: str, precision: str, memo: dict[str, Value], threads: int) -> Value:
        if name not in memo:
            op = self._producers[name]
            for binding in (b for bs in op.inputs.values() for b in bs):
                if isinstance(binding, str):
                    self._constant_value(binding, precision, memo, threads)
            self._execute(op, _implementation(op), memo, precision == "float16", threads)
        return memo[name]

    def _argument(self, binding: str | Literal, env: Mapping[str, Value]) -> Value:
        if isinstance(binding, str):
            return env[binding]
        return _hold(decode_value(binding.value, self._blobs), binding.type.dtype)

    def _execute(self, op: Operation, fn: OpFn, env: dict[str, Value], to_fp16: bool, threads: int) -> None:
        values = {param: [self._argument(b, env) for b in bindings] for param, bindings in op.inputs.items()}
        out_types = [var.type for var in op.outputs]
        try:
            split = run_split(op.type, fn, values, out_types, threads, to_fp16)
            result = fn(OpArgs(values, out_types, threads)) if split is None else split
            if split is None and op.type in DATA_PARAMETERS and isinstance(result, np.ndarray):
                # A split result is laid out in C order; so is the same op's whole result, or a
                # product it feeds, whose BLAS kernel follows the layout, would change its bits
                # with the thread count.
                result = np.asarray(result, order="C")
        except Exception as exc:  # add which op failed to whatever NumPy or the op raised
            raise OpExecutionError(f"{op.location} ({op.type}) failed: {exc}") from exc
        if split is not None:  # a new array, rounded chunk by chunk already
            env[op.outputs[0].name] = _finish(op, op.outputs[0], split, False, [], threads)
            return
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise OpExecutionError(
                f"{op.location} ({op.type}) produced {len(results)} values for {len(op.outputs)} outputs"
            )
        arguments = [value for bound in values.values() for value in bound] if to_fp16 else []
        for var, value in zip(op.outputs, results, strict=True):
            env[var.name] = _finish(op, var, value, to_fp16, arguments, threads)

    def _prepare_input(self, var: Var, value: np.ndarray, precision: str, threads: int) -> np.ndarray:
        array = np.asarray(value)
        expected = compute_dtype(var.type.dtype)
        if not np.can_cast(array.dtype, expected, casting="same_kind"):
            raise ExecutorError(
                f"input '{var.name}' is {_describe(array)}, program {self.index} "
                f"declares {var.type.describe()}"
            )
        if not var.type.accepts_shape(array.shape):
            raise ExecutorError(
                f"input '{var.name}' has shape {list(array.shape)}, program {self.index} "
                f"declares {var.type.describe()}"
            )
        held = array.astype(expected, copy=False)
        if precision == "float16" and var.type.dtype == "fp16":
            return round_to_fp16(held, threads=threads)
        return held


def _unsupported(programs: Iterable[ProgramSpec]) -> dict[str, list[str]]:
    """Op types with no implementation (ops with nested blocks count too), with where they occur."""
    found: dict[str, list[str]] = {}
    for program in programs:
        for op in program.function.operations:
            if lookup(op.type) is None or op.has_blocks:
                found.setdefault(op.type, []).append(op.location)
    return found


def _raise_unsupported(found: Mapping[str, Sequence[str]]) -> None:
    described = "; ".join(
        f"'{op_type}' ({len(where)} use{'s' if len(where) > 1 else ''}, first at {where[0]})"
        for op_type, where in sorted(found.items())
    )
    raise UnsupportedOperationError(
        f"the executor does not implement these op types: {described}", tuple(sorted(found))
    )


class Model:
    """A loaded `.mlpackage`: one ML program or a pipeline of them, run in order and wired by name."""

    def __init__(self, spec: PackageSpec) -> None:
        found = _unsupported(spec.programs)
        if found:
            _raise_unsupported(found)
        self.path: Path = spec.path
        self.input_names = spec.input_names
        self.output_names = spec.output_names
        self.metadata = dict(spec.metadata)
        self.programs = [Program(p) for p in spec.programs]
        self._check_wiring()

    def operations(self) -> Counter[str]:
        """How many ops of each type the package's programs hold (const and constexpr included)."""
        return Counter(op.type for program in self.programs for op in program.operations)

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        precision: str = "float32",
        threads: int = 1,
        op_seconds: dict[str, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the package on named inputs.

        "float32" computes everything in float32; "float16" also rounds every fp16-typed op result to
        float16. Integer and bool values keep their declared dtypes. Float outputs come back as float32.
        `threads`: how many threads run the matrix products, the element-wise ops and the rounding
        (the calling one included), with the same result, bit for bit, as one, whatever BLAS's own
        thread setting. `op_seconds`, if given, gains the wall seconds each op type took: where a
        step's time goes.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got '{precision}'")
        missing = [name for name in self.input_names if name not in inputs]
        unknown = [name for name in inputs if name not in self.input_names]
        if missing or unknown:
            raise ExecutorError(
                f"inputs missing: {missing}, unknown: {unknown}; expected {list(self.input_names)}"
            )
        env: dict[str, np.ndarray] = dict(inputs)
        for program in self.programs:
            program_inputs = {name: env[name] for name in program.input_names}
            env.update(program.run(program_inputs, precision, threads, op_seconds))
        return {name: np.array(env[name]) for name in self.output_names}

    def _check_wiring(self) -> None:
        available = set(self.input_names)
        for program in self.programs:
            missing = [name for name in program.input_names if name not in available]
            if missing:
                raise ExecutorError(
                    f"program {program.index} needs {missing}, which nothing before it provides"
                )
            available.update(program.output_names)
        missing = [name for name in self.output_names if name not in available]
        if missing:
            raise ExecutorError(f"the model declares outputs {missing}, which no program produces")


def load_package(path: str | Path) -> Model:
    """Load a saved `.mlpackage`; fails here (not at predict) on op types the executor lacks."""
    return Model(read_package(path))
