"""qwodel's exceptions: one base class, four kinds, raised from the C library's status codes."""
from __future__ import annotations

from typing import Optional

__all__ = [
    "QwodelError",
    "QuantizationError",
    "ValidationError",
    "DependencyError",
    "FormatNotSupportedError",
]


class QwodelError(Exception):
    """Base class of every qwodel error.

    Attributes:
        status: the library's status name (e.g. ``"QW_ERR_CORRUPT"``), or None for errors raised
            by the Python layer itself.
        tensor: the tensor or key the library named as the cause ("" if none).
        offset: byte offset in the offending file, or -1.
    """

    def __init__(self, message: str, status: Optional[str] = None, tensor: str = "",
                 offset: int = -1) -> None:
        super().__init__(message)
        self.status = status
        self.tensor = tensor
        self.offset = offset


class QuantizationError(QwodelError):
    """General quantization failure (I/O, memory, cancellation, internal errors)."""


class ValidationError(QwodelError, ValueError):
    """Invalid input path, backend, option, architecture or input file."""


class DependencyError(QwodelError, ImportError):
    """A required library, binary or device is missing."""


class FormatNotSupportedError(QwodelError, ValueError):
    """The requested format is not supported by the backend."""
