"""qwodel: quantize language models for llama.cpp (GGUF), vLLM/transformers (AWQ) and Core ML.

All the work is done by the C library libqwodel; this package is a thin ctypes layer over it and
needs nothing beyond the Python standard library at run time.

    from qwodel import Quantizer
    quantizer = Quantizer(backend="gguf", model_path="./llama-3", output_dir="./output")
    quantizer.quantize(format="Q4_K_M")
"""
from .exceptions import (
    DependencyError,
    FormatNotSupportedError,
    QuantizationError,
    QwodelError,
    ValidationError,
)
from .quantizer import Quantizer, list_backends, list_formats, quantize

__version__ = "0.1.0"

__all__ = [
    "Quantizer",
    "quantize",
    "list_formats",
    "list_backends",
    "QwodelError",
    "QuantizationError",
    "ValidationError",
    "DependencyError",
    "FormatNotSupportedError",
    "__version__",
]
