"""Paired comparison of two hub configurations on the routed rate (the hub benchmark's (a)).

    .venv/bin/python bench/hub_ab.py [--pairs N] [--a VAR=VALUE,...] [--b VAR=VALUE,...]

This machine drifts by up to 30 % within minutes, more than most changes one would like to
judge: two benchmark runs a few minutes apart say little. Here two `bdi serve` processes run
side by side, each on its own data folder, with the environment variables given (settings
such as BDI_WORKERS=8); their (a) rounds alternate A B, B A, ... and each is compared with the
mean of the OpenPGP floors measured just before and after it, as in hub_bench. A change of
code is compared by giving B a PYTHONPATH that puts another tree first (`bench/tree_at REV DIR`
lays one out). The server's CPU over its gpg's CPU, printed too, is a steadier measure of the
server's own cost: the machine's drift changes both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import hub_bench as hb

from bdi.config import load_settings
from bdi.datadir import hub_key_file


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def environment(changes: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(changes)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sealed_uploads(work: Path, hub: hb.Hub, broker: hb.Party) -> list[hb.Upload]:
    """FILES + 1 uploads sealed to this hub's key (the last one is the warm-up)."""
    broker.pgp.import_public(hub_key_file(hub.settings).read_text())
    (work / "plain").mkdir(parents=True)
    files = hb.small_files(hb.FILES + 1)
    plain = hb.write_all(work / "plain", files)
    sealed = hb.seal_all(broker.pgp.home, plain, work, hub.fingerprint, broker.fingerprint)
    return [(name, path.read_bytes()) for (name, _), path in zip(files, sealed, strict=True)]


Found = dict[str, list[tuple[float, float]]]  # config -> per round: (a)/(b), server/gpg CPU


def compare(work: Path, configs: dict[str, dict[str, str]], pairs: int) -> Found:
    parties = {edi_id: hb.make_party(edi_id) for edi_id in (hb.SENDER, hb.RECIPIENT)}
    try:
        hubs, uploads = {}, {}
        for name in configs:
            settings = load_settings(None, data=work / name, sftp_port=0, host="127.0.0.1")
            hubs[name] = asyncio.run(hb.prepare(settings, list(parties.values())))
            uploads[name] = sealed_uploads(work / f"{name}-files", hubs[name], parties[hb.SENDER])
        return rounds(work, hubs, uploads, configs, parties[hb.RECIPIENT], pairs)
    finally:
        hb.stop_agents([p.pgp.home for p in parties.values()])
        for party in parties.values():
            shutil.rmtree(party.pgp.home, ignore_errors=True)


def rounds(
    work: Path,
    hubs: dict[str, hb.Hub],
    uploads: dict[str, list[hb.Upload]],
    configs: dict[str, dict[str, str]],
    recipient: hb.Party,
    pairs: int,
) -> Found:
    first = next(iter(hubs))
    sealed = [work / f"{first}-files" / f"{n}.pgp" for n, _ in uploads[first][: hb.FILES]]
    found: Found = {name: [] for name in configs}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, changes in configs.items():
            with environment(changes):
                servers[name] = stack.enter_context(hb.serving(hubs[name], work / f"{name}.log"))

        def floor() -> float:
            return hb.FILES / hb.floor(hubs[first], recipient.fingerprint, sealed)[0]

        before = floor()
        order = list(configs)
        for n in range(pairs):
            for name in order if n % 2 == 0 else order[::-1]:
                todo = uploads[name]
                r = asyncio.run(hb.routed(hubs[name], servers[name], todo[: hb.FILES], todo[-1]))
                after = floor()
                ratio = hb.FILES / r.delivered_s / ((before + after) / 2)
                before = after
                ms = {k: getattr(r.cpu, k) * 1000 / hb.FILES for k in ("machine", "server", "gpg")}
                found[name].append((ratio, ms["server"] / ms["gpg"]))
                emit(f"{name}: (a)/(b) {ratio:.0%}, CPU ms per file: machine "
                     f"{ms['machine']:.1f}, server {ms['server']:.1f}, its gpg {ms['gpg']:.1f}; "
                     f"server/gpg {ms['server'] / ms['gpg']:.2f}")  # fmt: skip
    return found


def parse(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--a", default="", help="environment of server A: VAR=VALUE,...")
    parser.add_argument("--b", default="", help="environment of server B: VAR=VALUE,...")
    args = parser.parse_args()
    configs = {"A": parse(args.a), "B": parse(args.b)}
    work = Path(tempfile.mkdtemp(prefix="bdi-hub-ab-", dir="/tmp"))
    try:
        found = compare(work, configs, args.pairs)
    finally:
        hb.stop_agents([work / name / "gnupg" for name in configs])
        shutil.rmtree(work, ignore_errors=True)
    for name, rounds_found in found.items():
        ratios, cpu = [r for r, _ in rounds_found], [c for _, c in rounds_found]
        emit(f"{name} {configs[name] or '(defaults)'}: median (a)/(b) "
             f"{statistics.median(ratios):.0%}, mean {statistics.mean(ratios):.0%}; "
             f"median server/gpg CPU {statistics.median(cpu):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
