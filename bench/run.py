"""Run the benchmarks of bench/ and print their figures.

    .venv/bin/python bench/run.py [--only NAME]

Each benchmark is a module of this folder listed in BENCHMARKS; it exposes
`run(emit) -> bool` (True when its targets pass). The exit status is 1 when a target fails.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# benchmark name -> module of bench/ (add new benchmarks here)
BENCHMARKS: dict[str, str] = {
    "attack": "attack",
    "bigfile": "bigfile",
    "crowd": "crowd",
    "check": "check_bench",
    "engines": "engines",
    "hub": "hub_bench",
    "nodes": "nodes",
    "suivi": "suivi_bench",
    "suivi-pg": "suivi_pg",
}


def emit(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run_one(name: str) -> bool:
    emit(f"== benchmark {name} ==")
    module = importlib.import_module(BENCHMARKS[name])
    passed = bool(module.run(emit))
    emit(f"== {name}: {'PASS' if passed else 'FAIL'} ==")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=sorted(BENCHMARKS), help="run this benchmark only")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(BENCHMARKS)
    failed = [name for name in names if not run_one(name)]
    if failed:
        emit(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
