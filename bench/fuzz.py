"""Long fuzz run of the plain-text path (check -> split -> flows -> plan); not part of CI.

The inputs are those of tests/test_fuzz.py (every sample, fields set out of their domain,
lines cut, joined, doubled, dropped, nested headers, many sections, lines of any bytes), and
every input goes through the same `exercise`, which asserts what holds for any upload. The
choices of each mutation come from libFuzzer through atheris, coverage-guided over the
routing and planning code (`pip install .[fuzz]`); without atheris, from a seeded random
generator (`--engine random`).

A crash (an exception, or a broken invariant) does not stop the run: its input is saved under
--crashes, its first traceback printed, and the run goes on. Progress lines give the inputs,
the time and the crashes so far; the last line is the summary.

    .venv/bin/python bench/fuzz.py --runs 1000000            # atheris when installed
    .venv/bin/python bench/fuzz.py --engine random --runs 200000 --seed 7
    .venv/bin/python bench/fuzz.py --replay /tmp/bdi-fuzz-crashes/<file>
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parents[1] / "tests"
INSTRUMENTED = ("bdi.routing", "bdi.pipeline.plan", "bdi.pipeline.prepare")
PROGRESS = 50_000  # inputs between two progress lines


@dataclass(slots=True)
class Run:
    """What a run has done so far; crashes are told once per place they come from."""

    runs: int
    crashes_dir: Path
    started: float = field(default_factory=time.monotonic)
    inputs: int = 0
    crashes: int = 0
    places: dict[str, int] = field(default_factory=dict)

    def line(self, what: str) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.inputs / elapsed if elapsed else 0.0
        return (
            f"{what}: {self.inputs} inputs in {elapsed:.0f} s ({rate:.0f}/s), "
            f"{self.crashes} crashes from {len(self.places)} places"
        )

    def crashed(self, upload: bytes, name: str, error: BaseException) -> None:
        self.crashes += 1
        frame = traceback.extract_tb(error.__traceback__)[-1]
        place = f"{type(error).__name__} at {Path(frame.filename).name}:{frame.lineno}"
        digest = hashlib.sha256(upload).hexdigest()[:16]
        self.crashes_dir.mkdir(parents=True, exist_ok=True)
        (self.crashes_dir / f"{name}.{digest}").write_bytes(upload)
        if place not in self.places:
            say(f"crash: {place}: {error!r} (input {name}.{digest})")
            say("".join(traceback.format_exception(error)))
        self.places[place] = self.places.get(place, 0) + 1

    def count(self) -> None:
        self.inputs += 1
        if self.inputs % PROGRESS == 0 or self.inputs == self.runs:
            say(self.line("done" if self.inputs == self.runs else "progress"))


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_harness(instrument: Callable[[], Any] | None) -> ModuleType:
    """tests/test_fuzz.py, with the bdi modules it imports instrumented for coverage."""
    sys.path.insert(0, str(TESTS))
    if instrument is None:
        return importlib.import_module("test_fuzz")
    with instrument():
        return importlib.import_module("test_fuzz")


def one_input(harness: ModuleType, run: Run, choices: Any) -> None:
    """Build one upload from `choices` and run it through the whole path."""
    mutator = harness.MUTATORS[choices.below(len(harness.MUTATORS))]
    seed = mutator(choices)
    run.count()
    try:
        harness.exercise(seed.data, seed.name, seed.uploader)
    except Exception as error:  # every crash is counted and kept, the run goes on
        run.crashed(seed.data, seed.name, error)


@dataclass(frozen=True, slots=True)
class Seeded:
    """Choices from a seeded random generator (no coverage guidance)."""

    rng: random.Random

    def below(self, n: int) -> int:
        return self.rng.randrange(n)

    def raw(self, n: int) -> bytes:
        return self.rng.randbytes(n)


@dataclass(frozen=True, slots=True)
class Provided:
    """Choices read from libFuzzer's input (its mutations are then mutations of choices)."""

    fdp: Any  # atheris.FuzzedDataProvider

    def below(self, n: int) -> int:
        return int(self.fdp.ConsumeIntInRange(0, n - 1))

    def raw(self, n: int) -> bytes:
        data = bytes(self.fdp.ConsumeBytes(n))
        return data.ljust(n, b"\x00")


def run_random(run: Run, seed: int) -> None:
    harness = load_harness(None)
    choices = Seeded(random.Random(seed))
    while run.inputs < run.runs:
        one_input(harness, run, choices)


def run_atheris(run: Run, corpus: Path | None) -> None:
    atheris = importlib.import_module("atheris")  # an optional extra, with no type stubs
    harness = load_harness(lambda: atheris.instrument_imports(include=list(INSTRUMENTED)))

    def test_one_input(data: bytes) -> None:
        one_input(harness, run, Provided(atheris.FuzzedDataProvider(data)))

    # len_control=0: inputs may be max_len long from the start, else libFuzzer's first
    # hundred thousand inputs are a few bytes, that is the first seed and mutator mostly
    argv = [sys.argv[0], f"-runs={run.runs}", "-max_len=4096", "-len_control=0"]
    argv.append("-print_final_stats=1")
    if corpus is not None:
        seed_corpus(corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()  # ends the process when the runs are done


def seed_corpus(corpus: Path, count: int = 256) -> None:
    """Start an empty corpus with random choice strings of 16 to 1 024 bytes: libFuzzer's own
    first inputs are a few bytes, whose choices past the first ones are all 0 (the first
    sample, the first field, the first value)."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    rng = random.Random(0)
    for n in range(count):
        (corpus / f"seed-{n:03d}").write_bytes(rng.randbytes(rng.randrange(16, 1025)))


def replay(path: Path, name: str, uploader: str) -> None:
    """Run one saved input again, with its traceback if it still fails."""
    harness = load_harness(None)
    harness.exercise(path.read_bytes(), name, uploader)
    say(f"{path}: no crash")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=["atheris", "random"], default=None)
    parser.add_argument("--seed", type=int, default=0, help="of the random engine")
    parser.add_argument("--crashes", type=Path, default=Path("/tmp/bdi-fuzz-crashes"))
    parser.add_argument("--corpus", type=Path, default=None, help="libFuzzer's corpus folder")
    parser.add_argument("--replay", type=Path, default=None, help="a saved crash input")
    args = parser.parse_args()
    if args.replay is not None:
        name = args.replay.name.rsplit(".", 1)[0]
        uploader = name[1:10]
        replay(args.replay, name, uploader)
        return
    engine = args.engine or ("atheris" if _has_atheris() else "random")
    run = Run(args.runs, args.crashes)
    say(f"fuzz: engine {engine}, {args.runs} inputs, crashes kept in {args.crashes}")
    if engine == "atheris":
        run_atheris(run, args.corpus)
    else:
        run_random(run, args.seed)


def _has_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


if __name__ == "__main__":
    main()
