"""Whether this interpreter can load what the client pickled: its Python, and cloudpickle when needed.

A payload needs cloudpickle on the job side only if the client pickled something by value (a function
of ``__main__``, a lambda, a closure): that pickle refers to ``cloudpickle``'s own functions. A function
of an importable module, and plain data, load with the standard unpickler alone. So cloudpickle, which
costs more to import than the rest of the job's start-up together, is imported the first time a pickle
refers to it, and checked against the client's major version then.
"""

from __future__ import annotations

import sys

from .failures import EnvironmentProblem

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

PYTHON_VERSION = sys.version.split()[0]  # what platform.python_version() says, without importing it


def python_problem(expect_python: str | None) -> str:
    """Why a payload pickled by Python ``expect_python`` cannot load here, or ``""`` if it can."""
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not expect_python or ".".join(expect_python.split(".")[:2]) == running:
        return ""
    return (
        f"The job runs Python {PYTHON_VERSION} ({_executable()}), but the function was pickled "
        f"by Python {expect_python} on the client; pickled functions only load under the same Python "
        f"minor version. Point `python=` at a Python {expect_python} interpreter on the cluster, or run "
        f"the client under Python {running}."
    )


class LazyCloudpickle:
    """cloudpickle, imported the first time the job needs it and checked against the client's version.

    ``expected`` is the client's cloudpickle version or major version (``None``: not checked).
    """

    def __init__(self, expected: str | None) -> None:
        self._wanted = expected.split(".")[0] if expected else ""
        self._module: ModuleType | None = None
        self._problem = ""
        #: The version of the cloudpickle found here, or "" if none was imported (yet).
        self.version = ""

    @property
    def imported(self) -> bool:
        """Whether cloudpickle was imported and passed its check."""
        return self._module is not None

    def module(self) -> ModuleType:
        """The cloudpickle module; raises :class:`EnvironmentProblem` if it is missing or of another major."""
        if self._module is None:
            if not self._problem:
                self._problem = self._import()
            if self._problem:
                raise EnvironmentProblem(self._problem)
        assert self._module is not None
        return self._module

    def _import(self) -> str:
        """Import cloudpickle into ``_module``; return why it cannot be used, or ``""``."""
        try:
            import cloudpickle
        except ImportError as exc:
            detail = "" if isinstance(exc, ModuleNotFoundError) else f" (importing it failed: {exc})"
            used = f" (the client uses cloudpickle {self._wanted})" if self._wanted else ""
            return (
                f"cloudpickle is not installed for {_executable()} (Python {PYTHON_VERSION}) on the "
                f"cluster{detail}; the job needs it to load the function{used}. {self._advice()}"
            )
        self.version = str(getattr(cloudpickle, "__version__", "unknown"))
        if self._wanted and self.version.split(".")[0] != self._wanted:
            return (
                f"The job has cloudpickle {self.version} for {_executable()}, but the client pickled the "
                f"function with cloudpickle {self._wanted}; both sides need the same cloudpickle major "
                f"version. {self._advice()}"
            )
        self._module = cloudpickle
        return ""

    def _advice(self) -> str:
        executable = _executable()
        if self._wanted.isdigit():
            install = f"cloudpickle {self._wanted}.x"
            pip = f"{executable} -m pip install --user 'cloudpickle>={self._wanted},<{int(self._wanted) + 1}'"
        else:
            install, pip = "cloudpickle", f"{executable} -m pip install --user cloudpickle"
        return (
            f"Install {install} for {executable} on the cluster, e.g. `{pip}`, or point `python=` at an "
            "interpreter that has it."
        )


def _executable() -> str:
    return sys.executable or "python3"
