"""Benchmark: the Suivi's search latencies (bench/suivi_bench.py's search part, 1 M movements)
on PostgreSQL (issue 17): the store COPYed into a throwaway cluster, the same queries timed
through `bdi.suivi.queries`, the same target (p95 <= 150 ms for each search).

SUIVI_BENCH_PART=file (or =all) runs the 5 000-flow file's pages on PostgreSQL too.

    .venv/bin/python bench/suivi_pg.py        (or bench/run.py --only suivi-pg)
"""

from __future__ import annotations

import os
import sys

import suivi_bench
from suivi_bench import Emit


def run(emit: Emit) -> bool:
    part = os.environ.get("SUIVI_BENCH_PART", "search")
    return suivi_bench.run_pg(emit, "" if part == "all" else part)


if __name__ == "__main__":
    sys.exit(0 if run(print) else 1)
