"""ctypes bindings for libqwodel (include/qwodel.h). Loaded on first use, so importing qwodel
stays cheap and works even where the library is missing (the first call then raises
DependencyError)."""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from .exceptions import (
    DependencyError,
    FormatNotSupportedError,
    QuantizationError,
    QwodelError,
    ValidationError,
)

# qw_status_class values (qwodel.h)
CLASS_OK, CLASS_VALIDATION, CLASS_DEPENDENCY, CLASS_FORMAT, CLASS_QUANTIZATION = range(5)
STATUS_CANCELLED = 12  # QW_ERR_CANCELLED

# qw_option_type and qw_option_scope values
OPTION_INT, OPTION_FLOAT, OPTION_BOOL, OPTION_STRING, OPTION_LIST = range(5)
SCOPE_INIT, SCOPE_RUN = 1, 2


class Error(ctypes.Structure):
    """qw_error."""

    _fields_ = [
        ("status", ctypes.c_int),
        ("offset", ctypes.c_int64),
        ("tensor", ctypes.c_char * 128),
        ("message", ctypes.c_char * 1024),
    ]


class PlanTensor(ctypes.Structure):
    """qw_plan_tensor."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("source_name", ctypes.c_char_p),
        ("source_type", ctypes.c_char_p),
        ("type", ctypes.c_char_p),
        ("transform", ctypes.c_char_p),
        ("n_dims", ctypes.c_int),
        ("shape", ctypes.c_int64 * 4),
        ("bytes", ctypes.c_uint64),
    ]


PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_char_p)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)

_c_str_array = ctypes.POINTER(ctypes.c_char_p)
_P = ctypes.c_void_p

# name: (restype, argtypes)
_PROTOTYPES = {
    "qw_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "qw_status_message": (ctypes.c_char_p, [ctypes.c_int]),
    "qw_status_class_of": (ctypes.c_int, [ctypes.c_int]),
    "qw_version": (ctypes.c_char_p, []),
    "qw_system_info_json": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(Error)]),
    "qw_string_free": (None, [ctypes.c_void_p]),
    "qw_backend_count": (ctypes.c_size_t, []),
    "qw_backend_name": (ctypes.c_char_p, [ctypes.c_size_t]),
    "qw_backend_description": (ctypes.c_char_p, [ctypes.c_size_t]),
    "qw_backend_default_format": (ctypes.c_char_p, [ctypes.c_size_t]),
    "qw_backend_find": (ctypes.c_int, [ctypes.c_char_p]),
    "qw_format_count": (ctypes.c_size_t, [ctypes.c_size_t]),
    "qw_format_name": (ctypes.c_char_p, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_format_description": (ctypes.c_char_p, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_option_count": (ctypes.c_size_t, [ctypes.c_size_t]),
    "qw_option_name": (ctypes.c_char_p, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_option_type_of": (ctypes.c_int, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_option_scope_of": (ctypes.c_int, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_option_description": (ctypes.c_char_p, [ctypes.c_size_t, ctypes.c_size_t]),
    "qw_quantizer_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                           _c_str_array, _c_str_array, ctypes.c_size_t,
                                           PROGRESS_FN, LOG_FN, _P, ctypes.POINTER(_P),
                                           ctypes.POINTER(Error)]),
    "qw_quantizer_free": (None, [_P]),
    "qw_quantizer_run": (ctypes.c_int, [_P, ctypes.c_char_p, _c_str_array, _c_str_array,
                                        ctypes.c_size_t, ctypes.POINTER(Error)]),
    "qw_quantizer_output_path": (ctypes.c_char_p, [_P]),
    "qw_quantizer_cancel": (None, [_P]),
    "qw_quantizer_info_json": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_void_p),
                                              ctypes.POINTER(Error)]),
    "qw_quantizer_plan": (ctypes.c_int, [_P, ctypes.c_char_p, _c_str_array, _c_str_array,
                                         ctypes.c_size_t, ctypes.POINTER(_P),
                                         ctypes.POINTER(Error)]),
    "qw_plan_count": (ctypes.c_size_t, [_P]),
    "qw_plan_get": (ctypes.POINTER(PlanTensor), [_P, ctypes.c_size_t]),
    "qw_plan_output_path": (ctypes.c_char_p, [_P]),
    "qw_plan_output_bytes": (ctypes.c_uint64, [_P]),
    "qw_plan_free": (None, [_P]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None


def _library_names() -> list[str]:
    if sys.platform == "darwin":
        return ["libqwodel.dylib"]
    if sys.platform == "win32":
        return ["qwodel.dll"]
    return ["libqwodel.so"]


def _candidates() -> list[Path]:
    """Where the library may be: $QWODEL_LIB, the installed package, a source checkout's build."""
    found: list[Path] = []
    env = os.environ.get("QWODEL_LIB")
    if env:
        found.append(Path(env))
    here = Path(__file__).resolve().parent
    for name in _library_names():
        found.append(here / "lib" / name)
        found.append(here / name)
    repo = here.parent.parent
    for build in ("build", "build-rel"):
        for name in _library_names():
            found.append(repo / build / name)
    return found


def lib() -> ctypes.CDLL:
    """The loaded library (loads it on first call)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path in _candidates():
            if not path.is_file():
                tried.append(str(path))
                continue
            try:
                loaded = ctypes.CDLL(str(path))
            except OSError as exc:
                raise DependencyError(
                    f"cannot load the qwodel C library {path}: {exc} (a system library it needs "
                    "may be missing: on Debian/Ubuntu run "
                    "'apt-get install libjansson4 libpcre2-8-0 libutf8proc2 libcurl4 libssl3 "
                    "libopenblas0')") from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(loaded, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib = loaded
            return _lib
        raise DependencyError("the qwodel C library (libqwodel) was not found; looked in: "
                              + ", ".join(tried) + ". Reinstall qwodel or set QWODEL_LIB.")


def text(value: Optional[bytes]) -> str:
    return value.decode("utf-8", errors="replace") if value is not None else ""


def take_string(ptr: ctypes.c_void_p) -> str:
    """Copies and frees a string the library allocated."""
    if not ptr.value:
        return ""
    try:
        return text(ctypes.string_at(ptr.value))
    finally:
        lib().qw_string_free(ptr)


_CLASS_TO_EXCEPTION = {
    CLASS_VALIDATION: ValidationError,
    CLASS_DEPENDENCY: DependencyError,
    CLASS_FORMAT: FormatNotSupportedError,
    CLASS_QUANTIZATION: QuantizationError,
}


def error_from(status: int, err: Error) -> QwodelError:
    """The exception for a failed call: its class from the status, its message from qw_error."""
    library = lib()
    cls = _CLASS_TO_EXCEPTION.get(library.qw_status_class_of(status), QuantizationError)
    message = text(err.message) or text(library.qw_status_message(status))
    return cls(message, status=text(library.qw_status_name(status)), tensor=text(err.tensor),
               offset=int(err.offset))


def string_array(values: list[str]):
    array = (ctypes.c_char_p * max(1, len(values)))()
    for i, value in enumerate(values):
        array[i] = value.encode("utf-8")
    return array
