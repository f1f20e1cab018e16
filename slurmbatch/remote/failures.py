"""Why the job side could not do what it was asked, and how it names an exception in a message."""

from __future__ import annotations


class LoadError(Exception):
    """A payload file could not be read or unpickled; the message says which file and why."""


class EnvironmentProblem(Exception):
    """This interpreter cannot load the payload (wrong Python, cloudpickle missing or of another major)."""


class UsageError(Exception):
    """The command line cannot be carried out, and no outcome file can say so."""


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder if the exception's own ``__str__`` fails."""
    try:
        return str(exc)
    except Exception:
        return f"<str() of the {type(exc).__name__} failed>"


def describe(exc: BaseException) -> str:
    """``TypeName: message``, for messages that quote an exception."""
    return f"{type(exc).__name__}: {safe_str(exc)}"


def type_name(value: object) -> str:
    """The qualified name of ``value``'s class, without ``builtins.``."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
