#!/usr/bin/env python3
"""How closely qwodel's ranked AWQ search follows the exhaustive one (every candidate scale on
every calibration token, as llm-compressor searches), block by block, on a real model.

Runs the awq_block tool (built next to qwodel) twice on the same calibration ids, once with
rank_stride 1 (exhaustive) and once with the backend's rank_stride (4), and prints:
  - how many searched mappings chose the same candidate;
  - the worst mapping's loss against the exhaustive one;
  - the held-out int4 block errors summed over the blocks (held-out ids: the calibration
    sequences in reverse order);
  - in how many ranked mappings the subset ruled plain rounding out (its reported error is then
    the subset's, not the exhaustive search's).

The model and ids are bench_awq.py's (its --workdir holds both):

    python3 bench/awq_agreement.py --awq-block build-rel/awq_block \\
        --model ~/.cache/qwodel-bench/work/smollm2-135m \\
        --ids ~/.cache/qwodel-bench/work/calib_ids.json [--group-size 64 --stride 4]
        [--exhaustive-cache FILE]

The exhaustive run is most of the time (about 5 of 7 minutes); --exhaustive-cache keeps its
blocks in FILE, made on first use, for comparing several versions of the ranked search.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np


def run_blocks(tool, model, calib, held, n_seq, seq_len, group, stride):
    proc = subprocess.run([str(tool), str(model), str(calib), str(held), str(n_seq),
                           str(seq_len), str(group), "0", "on", "f32", str(stride)],
                          capture_output=True, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--awq-block", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True, help="bench_awq.py's calib_ids.json")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--stride", type=int, default=4, help="the ranked search's rank_stride")
    ap.add_argument("--exhaustive-cache", type=pathlib.Path,
                    help="JSON file keeping the exhaustive run's blocks (same model, ids, group)")
    args = ap.parse_args()
    ids = np.array(json.loads(pathlib.Path(args.ids).read_text()), dtype=np.int32)
    n_seq, seq_len = ids.shape
    with tempfile.TemporaryDirectory() as tmp:
        calib, held = pathlib.Path(tmp) / "calib.i32", pathlib.Path(tmp) / "held.i32"
        ids.tofile(calib)
        ids[::-1].copy().tofile(held)
        cache = args.exhaustive_cache
        key = {"model": str(pathlib.Path(args.model).resolve()), "ids": ids.tolist(),
               "group": args.group_size}
        cached = json.loads(cache.read_text()) if cache and cache.exists() else None
        if cached and cached["key"] == key:
            full = cached["blocks"]
        else:
            full = run_blocks(args.awq_block, args.model, calib, held, n_seq, seq_len,
                              args.group_size, 1)
            if cache:
                cache.write_text(json.dumps({"key": key, "blocks": full}))
        ranked = run_blocks(args.awq_block, args.model, calib, held, n_seq, seq_len,
                            args.group_size, args.stride)
    same = total = plain_ruled_out = 0
    worst = 0.0
    for a, b in zip(full, ranked):
        for m, r in zip(a["mappings"], b["mappings"]):
            if m["skipped"]:
                continue
            total += 1
            same += (m["ratio"], m["duo"]) == (r["ratio"], r["duo"])
            worst = max(worst, r["loss"] / m["loss"] - 1)
            plain_ruled_out += abs(r["loss_plain"] / m["loss_plain"] - 1) > 1e-6
    held_full = sum(b["awq_error"] for b in full)
    held_ranked = sum(b["awq_error"] for b in ranked)
    print(f"{len(full)} blocks, {n_seq} x {seq_len} calibration tokens, group {args.group_size}, "
          f"rank_stride {args.stride} against 1")
    print(f"same choice: {same} of {total} mappings; worst mapping loss {100 * worst:+.2f}%")
    print(f"held-out int4 block error, summed: {held_full:.4f} exhaustive, {held_ranked:.4f} "
          f"ranked ({100 * (held_ranked / held_full - 1):+.3f}%)")
    print(f"plain rounding ruled out on the subset: {plain_ruled_out} mappings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
