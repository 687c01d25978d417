"""Field codecs: validate, decode and encode fixed-width fields as the layout describes them.

Validation must be fast (the hub checks every field of every record), so each record spec is
compiled into one regular expression over the whole 640 characters; only a record that fails
it is re-checked field by field to say which fields are wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from functools import cache, lru_cache, partial
from typing import TypeVar, cast

from bdi.routing.layout import FieldSpec, Layout, RecordSpec

Value = str | int | Decimal | date | time | None

_PRINTABLE = r"[\x20-\x7e\xa0-\xff]"
_PRINTABLE_NOT_SPACE = r"[\x21-\x7e\xa0-\xff]"
_NUMERIC_KINDS = frozenset({"numeric", "amount", "rate", "signed_amount"})
_DECIMAL_KINDS = frozenset({"amount", "rate", "signed_amount"})
_STAR_CLASS = re.compile(r"^\^(\[[^\]]*\])\*\$$")
_DATE_RX = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME_RX = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"


def _atom_width(body: str, i: int) -> tuple[int | None, int]:
    """Width of the regex atom starting at body[i] and the index after it."""
    c = body[i]
    if c == "[":
        j = body.index("]", i + 2 if body[i + 1] == "^" else i + 1)
        return 1, j + 1
    if c == "\\":
        return 1, i + 2
    if c == "(":
        depth, j = 0, i
        while True:
            depth += {"(": 1, ")": -1}.get(body[j], 0)
            if depth == 0:
                break
            j += 1
        inner = body[i + 1 : j]
        widths = {_fixed_width(alt) for alt in _split_alternatives(inner)}
        return (widths.pop() if len(widths) == 1 else None), j + 1
    if c in ".*+?{}|^$":
        return (1 if c == "." else None), i + 1
    return 1, i + 1


def _split_alternatives(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(body):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return parts


def _fixed_width(body: str) -> int | None:
    """Width of a regex that always matches the same number of characters, else None."""
    width, i = 0, 0
    while i < len(body):
        w, i = _atom_width(body, i)
        if w is None:
            return None
        quant = re.match(r"\{(\d+)\}", body[i:])
        if quant:
            w *= int(quant.group(1))
            i += quant.end()
        elif i < len(body) and body[i] in "*+?{":
            return None
        width += w
    return width


def _pattern_regex(pattern: str, length: int) -> str | None:
    """A regex matching exactly `length` characters whose stripped value fits `pattern`."""
    star = _STAR_CLASS.match(pattern)
    if star:
        return f"{star.group(1)}{{{length}}}"
    body = pattern.removeprefix("^").removesuffix("$")
    width = _fixed_width(body)
    if width is None or width > length:
        return None
    return f"(?:{body}){' ' * (length - width)}"


def _left_aligned(length: int) -> str:
    return f"{_PRINTABLE_NOT_SPACE}{_PRINTABLE}{{{length - 1}}}"


def _value_regex(spec: FieldSpec) -> str:
    """Regex for a present (non-blank) value of the field, exactly `length` wide."""
    n = spec.length
    if spec.value is not None:
        return re.escape(spec.value)
    if spec.values:
        pad = "0" if spec.kind in _NUMERIC_KINDS else " "
        padded = (v.rjust(n, pad) if pad == "0" else v.ljust(n, pad) for v in spec.values)
        return "(?:" + "|".join(re.escape(v) for v in padded) + ")"
    if spec.kind in ("numeric", "amount", "rate"):
        base = f"[0-9]{{{n}}}"
    elif spec.kind == "signed_amount":  # zero is written '+'
        base = f"(?:\\+[0-9]{{{n - 1}}}|-(?!0{{{n - 1}}})[0-9]{{{n - 1}}})"
    elif spec.kind == "date":
        base = _DATE_RX
    elif spec.kind == "time":
        base = _TIME_RX
    else:
        base = _left_aligned(n)
    if spec.pattern:
        pattern = _pattern_regex(spec.pattern, n)
        if pattern is None:
            raise ValueError(f"layout: pattern of {spec.name} is not fixed-width: {spec.pattern}")
        base = f"(?={pattern}){base}"
    return base


def field_regex(spec: FieldSpec) -> str:
    """Regex matching every valid content of the field (exactly `length` characters)."""
    blank = " " * spec.length
    if spec.name == "filler":
        return blank
    value = _value_regex(spec)
    numeric_present = spec.kind in _NUMERIC_KINDS or spec.kind == "marker"
    if spec.required or numeric_present:
        return value
    return f"(?:{value}|{blank})"


_DATE = re.compile(_DATE_RX)
_TIME = re.compile(_TIME_RX)


@lru_cache(maxsize=65536)
def _parse_date(text: str) -> date | None:
    """The day a date field names; None if it is not YYYY-MM-DD or no such day exists
    (2023-02-29): `date.fromisoformat` alone raises on some texts and accepts others."""
    if _DATE.fullmatch(text) is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _real_date(text: str) -> bool:
    return text.isspace() or _parse_date(text) is not None


@dataclass(frozen=True, slots=True)
class RecordCodec:
    """Validator, decoder and encoder of one record type."""

    spec: RecordSpec
    whole: re.Pattern[str]
    per_field: tuple[tuple[FieldSpec, re.Pattern[str]], ...]
    dates: tuple[FieldSpec, ...]
    amounts: tuple[tuple[int, int], ...]  # digit slices of amount fields (sign excluded)
    decoders: tuple[tuple[str, int, int, Decoder], ...]  # name, slice, `decode_field` of it
    decode_all: Callable[[str], dict[str, Value]]  # the same, as one compiled function
    json_all: Callable[[str], str]  # `json_text`'s, compiled likewise
    checked_total: Callable[[str], int | None]  # `valid` and `amount_total` in one call
    by_name: Mapping[str, tuple[int, int, Decoder]]  # a name's last field, as in the dict

    def valid(self, text: str) -> bool:
        """Whether every field of a 640-character record passes its check."""
        return self.whole.fullmatch(text) is not None and all(
            _real_date(text[f.start : f.end]) for f in self.dates
        )

    def bad_fields(self, text: str) -> list[FieldSpec]:
        """Fields of a 640-character record that break their kind, values, pattern or filler."""
        if self.valid(text):
            return []
        return [
            spec
            for spec, rx in self.per_field
            if rx.fullmatch(text, spec.start, spec.end) is None
            or (spec.kind == "date" and not _real_date(text[spec.start : spec.end]))
        ]

    def amount_total(self, text: str) -> int:
        """Sum of the digits of every amount field, read as integers in minor units."""
        total = 0
        for start, end in self.amounts:
            digits = text[start:end]
            if _ascii_digits(digits):  # '²'.isdigit(), yet int('²') raises
                total += int(digits)
        return total

    def decode(self, text: str) -> dict[str, Value]:
        """Typed values of a record's fields. Total, for any text of any length: a field that
        is not of its kind keeps its text (see `field_decoder`). The checks decode no record
        of a refused section; this is for whatever else reads a file."""
        return self.decode_all(text)

    def lazy(self, text: str) -> LazyRecord:
        """`decode`, each field decoded only when it is read (`LazyRecord`)."""
        return LazyRecord(self, text)

    def json_text(self, text: str) -> str:
        """`json.dumps` of the decoded record without its filler, the Suivi's form of it
        (Decimal, date and time as their text), written straight from the record's text:
        a big file's flows are stored this way, and the dict, then its plain copy, then the
        encoder's walk over it cost ten times this."""
        return self.json_all(text)

    def encode(self, values: Mapping[str, Value]) -> str:
        return "".join(encode_field(spec, values.get(spec.name)) for spec in self.spec.fields)


def compile_record(spec: RecordSpec) -> RecordCodec:
    per_field = tuple((f, re.compile(field_regex(f))) for f in spec.fields)
    whole = re.compile("".join(f"(?:{field_regex(f)})" for f in spec.fields))
    amounts = tuple(
        (f.start + (1 if f.kind == "signed_amount" else 0), f.end)
        for f in spec.fields
        if f.kind in ("amount", "signed_amount")
    )
    dates = tuple(f for f in spec.fields if f.kind == "date")
    decoders = tuple((f.name, f.start, f.end, field_decoder(f)) for f in spec.fields)
    by_name = {name: (start, end, decoder) for name, start, end, decoder in decoders}
    return RecordCodec(spec, whole, per_field, dates, amounts, decoders, _decode_all(decoders),
                       _json_all(decoders), _checked_total(whole, dates, amounts),
                       by_name)  # fmt: skip


def _checked_total(
    whole: re.Pattern[str], dates: tuple[FieldSpec, ...], amounts: tuple[tuple[int, int], ...]
) -> Callable[[str], int | None]:
    """One function for a record's checks when it passes them: its `amount_total` if it is
    `valid`, else None (the caller then looks for what is wrong the long way). A big file's
    every record is checked (420 000 in 256 MiB), and the calls and loops of `valid` and
    `amount_total` cost more than their regex. Its amount fields are digits when it is valid."""
    body = ["def checked(t):", "    if w(t) is None:", "        return None"]
    for f in dates:
        body += [f"    if not rd(t[{f.start}:{f.end}]):", "        return None"]
    if amounts:
        body += [
            "    d = " + " + ".join(f"t[{a}:{b}]" for a, b in amounts),
            "    if not (d.isascii() and d.isdigit()):",
            "        return None",
            "    return " + " + ".join(f"int(t[{a}:{b}])" for a, b in amounts),
        ]
    else:
        body.append("    return 0")
    names: dict[str, object] = {"w": whole.fullmatch, "rd": _real_date}
    exec(compile("\n".join(body) + "\n", "<record check>", "exec"), names)  # our own source
    return cast(Callable[[str], int | None], names["checked"])


class LazyRecord(Mapping[str, Value]):
    """A record's typed values (`RecordCodec.decode`), each field decoded when it is read:
    a flow's head gives its key and the Suivi's search columns, four or five fields of ~50
    (its JSON is written from the text: `json_text`), and decoding all of them was 6 µs of
    each flow's ~40 (84 000 flows in a 256 MiB file). Whole once iterated or compared."""

    __slots__ = ("_all", "_codec", "_text")

    def __init__(self, codec: RecordCodec, text: str) -> None:
        self._codec, self._text = codec, text
        self._all: dict[str, Value] | None = None

    def __getitem__(self, name: str) -> Value:
        if self._all is not None:
            return self._all[name]
        start, end, decoder = self._codec.by_name[name]  # KeyError as a dict's
        return decoder(self._text[start:end])

    def _whole(self) -> dict[str, Value]:
        if self._all is None:
            self._all = self._codec.decode_all(self._text)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def __repr__(self) -> str:
        return repr(self._whole())


def _decode_all(
    decoders: tuple[tuple[str, int, int, Decoder], ...],
) -> Callable[[str], dict[str, Value]]:
    """One function building a record's whole dict in one expression: a big file's flows
    decode every record of theirs (a 256 MiB file: 420 000), and the loop over the fields,
    unpacking each and calling its decoder, cost more than the decoding. A text field's
    decoder is written inline (`_text` is a right strip); the others are called."""
    names: dict[str, object] = {}
    items = []
    for i, (name, start, end, decoder) in enumerate(decoders):
        if decoder is _text:
            value = f"t[{start}:{end}].rstrip(' ')"
        else:
            names[f"d{i}"] = decoder
            value = f"d{i}(t[{start}:{end}])"
        items.append(f"{name!r}: {value}")
    source = "def decode(t):\n    return {" + ", ".join(items) + "}\n"
    exec(compile(source, "<record decoder>", "exec"), names)  # our own source, from the layout
    return cast(Callable[[str], dict[str, Value]], names["decode"])


_quoted = cast(Callable[[str], str], getattr(json.encoder, "encode_basestring_ascii"))  # noqa: B009


def json_value(value: Value) -> str:
    """The JSON text `json.dumps` writes for a decoded value in the Suivi's form (Decimal,
    date and time given as their text)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, int):
        return int.__repr__(value)
    return _quoted(str(value))


def _json_of(decoder: Decoder, raw: str) -> str:
    return json_value(decoder(raw))


def _json_all(decoders: tuple[tuple[str, int, int, Decoder], ...]) -> Callable[[str], str]:
    """One function writing `json.dumps` of a record's dict without its filler, in one
    expression (as `_decode_all`): a text field is right-stripped and quoted inline, the other
    fields' JSON texts are remembered per field as their values are. Keys are in the order
    of the dict's, each with the value of its last field of that name (as a dict literal)."""
    names: dict[str, object] = {"q": _quoted}
    values: dict[str, str] = {}
    for i, (name, start, end, decoder) in enumerate(decoders):
        if name == "filler":
            continue
        if decoder is _text:
            values[name] = f"q(t[{start}:{end}].rstrip(' '))"
        else:  # a text met before: its JSON from the table inline, no call (JSON is never "")
            names[f"j{i}"], names[f"m{i}"] = _memo(partial(_json_of, decoder))
            values[name] = f"(m{i}.get(t[{start}:{end}]) or j{i}(t[{start}:{end}]))"
    if not values:
        return lambda _text: "{}"
    parts: list[str] = []
    for n, (name, value) in enumerate(values.items()):
        parts += [repr(("{" if n == 0 else ", ") + json.dumps(name) + ": "), value]
    parts.append(repr("}"))
    source = "def as_json(t):\n    return ''.join((" + ", ".join(parts) + "))\n"
    exec(compile(source, "<record json>", "exec"), names)  # our own source, from the layout
    return cast(Callable[[str], str], names["as_json"])


Decoder = Callable[[str], Value]


def field_decoder(spec: FieldSpec) -> Decoder:
    """`decode_field` for one field, its kind resolved once: every record of every flow is
    decoded whole (~120 fields per small file), and the generic function's tests and
    attribute reads were most of the checks' time.

    A typed value is given only for the very text `encode_field` writes for it; any other
    text (month 13, '+12' in an unsigned field, '1_000', '²', blanks in a number) is kept as
    it is: the decoders never raise, and never make a value up."""
    kind = spec.kind
    if kind == "numeric":
        return _integer
    if kind in _DECIMAL_KINDS:
        return _remembered(partial(_decimal, -spec.decimals, kind == "signed_amount"))
    if kind == "date":
        return _date
    if kind == "time":
        return _time
    return _text


T = TypeVar("T")
_REMEMBERED = 4096  # texts of one field whose decoded values are kept (then all forgotten)


def _remembered(decoder: Decoder) -> Decoder:
    """The decoder, its answers kept for texts met again: a file's amounts and rates repeat
    (zeros above all), and building a Decimal costs ten times a dictionary lookup. Values
    are immutable, so one may be shared; the table is emptied when full."""
    return _memo(decoder)[0]


def _memo(decoder: Callable[[str], T]) -> tuple[Callable[[str], T], dict[str, T]]:
    """`_remembered`, with its table: a compiled function may look a text up there itself
    (the JSON of a big file's every amount and rate: a call less per field)."""
    seen: dict[str, T] = {}

    def decode(raw: str) -> T:
        value = seen.get(raw, seen)
        if value is seen:
            if len(seen) >= _REMEMBERED:
                seen.clear()
            value = seen[raw] = decoder(raw)
        return value  # type: ignore[return-value]

    return decode, seen


def undecoded(raw: str) -> str | None:
    """What a field that is not of its kind decodes to: its own text, never a made-up value
    (a blank number is not 0), None if blank."""
    return raw.rstrip(" ") or None


def _ascii_digits(raw: str) -> bool:
    return raw.isascii() and raw.isdigit()


def _integer(raw: str) -> Value:
    return int(raw) if _ascii_digits(raw) else undecoded(raw)


def _decimal(exponent: int, signed: bool, raw: str) -> Value:
    """An amount or rate in its unit: digits, after a '+' or '-' for a signed amount (whose
    zero is written '+')."""
    if not signed:
        return Decimal(int(raw)).scaleb(exponent) if _ascii_digits(raw) else undecoded(raw)
    sign, digits = raw[:1], raw[1:]
    if not _ascii_digits(digits) or sign not in ("+", "-") or sign + digits.strip("0") == "-":
        return undecoded(raw)
    return Decimal(int(raw)).scaleb(exponent)


def _date(raw: str) -> Value:
    day = _parse_date(raw)
    return day if day is not None else undecoded(raw)


def _time(raw: str) -> Value:
    return time.fromisoformat(raw) if _TIME.fullmatch(raw) else undecoded(raw)


def _text(raw: str) -> Value:
    return raw.rstrip(" ")


def decode_field(spec: FieldSpec, raw: str) -> Value:
    """Typed value of a field: text is right-stripped; a field that is not of its kind
    (a blank date or number included) keeps its text, or None if blank. Never raises."""
    return field_decoder(spec)(raw)


def _digits(spec: FieldSpec, value: Decimal | int, width: int) -> str:
    scaled = Decimal(value).scaleb(spec.decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{spec.name}: {value} has more than {spec.decimals} decimals")
    text = str(abs(int(scaled))).rjust(width, "0")
    if len(text) > width:
        raise ValueError(f"{spec.name}: {value} does not fit in {width} digits")
    return text


def encode_field(spec: FieldSpec, value: Value) -> str:
    """Fixed-width text of a typed value (None = absent: blanks, or zeros for numbers)."""
    n, kind = spec.length, spec.kind
    if kind == "marker":
        return spec.value or ""
    if kind in _NUMERIC_KINDS:
        number = value if isinstance(value, int | Decimal) else 0
        if kind == "signed_amount":
            return ("-" if number < 0 else "+") + _digits(spec, number, n - 1)
        return _digits(spec, number, n)
    if kind in ("date", "time"):
        return value.isoformat() if isinstance(value, date | time) else " " * n
    text = "" if value is None else str(value)
    if len(text) > n:
        raise ValueError(f"{spec.name}: {text!r} is longer than {n}")
    return text.ljust(n)


class _Codecs(Mapping[str, RecordCodec]):
    """Record codecs compiled on first use: a file meets a few of the 18 record types, and
    compiling all ~400 expressions up front is most of `bdi check`'s start-up."""

    def __init__(self, layout: Layout) -> None:
        self._specs = layout.records
        self._compiled: dict[str, RecordCodec] = {}

    def __getitem__(self, name: str) -> RecordCodec:
        codec = self._compiled.get(name)
        if codec is None:
            codec = self._compiled[name] = compile_record(self._specs[name])
        return codec

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


@cache
def codecs_for(layout: Layout) -> Mapping[str, RecordCodec]:
    """The codecs of every record type of a layout, each compiled once, when first needed."""
    return _Codecs(layout)
