"""What bench/soak.py uploads and what the hub must answer to each upload.

The files: the samples of shared/spec/samples (those the manifest says are delivered, and the
broken ones), refusals of the OpenPGP layer (signed by another participant's key, unsigned,
signed only, garbage bytes), malformed variants of good samples (a truncated record or file,
a month 13 in a date, bytes that are not printable ISO-8859-1), and large valid files of many
sections. Each is sealed as a participant's kit would seal it (signed by the uploader's key,
encrypted to the hub's key) unless the kind says otherwise.

What the hub must answer is predicted by the hub's own offline checker (`check_bytes`, what
`bdi check` runs), checked first against the manifest on every sample: the soak tests that
each upload is answered exactly once, not the checks themselves.
"""

from __future__ import annotations

import random
import re
import subprocess
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bdi.crypto import OpenPGP
from bdi.routing.layout import Layout, default_layout
from bdi.routing.scan import CheckContext, check_bytes
from bdi.routing.writer import parse_file, write_file

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "samples"
MIB = 1 << 20
GPG_OPTIONS = ["--batch", "--yes", "--trust-model", "always", "--pinentry-mode", "error"]
POLICY = b"SIA-2008-00123"  # a policy number found in several samples: varied per upload
BIG_SAMPLE = "RCOU010234_00311_000001.edi"  # one section, COU010234 -> CIE000311
SECTION_RECORDS = 1000  # records per section of a large file (~640 KB)
HEADER_NUMBER = slice(50, 53)  # header columns 51-53: the section number
FOOTER_NUMBER = slice(32, 35)  # footer columns 33-35: the section number
NAME = re.compile(r"^(?P<prefix>[A-Z](?:COU|AGT|APE|CIE|GIE)[0-9]{6}_[0-9]{5}_)[0-9]{6}\.edi$")

# kind -> weight among the small uploads (large files are a count of their own)
WEIGHTS: dict[str, int] = {
    "good": 40,  # a sample the manifest says is delivered
    "check": 15,  # a broken sample: .log files (and a delivery for one of them)
    "foreign": 6,  # signed by another participant's key: DECHIFFREMENT
    "unsigned": 5,  # encrypted to the hub, not signed: DECHIFFREMENT
    "signed_only": 3,  # signed, not encrypted: DECHIFFREMENT
    "garbage": 6,  # random bytes: DECHIFFREMENT
    "truncated": 6,  # a record or the file cut short
    "month13": 6,  # a date with month 13
    "latin1": 6,  # bytes that are not printable ISO-8859-1 (C1 controls, UTF-8)
}
REFUSED_KINDS = ("foreign", "unsigned", "signed_only", "garbage")


class SoakError(RuntimeError):
    """The soak cannot be trusted (bad set-up, an oracle that disagrees with the manifest)."""


@dataclass(slots=True)
class Party:
    """A participant: its own short GnuPG home and key, and its issued SFTP password."""

    edi_id: str
    pgp: OpenPGP
    fingerprint: str
    password: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the hub must answer to one upload, whatever its name."""

    deliveries: Mapping[str, bytes]  # recipient -> the plain text it must receive
    logs: Mapping[str, frozenset[str]]  # "" (whole upload) or "_<n>" (section n) -> codes

    def describe(self) -> str:
        parts = [f"deliver to {r}" for r in sorted(self.deliveries)]
        parts += [f"ERREUR…{s}.log {'/'.join(sorted(c))}" for s, c in sorted(self.logs.items())]
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True, slots=True)
class Content:
    """One file to upload: who uploads it, its name's prefix, its sealed bytes' file, and what
    the hub must answer."""

    number: int
    kind: str
    sender: str
    prefix: str  # "<type letter><EDI id>_<5 digits>_": the name is prefix + 6 digits + ".edi"
    sealed: Path
    outcome: Outcome
    detail: str  # the sample and what was done to it
    size: int = 0  # of the sealed file

    def name(self, sequence: int) -> str:
        return f"{self.prefix}{sequence:06d}.edi"


@dataclass(frozen=True, slots=True)
class Expected:
    """One answer an upload must produce: a delivery, or a `.log` in the sender's inbox."""

    participant: str
    name: str
    what: str  # "delivery" or "log"
    plain: bytes = b""  # a delivery's plain text
    codes: frozenset[str] = frozenset()  # a `.log`'s problem codes


def answers(content: Content, name: str) -> list[Expected]:
    stem = name.removesuffix(".edi")
    out = [Expected(r, name, "delivery", plain=p) for r, p in content.outcome.deliveries.items()]
    out += [
        Expected(content.sender, f"ERREUR{stem}{suffix}.log", "log", codes=codes)
        for suffix, codes in content.outcome.logs.items()
    ]
    return out


# --- samples and the oracle -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    uploaded_by: str
    plain: bytes
    outcome: Outcome

    @property
    def prefix(self) -> str:
        found = NAME.match(self.name)
        if found is None:
            raise SoakError(f"sample name {self.name} is not an Optiflux name")
        return found["prefix"]

    @property
    def delivered_only(self) -> bool:
        return not self.outcome.logs


def manifest() -> list[dict[str, Any]]:
    with (SAMPLES / "manifest.toml").open("rb") as f:
        return list(tomllib.load(f)["sample"])


def predict(plain: bytes, name: str, sender: str, registered: frozenset[str]) -> Outcome:
    """What the hub must answer to `plain`, well sealed by `sender`, uploaded as `name`."""
    report = check_bytes(
        plain, CheckContext(name, sender, recipient_active=lambda r: r in registered)
    )
    if not report.accepted:
        return Outcome({}, {"": frozenset(str(c) for c in report.codes())})
    deliveries: dict[str, bytearray] = {}
    logs: dict[str, frozenset[str]] = {}
    for section in report.sections:
        if section.accepted:  # delivered byte for byte as uploaded (layout.toml)
            chunk = plain[section.start : section.end]
            deliveries.setdefault(section.recipient_id, bytearray()).extend(chunk)
        else:
            logs[f"_{section.number}"] = frozenset(str(p.code) for p in section.problems)
    return Outcome({r: bytes(p) for r, p in deliveries.items()}, logs)


def refused() -> Outcome:
    return Outcome({}, {"": frozenset({"DECHIFFREMENT"})})


def load_samples(registered: frozenset[str]) -> list[Sample]:
    """Every sample of the manifest with its predicted outcome, which must be the manifest's."""
    samples = []
    for entry in manifest():
        path = SAMPLES / entry["path"]
        plain = path.read_bytes()
        outcome = predict(plain, path.name, entry["uploaded_by"], registered)
        wanted_deliveries = {s["recipient"] for s in entry["sections"] if s["expect"] == "deliver"}
        wanted_logs = {
            f"_{s['number']}": frozenset(s["problems"])
            for s in entry["sections"]
            if s["expect"] == "refuse"
        }
        if set(outcome.deliveries) != wanted_deliveries or dict(outcome.logs) != wanted_logs:
            raise SoakError(
                f"the checker's prediction for {entry['path']} ({outcome.describe()}) is not "
                f"the manifest's (deliver {sorted(wanted_deliveries)}, logs {wanted_logs})"
            )
        samples.append(Sample(path.name, entry["uploaded_by"], plain, outcome))
    return samples


# --- malformed variants -----------------------------------------------------------------


def _lines(plain: bytes) -> list[bytes]:
    return plain.split(b"\n")[:-1] if plain.endswith(b"\n") else plain.split(b"\n")


def _join(lines: Sequence[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _date_fields(layout: Layout, line: str, flow_code: str) -> list[tuple[int, int]]:
    marker = line[:10]
    if marker == "1111111111":
        spec = layout.header
    elif marker == "9999999999":
        spec = layout.footer
    elif marker == "7777777777":
        spec = layout.reject
    else:
        found = layout.record_for(flow_code, marker) if flow_code else None
        if found is None:
            return []
        spec = found
    return [
        (f.start, f.end) for f in spec.fields if f.kind == "date" and line[f.start : f.end].strip()
    ]


def month13(plain: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A filled date of a random record set to month 13 (AAAA-13-JJ)."""
    layout = default_layout()
    lines = _lines(plain)
    choices: list[tuple[int, int]] = []
    flow = ""
    for number, raw in enumerate(lines):
        text = raw.decode(layout.encoding)
        if text.startswith("1111111111"):
            flow = text[11:14]
        choices += [(number, start) for start, _ in _date_fields(layout, text, flow)]
    number, start = rng.choice(choices)
    line = bytearray(lines[number])
    line[start + 5 : start + 7] = b"13"
    lines[number] = bytes(line)
    return _join(lines), f"line {number + 1} column {start + 1}: month 13"


def truncated(plain: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A record cut short, or the whole file cut in the middle of its last section."""
    lines = _lines(plain)
    if rng.random() < 0.5:
        number = rng.randrange(len(lines))
        cut = rng.randint(1, 40)
        lines[number] = lines[number][:-cut]
        return _join(lines), f"line {number + 1} {cut} characters short"
    last_header = max(i for i, line in enumerate(lines) if line.startswith(b"1111111111"))
    offset = len(_join(lines[: last_header + 1])) + 1
    at = rng.randrange(offset, len(plain) - 1)
    return plain[:at], f"file cut at byte {at} of {len(plain)}"


def latin1(plain: bytes, rng: random.Random) -> tuple[bytes, str]:
    """C1 control bytes (not printable ISO-8859-1) in place of text, or UTF-8 text (longer)."""
    lines = _lines(plain)
    number = rng.randrange(len(lines))
    line = bytearray(lines[number])
    at = rng.randrange(60, 600)
    if rng.random() < 0.5:
        line[at : at + 2] = bytes([rng.randrange(0x80, 0xA0), rng.randrange(0x80, 0xA0)])
        what = f"line {number + 1} column {at + 1}: C1 control bytes"
    else:
        line[at : at + 2] = "é€".encode()
        what = f"line {number + 1} column {at + 1}: UTF-8 'é€' (5 bytes for 2 characters)"
    lines[number] = bytes(line)
    return _join(lines), what


MUTATIONS: dict[str, Callable[[bytes, random.Random], tuple[bytes, str]]] = {
    "truncated": truncated,
    "month13": month13,
    "latin1": latin1,
}


def varied(sample: Sample, number: int, registered: frozenset[str]) -> tuple[bytes, str]:
    """The sample with its policy number made unique, if it has one and stays as good."""
    if POLICY not in sample.plain:
        return sample.plain, sample.name
    policy = POLICY[:-5] + b"%05d" % (number % 100_000)
    plain = sample.plain.replace(POLICY, policy)
    if predict(plain, sample.name, sample.uploaded_by, registered) != sample.outcome:
        return sample.plain, sample.name
    return plain, f"{sample.name} policy {policy.decode()}"


# --- large files ------------------------------------------------------------------------


def _numbered(template: bytes, footer: int, number: int) -> bytes:
    data = bytearray(template)
    digits = b"%03d" % number
    data[HEADER_NUMBER] = digits
    data[footer + FOOTER_NUMBER.start : footer + FOOTER_NUMBER.stop] = digits
    return bytes(data)


def large_plain(sample: Sample, min_bytes: int) -> bytes:
    """A valid file of at least `min_bytes`: the sample's section with its records repeated
    to about SECTION_RECORDS, numbered 1..N (as bench/hub_bench.py builds its big file)."""
    [section] = parse_file(sample.plain)
    times = max(1, SECTION_RECORDS // len(section.records))
    template = write_file([replace(section, records=section.records * times)])
    footer = len(template) - (default_layout().record_length + 1)
    count = -(-min_bytes // len(template))
    if count > 999:
        raise SoakError(f"{min_bytes} bytes need {count} sections: more than 999")
    return b"".join(_numbered(template, footer, n) for n in range(1, count + 1))


# --- sealing ----------------------------------------------------------------------------


def gpg(party: Party, args: Sequence[str], src: Path, dst: Path) -> None:
    argv = ["gpg", "--homedir", str(party.pgp.home), *GPG_OPTIONS, *args]
    argv += ["--output", str(dst), str(src)]
    done = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SoakError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


@dataclass(slots=True)
class Sealing:
    """One file to seal: the plain text (a file), how, and where the message goes."""

    plain: Path
    sealed: Path
    how: str  # "seal", "seal-z0", "encrypt", "sign", "copy"
    signer: Party
    hub: str

    def run(self) -> int:
        signer = self.signer
        if self.how == "seal":
            signer.pgp.sign_encrypt(self.plain, self.sealed, self.hub, signer.fingerprint)
        elif self.how == "seal-z0":  # uncompressed: the whole size travels over SFTP
            args = ["-z", "0", "--sign", "--local-user", signer.fingerprint, "--encrypt"]
            args += ["--recipient", self.hub, "--no-encrypt-to"]
            gpg(signer, args, self.plain, self.sealed)
        elif self.how == "encrypt":
            args = ["--encrypt", "--recipient", self.hub, "--no-encrypt-to"]
            gpg(signer, args, self.plain, self.sealed)
        elif self.how == "sign":
            gpg(signer, ["--sign", "--local-user", signer.fingerprint], self.plain, self.sealed)
        else:
            self.sealed.write_bytes(self.plain.read_bytes())
        return self.sealed.stat().st_size


@dataclass(slots=True)
class Corpus:
    """Builds the contents to upload, sealed in a few threads (each gpg is a process)."""

    folder: Path
    parties: Mapping[str, Party]
    hub_fingerprint: str
    rng: random.Random
    samples: list[Sample] = field(default_factory=list)
    jobs: list[tuple[Sealing, Content]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.samples = load_samples(frozenset(self.parties))
        (self.folder / "plain").mkdir(parents=True, exist_ok=True)
        (self.folder / "sealed").mkdir(parents=True, exist_ok=True)

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.delivered_only]

    @property
    def broken(self) -> list[Sample]:
        return [s for s in self.samples if not s.delivered_only]

    def _add(
        self, number: int, kind: str, plain: bytes | Path, how: str, signer: Party,
        sender: str, prefix: str, outcome: Outcome, detail: str,
    ) -> None:  # fmt: skip
        if isinstance(plain, Path):
            source = plain
        else:
            source = self.folder / "plain" / f"{number:06d}"
            source.write_bytes(plain)
        sealed = self.folder / "sealed" / f"{number:06d}.pgp"
        sealing = Sealing(source, sealed, how, signer, self.hub_fingerprint)
        content = Content(number, kind, sender, prefix, sealed, outcome, detail)
        self.jobs.append((sealing, content))

    def small(self, number: int, kind: str) -> None:
        rng, registered = self.rng, frozenset(self.parties)
        if kind == "check":
            sample = rng.choice(self.broken)
            self._add(number, kind, sample.plain, "seal", self.parties[sample.uploaded_by],
                      sample.uploaded_by, sample.prefix, sample.outcome, sample.name)  # fmt: skip
            return
        sample = rng.choice(self.good)
        sender = self.parties[sample.uploaded_by]
        plain, detail = varied(sample, number, registered)
        if kind == "good":
            self._add(number, kind, plain, "seal", sender, sender.edi_id, sample.prefix,
                      sample.outcome, detail)  # fmt: skip
        elif kind in MUTATIONS:
            plain, what = MUTATIONS[kind](plain, rng)
            outcome = predict(plain, sample.name, sender.edi_id, registered)
            self._add(number, kind, plain, "seal", sender, sender.edi_id, sample.prefix,
                      outcome, f"{detail}: {what}")  # fmt: skip
        elif kind == "foreign":
            other = rng.choice([p for p in self.parties.values() if p is not sender])
            self._add(number, kind, plain, "seal", other, sender.edi_id, sample.prefix,
                      refused(), f"{detail} signed by {other.edi_id}")  # fmt: skip
        elif kind == "unsigned":
            self._add(number, kind, plain, "encrypt", sender, sender.edi_id, sample.prefix,
                      refused(), f"{detail} encrypted, not signed")  # fmt: skip
        elif kind == "signed_only":
            self._add(number, kind, plain, "sign", sender, sender.edi_id, sample.prefix,
                      refused(), f"{detail} signed, not encrypted")  # fmt: skip
        elif kind == "garbage":
            junk = rng.randbytes(rng.randint(1, 64 * 1024))
            self._add(number, kind, junk, "copy", sender, sender.edi_id, sample.prefix,
                      refused(), f"{len(junk)} random bytes")  # fmt: skip
        else:
            raise SoakError(f"unknown kind {kind}")

    def large(self, numbers: Sequence[int], min_bytes: int) -> None:
        """`numbers` large uploads of one valid plain text, each sealed on its own, every
        other one uncompressed (so that its whole size travels over SFTP)."""
        if not numbers:
            return
        sample = next(s for s in self.samples if s.name == BIG_SAMPLE)
        plain = large_plain(sample, min_bytes)
        outcome = predict(plain, sample.name, sample.uploaded_by, frozenset(self.parties))
        if set(outcome.deliveries) != {"CIE000311"} or outcome.logs:
            raise SoakError(f"the large file is not fully delivered: {outcome.describe()}")
        source = self.folder / "plain" / "large"
        source.write_bytes(plain)
        sections = plain.count(b"\n1111111111") + 1
        sender = self.parties[sample.uploaded_by]
        for i, number in enumerate(numbers):
            how = "seal-z0" if i % 2 else "seal"
            detail = f"{len(plain) / MIB:.1f} MiB plain, {sections} sections, {how}"
            self._add(number, "large", source, how, sender, sender.edi_id, sample.prefix,
                      outcome, detail)  # fmt: skip

    def seal_all(self, threads: int = 2) -> list[Content]:
        with ThreadPoolExecutor(threads) as pool:
            sizes = list(pool.map(lambda job: job[0].run(), self.jobs))
        return [replace(c, size=size) for (_, c), size in zip(self.jobs, sizes, strict=True)]


def make_party(edi_id: str, home: Path) -> Party:
    pgp = OpenPGP(home)
    return Party(edi_id, pgp, pgp.generate_key(f"{edi_id} <{edi_id.lower()}@example.test>"))


def participant_ids() -> list[str]:
    with (SAMPLES / "referentiel.toml").open("rb") as f:
        ref = tomllib.load(f)
    return [p["edi_id"] for p in ref["participants"].values() if p["edi_id"]]


# --- reading answers --------------------------------------------------------------------

LOG_LINE = re.compile(r" section (?P<section>\d+) line (?P<line>\d+) (?P<code>[A-Z_0-9]+) ")


def log_codes(text: str) -> frozenset[str]:
    return frozenset(m["code"] for m in LOG_LINE.finditer(text))


def without_suffix(name: str) -> str | None:
    """The name without a `_<k>` (k >= 2) inserted before its extension, if it has one."""
    found = re.fullmatch(r"(?P<base>.+)_(?P<k>[0-9]+)(?P<ext>\.edi|\.log)", name)
    if found is None or int(found["k"]) < 2:
        return None
    return found["base"] + found["ext"]
