"""``main.py benchmark``: latency, throughput, size and top-1 of every format of an export, on this machine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.parsing import EXIT_OK, Subparsers, add_command, refuse, stops_cleanly


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers, "benchmark", "measure each format of an export: latency, throughput, size and top-1",
        ["python main.py benchmark exports/",
         "python main.py benchmark exports/ --data photos/ --batch 1 --threads 4"])
    parser.add_argument("export_dir", help="a folder main.py export wrote (onnx/, onnx-int8/, torchscript/, ...)")
    parser.add_argument("--data", metavar="DIR", help="labelled photos to measure top-1 on "
                        "(default: the model's own validation images)")
    parser.add_argument("--batch", type=int, default=1, help="images per call for latency (default 1)")
    parser.add_argument("--throughput-batch", type=int, default=32, metavar="N",
                        help="images per call for throughput (default 32)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for every runtime (default: all)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per format after warm-up (default 30)")
    return parser


@stops_cleanly
def run(arguments: argparse.Namespace) -> int:
    if not Path(arguments.export_dir).is_dir():
        return refuse(f"export_dir: {arguments.export_dir} is not a folder (expected what main.py export wrote)")
    for name in ("batch", "runs", "threads", "throughput_batch"):
        value = getattr(arguments, name)
        if value is not None and value < 1:
            return refuse(f"--{name.replace('_', '-')}: must be a whole number >= 1, got {value}")
    from engine.export.benchmark import benchmark_exports

    def progress(done: int, total: int) -> None:
        print(f"benchmark: {done}/{total} models measured", file=sys.stderr, flush=True)

    report = benchmark_exports(arguments.export_dir, data=arguments.data, batch=arguments.batch,
                               throughput_batch=arguments.throughput_batch, threads=arguments.threads,
                               runs=arguments.runs, progress=progress)
    print(report.table())
    saved = report.save()
    print(f"\nsaved to {saved[0]} and {saved[1]}")
    return EXIT_OK
