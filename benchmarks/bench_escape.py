"""What the escaping stream costs a line of output, as a ratio to a raw stream.

Every line the CLI prints goes through ``text.EscapedStream`` (one sanitiser for
everything shown). This writes an ``events``-like row N times to an in-memory
sink, raw and through the stream (plain text, and text with controls to
escape), best of --repeat rounds each, interleaved, and prints the cost per
line and the ratio to the raw write.

Usage: python benchmarks/bench_escape.py [--lines 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import time

from mirrorsync.text import EscapedStream

PLAIN = (
    "   42  2026-11-20 08:00Z  spec.added     spack-public:develop/root  7  abcdefgh  zlib@1.3\n"
)
HOSTILE = PLAIN.replace("zlib", "z\u202elib\x1b[2J")


def per_line(line: str, wrapped: bool, lines: int) -> float:
    sink = io.StringIO()
    out: io.TextIOBase = EscapedStream(sink) if wrapped else sink
    started = time.perf_counter()
    for _ in range(lines):
        out.write(line)
    return (time.perf_counter() - started) / lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {"raw": (PLAIN, False), "plain": (PLAIN, True), "hostile": (HOSTILE, True)}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.repeat):  # interleaved: the machine's noise hits every case alike
        for name, (line, wrapped) in cases.items():
            best[name] = min(best[name], per_line(line, wrapped, args.lines))
    for name, cost in best.items():
        print(f"{name:8} {cost * 1e9:8.0f} ns/line  {cost / best['raw']:6.1f}x raw")


if __name__ == "__main__":
    main()
