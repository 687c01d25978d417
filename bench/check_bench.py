"""Benchmark of `bdi check` on large valid files, against `awk 'length($0)!=640'`.

Files of 10, 100 and 500 MB (1 MB = 10^6 bytes) are generated in a temporary folder from
the sections of good samples (one sender, one file type): each sample section gets its
flows repeated to about SECTION_RECORDS records, is written once by `write_file` (which
computes the footer), then copied with its header/footer section numbers patched to
1..N. Each `bdi check` and `awk` run is a fresh process started by a minimal wrapper
(WRAPPER) that times it and reports its peak RSS (ru_maxrss of the wrapper's children).

Targets: `bdi check` >= 30 MB/s on every file; peak RSS of the 500 MB run <= peak RSS of
the 10 MB run + 64 MiB (memory bounded by one section, not by the file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bdi.routing.layout import default_layout
from bdi.routing.writer import Section, parse_file, write_file

Emit = Callable[[str], None]

MB = 1_000_000
MIB = 1024 * 1024
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "samples"
# One sender (ALLIANZ GCS), file type P: a rejected premium (2 7 3 7 5 7) to the broker
# and a validated premium (2 3333 5555) to the CESAM; sections alternate between both.
SOURCES = ("PCIE000311_00311_000002.edi", "PCIE000311_00311_000003.edi")
FILE_NAME = "PCIE000311_00311_{:06d}.edi"
SIZES_MB = (10, 100, 500)
RUNS = {10: 3, 100: 3, 500: 2}
SECTION_RECORDS = 1000  # records per section: ~640 KB, 500 MB fits in 999 sections
MAX_SECTIONS = 999  # header section_number has 3 digits
HEADER_NUMBER = slice(50, 53)  # header columns 51-53
FOOTER_NUMBER = slice(32, 35)  # footer columns 33-35
MIN_MB_S = 30.0
RSS_GROWTH_MIB = 64
BDI = Path(sys.executable).absolute().parent / "bdi"


# Each measured command runs in a fresh process under this minimal interpreter (no site),
# which times it and reports its peak RSS. A child's ru_maxrss starts at the high-water
# mark of the process that spawned it (Linux carries it over fork/vfork + exec): measured
# straight from this benchmark it would be at least the benchmark's own peak, whereas the
# wrapper's floor is ~11 MiB, below what `bdi check` needs just to import.
WRAPPER = """\
import resource, subprocess, sys, time
with open(sys.argv[1], "wb") as out:
    start = time.perf_counter()
    code = subprocess.call(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
print(code, seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


class BenchError(RuntimeError):
    """The benchmark cannot be trusted (invalid generated file, failed command)."""


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    rss: int  # peak resident set size of the process, bytes


@dataclass(frozen=True, slots=True)
class Result:
    size: int
    sections: int
    check: Sequence[Run]
    awk: Sequence[Run]

    def check_s(self) -> float:
        return min(r.seconds for r in self.check)

    def awk_s(self) -> float:
        return min(r.seconds for r in self.awk)

    def check_mb_s(self) -> float:
        return self.size / MB / self.check_s()

    def rss_mib(self) -> float:
        return max(r.rss for r in self.check) / MIB


# --- generation -------------------------------------------------------------------------


def big_section(section: Section) -> Section:
    """The section with its records (whole flows) repeated to about SECTION_RECORDS."""
    times = max(1, SECTION_RECORDS // len(section.records))
    header = {**section.header, "section_number": 1}
    return replace(section, header=header, records=section.records * times)


def templates() -> list[bytes]:
    """Encoded one-section files (section number 1), one per sample section."""
    out = []
    for name in SOURCES:
        for section in parse_file((SAMPLES / name).read_bytes()):
            data = write_file([big_section(section)])
            out.append(data)
            footer = footer_offset(data)
            if data[HEADER_NUMBER] != b"001" or data[footer:][FOOTER_NUMBER] != b"001":
                raise BenchError(f"section number not where expected in {name}")
    return out


def footer_offset(data: bytes) -> int:
    return len(data) - (default_layout().record_length + 1)


def numbered(template: bytes, number: int) -> bytearray:
    data = bytearray(template)
    digits = b"%03d" % number
    footer = footer_offset(template)
    data[HEADER_NUMBER] = digits
    data[footer + FOOTER_NUMBER.start : footer + FOOTER_NUMBER.stop] = digits
    return data


def generate(path: Path, target: int, sections: Sequence[bytes]) -> int:
    """Write sections 1..N cycling over the templates until `target` bytes; N."""
    written = number = 0
    with path.open("wb") as out:
        while written < target:
            number += 1
            if number > MAX_SECTIONS:
                raise BenchError(f"{path.name}: more than {MAX_SECTIONS} sections needed")
            written += out.write(numbered(sections[(number - 1) % len(sections)], number))
    return number


# --- measurement ------------------------------------------------------------------------


def timed(
    argv: Sequence[str], output: Path, env: dict[str, str] | None = None, silent: bool = False
) -> Run:
    """Run a command through WRAPPER; its wall time and peak RSS. Fails loudly on a
    non-zero exit, or on any output from a `silent` command."""
    wrapper = [sys.executable, "-I", "-S", "-c", WRAPPER, str(output), *argv]
    done = subprocess.run(wrapper, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: wrapper failed:\n{done.stderr}")
    code, seconds, kib = done.stdout.split()
    if int(code) != 0 or (silent and output.stat().st_size):
        head = output.read_text(encoding="utf-8", errors="replace")[:2000]
        raise BenchError(f"{' '.join(argv)} exited {code}:\n{head}")
    return Run(float(seconds), int(kib) * 1024)  # ru_maxrss is in KiB on Linux


def check_run(path: Path) -> Run:
    """`bdi check FILE`: must report the file fully OK (exit 0)."""
    return timed([str(BDI), "check", str(path)], path.with_suffix(".check.out"))


def awk_run(path: Path) -> Run:
    """The baseline: every record read and its length checked; must print nothing."""
    env = {**os.environ, "LC_ALL": "C"}  # byte semantics for length()
    argv = ["awk", "length($0)!=640", str(path)]
    return timed(argv, path.with_suffix(".awk.out"), env, silent=True)


def measure(path: Path, size_mb: int, sections: int) -> Result:
    runs = RUNS[size_mb]
    check, awk = [], []
    for _ in range(runs):
        check.append(check_run(path))
        awk.append(awk_run(path))
    return Result(path.stat().st_size, sections, check, awk)


# --- report -----------------------------------------------------------------------------

COLUMNS = "{:>8} {:>8} {:>8} {:>10} {:>7} {:>8} {:>9} {:>12}"
HEADINGS = (
    "size MB",
    "sections",
    "check s",
    "check MB/s",
    "awk s",
    "awk MB/s",
    "check/awk",
    "peak RSS MiB",
)


def row(r: Result) -> tuple[str, ...]:
    return (
        f"{r.size / MB:.1f}",
        str(r.sections),
        f"{r.check_s():.2f}",
        f"{r.check_mb_s():.1f}",
        f"{r.awk_s():.3f}",
        f"{r.size / MB / r.awk_s():.0f}",
        f"{r.check_s() / r.awk_s():.1f}x",
        f"{r.rss_mib():.1f}",
    )


def table(results: Sequence[Result], emit: Emit) -> None:
    emit(COLUMNS.format(*HEADINGS))
    for r in results:
        emit(COLUMNS.format(*row(r)))
    runs = ", ".join(f"{n} for {size} MB" for size, n in RUNS.items())
    emit(f"(best of {runs}; check/awk = time ratio; peak RSS of check = max over runs)")


def targets(results: Sequence[Result], emit: Emit) -> bool:
    slowest = min(r.check_mb_s() for r in results)
    speed_ok = slowest >= MIN_MB_S
    emit(
        f"target check >= {MIN_MB_S:.0f} MB/s on every file: "
        f"{'PASS' if speed_ok else 'FAIL'} (slowest {slowest:.1f} MB/s)"
    )
    small, large = results[0].rss_mib(), results[-1].rss_mib()
    rss_ok = large <= small + RSS_GROWTH_MIB
    emit(
        f"target peak RSS {SIZES_MB[-1]} MB <= {SIZES_MB[0]} MB + {RSS_GROWTH_MIB} MiB: "
        f"{'PASS' if rss_ok else 'FAIL'} ({large:.1f} MiB vs {small:.1f} + "
        f"{RSS_GROWTH_MIB} MiB)"
    )
    return speed_ok and rss_ok


def startup(emit: Emit) -> None:
    """Fixed cost of one `bdi check` (interpreter, imports) on a small sample."""
    with tempfile.TemporaryDirectory(prefix="bdi-bench-") as tmp:
        path = Path(tmp) / SOURCES[0]
        path.write_bytes((SAMPLES / SOURCES[0]).read_bytes())
        size = path.stat().st_size
        best = min(check_run(path).seconds for _ in range(3))
    emit(f"bdi check fixed cost ({SOURCES[0]}, {size} bytes): {best:.2f} s")


def run(emit: Emit) -> bool:
    if not BDI.exists():
        raise BenchError(f"{BDI} not found: run with the project's venv python")
    sections = templates()
    results = []
    with tempfile.TemporaryDirectory(prefix="bdi-bench-") as tmp:
        for size_mb in SIZES_MB:
            path = Path(tmp) / FILE_NAME.format(size_mb)
            start = time.perf_counter()
            count = generate(path, size_mb * MB, sections)
            emit(
                f"generated {path.name}: {path.stat().st_size / MB:.1f} MB, {count} sections "
                f"in {time.perf_counter() - start:.1f} s; measuring {RUNS[size_mb]} runs"
            )
            results.append(measure(path, size_mb, count))
    startup(emit)
    table(results, emit)
    return targets(results, emit)
