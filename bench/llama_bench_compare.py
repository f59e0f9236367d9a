#!/usr/bin/env python3
"""Do edgebench's tokens/s agree with llama.cpp's own llama-bench? Both run the same GGUF on the same llama.cpp build
(scripts/build_llama.py: one build of the sources llama-cpp-python 0.3.36 vendors, its libllama loaded by the Python
bindings and linked into llama-bench), with the same threads, batch sizes, prompt and generation lengths, in rounds
that alternate the two tools (drift on the machine hits both alike).

Compared, round by round and over all rounds:
- prefill: edgebench's prefill tokens/s of a ``--prompt-tokens P`` prompt against llama-bench's ``pp P``;
- decode: edgebench's decode tokens/s (``--gen-tokens G`` steps after that prompt) against llama-bench's ``tg G`` at
  depth P (``-d P``: the same context already holding P tokens), so both decode at the same context positions.

edgebench's decode step also picks the next token (greedy argmax over the vocabulary); llama-bench decodes without
sampling. The goal is agreement within 3%. The figures go to docs/performance.md ("Language models").

Usage: python bench/llama_bench_compare.py [--model smollm2_135m_q4_1.gguf] [--threads 2] [--prompt-tokens 512]
       [--gen-tokens 128] [--repeats 5] [--rounds 3] [--json out.json]
Needs `make llm-tools` (llama-bench built into the cache).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402


def find_llama_bench() -> Path:
    cache = Path(os.environ.get("EDGEBENCH_CACHE", Path.home() / ".cache" / "edgebench")) / "llama.cpp"
    found = sorted(cache.glob("*/bin/llama-bench"))
    if not found:
        sys.exit(f"llama-bench is not built in {cache}: run `make llm-tools`")
    return found[-1]


def edgebench_round(model: Path, args: argparse.Namespace) -> tuple[float, float]:
    """edgebench's prefill and decode tokens/s (the estimates over its repeats)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        subprocess.run([sys.executable, "-m", "edgebench.agent.cli", "bench", str(model), "--prompt-tokens",
                        str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens), "--repeats", str(args.repeats),
                        "--threads", str(args.threads), "--history", "off", "--quiet", "--json", str(out)],
                       check=True)
        generation = json.loads(out.read_text())["generation"]
    return generation["prefill_tok_s"]["estimate"], generation["decode_tok_s"]["estimate"]


def llama_bench_round(tool: Path, model: Path, args: argparse.Namespace) -> tuple[float, float]:
    """llama-bench's pp P (depth 0) and tg G at depth P: their average tokens/s over its repetitions."""
    common = [str(tool), "-m", str(model), "-t", str(args.threads), "-r", str(args.repeats), "-o", "json"]
    pp = json.loads(subprocess.run([*common, "-p", str(args.prompt_tokens), "-n", "0"], check=True,
                                   capture_output=True, text=True).stdout)
    tg = json.loads(subprocess.run([*common, "-p", "0", "-n", str(args.gen_tokens), "-d", str(args.prompt_tokens)],
                                   check=True, capture_output=True, text=True).stdout)
    return float(pp[0]["avg_ts"]), float(tg[0]["avg_ts"])


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2_135m_q4_1.gguf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    model = Path(fetch_models.fetch([args.model])[args.model])
    tool = find_llama_bench()
    rows = []
    for index in range(args.rounds):
        pair = [("edgebench", lambda: edgebench_round(model, args)),
                ("llama-bench", lambda: llama_bench_round(tool, model, args))]
        if index % 2:
            pair.reverse()  # alternate which tool goes first
        measured = {name: run() for name, run in pair}
        rows.append(measured)
        (ep, ed), (lp, ld) = measured["edgebench"], measured["llama-bench"]
        print(f"round {index + 1}: prefill {ep:.1f} vs {lp:.1f} tok/s ({ep / lp:.3f}x) · decode {ed:.1f} vs "
              f"{ld:.1f} tok/s ({ed / ld:.3f}x)", flush=True)
    prefill = geomean([r["edgebench"][0] / r["llama-bench"][0] for r in rows])
    decode = geomean([r["edgebench"][1] / r["llama-bench"][1] for r in rows])
    print(f"edgebench / llama-bench over {args.rounds} rounds: prefill pp{args.prompt_tokens} {prefill:.3f}x, "
          f"decode tg{args.gen_tokens}@d{args.prompt_tokens} {decode:.3f}x (goal: within 3%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rounds": rows, "prefill_ratio": prefill,
                                               "decode_ratio": decode}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
