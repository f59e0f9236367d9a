"""Errors the user can act on, each with its own exit code (documented in docs/cli.md)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran but its verdict is negative (reserved for gates and checks)
EXIT_USAGE = 2  # bad command-line arguments (argparse uses 2 too)
EXIT_BAD_INPUT = 3  # the model or an input file is unusable
EXIT_RUNTIME_UNAVAILABLE = 4  # no installed runtime can run this model
EXIT_CHILD_FAILED = 5  # the runtime crashed, hung, ran out of memory or failed while running
EXIT_INCONCLUSIVE = 6  # a release gate cannot tell yet whether a regression is real (more repeats needed)
EXIT_PLACEMENT = 7  # --require-delegate: the chain's first choice did not take the model (or not --min-coverage of it)


class EdgebenchError(Exception):
    """An error with a one-line message meant for the user; ``exit_code`` says which kind."""

    exit_code = EXIT_FAILURE


class UsageError(EdgebenchError):
    exit_code = EXIT_USAGE


class ModelError(EdgebenchError):
    """The model file is missing, not a model, truncated, or uses something the runtime cannot run."""

    exit_code = EXIT_BAD_INPUT


class InputError(EdgebenchError):
    """An input override (shape, .npy file, value) does not fit the model."""

    exit_code = EXIT_BAD_INPUT


class RuntimeUnavailable(EdgebenchError):
    exit_code = EXIT_RUNTIME_UNAVAILABLE


class InferenceError(EdgebenchError):
    """The runtime loaded the model but failed while running it."""

    exit_code = EXIT_CHILD_FAILED


class ChildFailed(EdgebenchError):
    """The isolated benchmark process died (signal, out of memory) or hung."""

    exit_code = EXIT_CHILD_FAILED


class PlacementError(EdgebenchError):
    """``--require-delegate``: the run finished (its report is written) but the first choice of the delegate or
    provider chain took fewer of the model's nodes than required."""

    exit_code = EXIT_PLACEMENT


# How runtimes word an allocation that failed (C++ std::bad_alloc, ORT's arena, errno ENOMEM, TFLite's arena).
_OUT_OF_MEMORY = ("bad_alloc", "cannot allocate memory", "failed to allocate", "out of memory")


def load_error(message: str, runtime: str) -> EdgebenchError:
    """A runtime's refusal to load a model. Out of memory (a --memory-limit too small for the model, or the
    machine's memory) is the runtime failing, exit 5, like an allocation that fails while running; anything else
    is the model (exit 3)."""
    if any(marker in message.lower() for marker in _OUT_OF_MEMORY):
        return ChildFailed(f"{runtime} ran out of memory loading the model: {message}")
    return ModelError(f"{runtime} cannot load the model: {message}")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (a library's own, often a whole traceback), or its
    type's name: what fits in the one line every error gets."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


# Names used to carry an error across the child-process boundary and rebuild it in the parent.
ERROR_KINDS: dict[str, type[EdgebenchError]] = {
    cls.__name__: cls
    for cls in (EdgebenchError, UsageError, ModelError, InputError, RuntimeUnavailable, InferenceError, ChildFailed,
                PlacementError)
}
