"""Errors raised by the executor; each names the op, the value and what was expected."""


class ExecutorError(Exception):
    """A package the executor cannot read, or a program it cannot run as declared."""


class UnsupportedOperationError(ExecutorError):
    """The package uses op types the executor does not implement (raised at load time)."""

    def __init__(self, message: str, op_types: tuple[str, ...]) -> None:
        super().__init__(message)
        self.op_types = op_types


class DeclaredTypeError(ExecutorError):
    """An op produced a value whose dtype or shape differs from the program's declaration."""


class OpExecutionError(ExecutorError):
    """An op failed while running; the message says which op and why."""
