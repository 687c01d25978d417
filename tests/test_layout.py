"""The packaged layout is the specification's, and the codes are defined once, there."""

from __future__ import annotations

from support import SPEC

from bdi.routing.errors import Code
from bdi.routing.layout import default_layout, layout_bytes


def test_packaged_layout_is_the_spec_copy() -> None:
    spec = SPEC / "layout.toml"
    assert spec.exists(), "the specification's layout.toml is missing"
    assert layout_bytes() == spec.read_bytes()


def test_every_check_code_has_its_message_and_order() -> None:
    layout = default_layout()
    assert list(layout.check_order) == [c for c in Code if c is not Code.INTERNE]
    assert Code.INTERNE not in layout.check_order  # the hub's failure, not a check
    assert set(layout.errors) == set(Code)
    assert all(layout.message(code) for code in Code)


def test_record_specs_cover_640_characters() -> None:
    layout = default_layout()
    for spec in layout.records.values():
        assert spec.fields[0].start == 0
        assert spec.fields[-1].end == layout.record_length
