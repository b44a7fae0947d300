"""The Quantizer class and the convenience functions of the qwodel API."""
from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _native
from .exceptions import ValidationError

__all__ = ["Quantizer", "quantize", "list_formats", "list_backends", "ProgressCallback"]

ProgressCallback = Callable[[int, str, str], Any]
PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_OUTPUT_DIR = "./quantized_models"

# The spec's logger names; a NullHandler keeps the library silent until the application
# configures logging (Python would otherwise print warnings through its last-resort handler).
for _name in ("GGUFQuantizer", "AWQQuantizer", "CoreMLQuantizer"):
    logging.getLogger(_name).addHandler(logging.NullHandler())


def _backend_index(backend: str) -> int:
    if not isinstance(backend, str):
        raise ValidationError(f"backend must be a string, got {type(backend).__name__}")
    index = _native.lib().qw_backend_find(backend.encode())
    if index < 0:
        raise ValidationError(f"unknown backend {backend!r}; available: "
                              + ", ".join(list_backends()))
    return index


def _options(backend_index: int) -> Dict[str, Tuple[int, int]]:
    """{option name: (type, scope)} of a backend."""
    library = _native.lib()
    return {
        _native.text(library.qw_option_name(backend_index, i)):
            (library.qw_option_type_of(backend_index, i),
             library.qw_option_scope_of(backend_index, i))
        for i in range(library.qw_option_count(backend_index))
    }


def _option_value(name: str, value: Any) -> str:
    """A Python value as the option string the library parses (it validates the type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_option_value(name, v) for v in value)
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValidationError(f"option {name!r} cannot take a {type(value).__name__} "
                          f"({value!r})")


def _encode_options(kwargs: Dict[str, Any]):
    keys = [k for k, v in kwargs.items() if v is not None]
    values = [_option_value(k, kwargs[k]) for k in keys]
    return _native.string_array(keys), _native.string_array(values), len(keys)


def list_backends() -> List[str]:
    """Names of the backends this build contains (a backend not built is absent)."""
    library = _native.lib()
    return [_native.text(library.qw_backend_name(i)) for i in range(library.qw_backend_count())]


def list_formats(backend: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """``{backend: {format: description}}`` for one backend, or for all when backend is None."""
    library = _native.lib()
    indices = [_backend_index(backend)] if backend is not None else \
        list(range(library.qw_backend_count()))
    result: Dict[str, Dict[str, str]] = {}
    for b in indices:
        name = _native.text(library.qw_backend_name(b))
        result[name] = {
            _native.text(library.qw_format_name(b, f)):
                _native.text(library.qw_format_description(b, f))
            for f in range(library.qw_format_count(b))
        }
    return result


class Quantizer:
    """Quantizes one model with one backend.

    Args:
        backend: ``"gguf"`` (and ``"awq"``/``"coreml"`` in builds that include them).
        model_path: a HuggingFace model directory or a ``.gguf`` file.
        output_dir: where outputs are written (default ``./quantized_models``).
        progress_callback: optional ``(percent: int, stage: str, message: str)`` callable, called
            on the calling thread with non-decreasing percentages; an exception it raises
            cancels the run and propagates from :meth:`quantize`.
        **backend_kwargs: backend options (see :func:`list_formats` and the backend's docs);
            unknown or mistyped options raise :class:`ValidationError`.

    The model is opened and validated here (path, backend, architecture, options). A Quantizer
    is used by one thread at a time. Call :meth:`close` (or use it as a context manager) to
    release the mapped model early; otherwise it is released when garbage-collected.
    """

    def __init__(self, backend: str, model_path: PathLike,
                 output_dir: PathLike = DEFAULT_OUTPUT_DIR,
                 progress_callback: Optional[ProgressCallback] = None,
                 **backend_kwargs: Any) -> None:
        self._handle: Optional[int] = None
        library = _native.lib()
        self._backend_index = _backend_index(backend)
        self.backend = _native.text(library.qw_backend_name(self._backend_index))
        if progress_callback is not None and not callable(progress_callback):
            raise ValidationError("progress_callback must be callable")
        self.model_path = os.fspath(model_path)
        self.output_dir = os.fspath(output_dir)
        self.progress_callback = progress_callback
        self._pending: Optional[BaseException] = None
        # ctypes callbacks must stay alive as long as the C object may call them
        self._progress_fn = _native.PROGRESS_FN(self._on_progress)
        self._log_fn = _native.LOG_FN(self._on_log)
        keys, values, n = _encode_options(backend_kwargs)
        handle = ctypes.c_void_p()
        err = _native.Error()
        status = library.qw_quantizer_create(
            self.backend.encode(), self.model_path.encode(), self.output_dir.encode(), keys,
            values, n, self._progress_fn, self._log_fn, None, ctypes.byref(handle),
            ctypes.byref(err))
        self._raise_pending()
        if status != 0:
            raise _native.error_from(status, err)
        self._handle = handle.value

    # ---- callbacks (run on the calling thread, inside the C call) ----------------------------

    def _on_progress(self, _user, percent: int, stage: bytes, message: bytes) -> int:
        if self._pending is not None:
            return 1
        if self.progress_callback is None:
            return 0
        try:
            self.progress_callback(int(percent), _native.text(stage), _native.text(message))
        except BaseException as exc:  # noqa: B902 - KeyboardInterrupt must cancel the run too
            self._pending = exc
            return 1
        return 0

    def _on_log(self, _user, level: int, logger: bytes, message: bytes) -> None:
        try:
            logging.getLogger(_native.text(logger)).log(level, "%s", _native.text(message))
        except BaseException as exc:  # noqa: B902
            if self._pending is None:
                self._pending = exc

    def _raise_pending(self) -> None:
        exc, self._pending = self._pending, None
        if exc is not None:
            raise exc

    # ---- API ---------------------------------------------------------------------------------

    def _require_open(self) -> int:
        if self._handle is None:
            raise ValidationError("this Quantizer is closed")
        return self._handle

    def quantize(self, format: Optional[str] = None, **kwargs: Any) -> Path:  # noqa: A002
        """Runs the quantization and returns the path of the output file or directory.

        Args:
            format: the format (case-insensitive, e.g. ``"Q4_K_M"``); None for the backend's
                default.
            **kwargs: runtime overrides of backend options for this call.

        Raises:
            FormatNotSupportedError: the backend has no such format.
            ValidationError: an unknown or mistyped option, or bad input.
            QuantizationError: the run failed or was cancelled.
        """
        handle = self._require_open()
        if format is not None and not isinstance(format, str):
            raise ValidationError(f"format must be a string, got {type(format).__name__}")
        library = _native.lib()
        keys, values, n = _encode_options(kwargs)
        err = _native.Error()
        try:
            status = library.qw_quantizer_run(handle, format.encode() if format else None, keys,
                                              values, n, ctypes.byref(err))
        except KeyboardInterrupt:
            # arrived between callbacks, after the library returned: nothing left to undo
            self._pending = None
            raise
        self._raise_pending()
        if status != 0:
            raise _native.error_from(status, err)
        return Path(_native.text(library.qw_quantizer_output_path(handle)))

    def get_model_info(self) -> Dict[str, Any]:
        """Metadata about the source and (after :meth:`quantize`) the quantized model: the keys
        source_model, quantized_model, backend, file_size, input_format, plus architecture,
        format, n_params, n_tensors, tensor_types, bits_per_weight and seconds."""
        handle = self._require_open()
        out = ctypes.c_void_p()
        err = _native.Error()
        status = _native.lib().qw_quantizer_info_json(handle, ctypes.byref(out), ctypes.byref(err))
        if status != 0:
            raise _native.error_from(status, err)
        return json.loads(_native.take_string(out))

    def plan(self, format: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:  # noqa: A002
        """What :meth:`quantize` would write, without writing: ``{"output": path, "output_bytes":
        n, "tensors": [{name, source, source_type, type, transform, shape, bytes}, ...]}``."""
        handle = self._require_open()
        library = _native.lib()
        keys, values, n = _encode_options(kwargs)
        plan = ctypes.c_void_p()
        err = _native.Error()
        status = library.qw_quantizer_plan(handle, format.encode() if format else None, keys,
                                           values, n, ctypes.byref(plan), ctypes.byref(err))
        self._raise_pending()
        if status != 0:
            raise _native.error_from(status, err)
        try:
            tensors = []
            for i in range(library.qw_plan_count(plan)):
                t = library.qw_plan_get(plan, i).contents
                tensors.append({
                    "name": _native.text(t.name),
                    "source": _native.text(t.source_name),
                    "source_type": _native.text(t.source_type),
                    "type": _native.text(t.type),
                    "transform": _native.text(t.transform),
                    "shape": [int(t.shape[d]) for d in range(t.n_dims)],
                    "bytes": int(t.bytes),
                })
            return {"output": Path(_native.text(library.qw_plan_output_path(plan))),
                    "output_bytes": int(library.qw_plan_output_bytes(plan)),
                    "tensors": tensors}
        finally:
            library.qw_plan_free(plan)

    def close(self) -> None:
        """Releases the model. Further calls raise ValidationError."""
        if self._handle is not None:
            _native.lib().qw_quantizer_free(self._handle)
            self._handle = None

    def __enter__(self) -> "Quantizer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def __repr__(self) -> str:
        return f"Quantizer(backend={self.backend!r}, model_path={self.model_path!r})"

    @staticmethod
    def list_formats(backend: Optional[str] = None) -> Dict[str, Dict[str, str]]:
        """``{backend: {format: description}}`` for one backend, or for all."""
        return list_formats(backend)

    @staticmethod
    def list_backends() -> List[str]:
        """Names of the backends in this build."""
        return list_backends()


def quantize(model_path: PathLike, output_dir: PathLike, backend: str, format: str,  # noqa: A002
             progress_callback: Optional[ProgressCallback] = None, **kwargs: Any) -> Path:
    """Quantizes a model in one call and returns the output path.

    ``kwargs`` are backend options: those accepted at creation go to the :class:`Quantizer`,
    the per-run ones to :meth:`Quantizer.quantize`.
    """
    options = _options(_backend_index(backend))
    init_kwargs = {k: v for k, v in kwargs.items()
                   if k not in options or options[k][1] & _native.SCOPE_INIT}
    run_kwargs = {k: v for k, v in kwargs.items() if k not in init_kwargs}
    with Quantizer(backend, model_path, output_dir, progress_callback, **init_kwargs) as q:
        return q.quantize(format, **run_kwargs)

