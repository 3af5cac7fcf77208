"""The one validation module: every check names the key, the value and what is allowed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cmr_fusion_ros.core import validate as v
from cmr_fusion_ros.core.errors import ConfigError


@pytest.mark.parametrize("call, key, pattern", [
    (lambda: v.read_int({"n": 0}, "memory.index", "n", 5, 1, 10), "memory.index.n", r"got 0; allowed: an integer in \[1, 10\]"),
    (lambda: v.read_int({"n": True}, "p", "n", 5, 1), "p.n", "an integer >= 1"),
    (lambda: v.read_float({"x": float("nan")}, "p", "x", 1.0, 0.0), "p.x", "a number >= 0.0"),
    (lambda: v.read_bool({"b": "yes"}, "p", "b", False), "p.b", "true or false"),
    (lambda: v.read_choice({"c": "d"}, "p", "c", "a", ("a", "b")), "p.c", "a | b"),
    (lambda: v.read_str({"s": 3}, "p", "s", ""), "p.s", "a string"),
    (lambda: v.section(5, "p"), "p", "a mapping"),
    (lambda: v.no_unknown({"typo": 1}, "p", ("a",)), "p.typo", r"a known key \(a\)"),
    (lambda: v.positive_int("camera.width", 0), "camera.width", r"an integer in 1..4096"),
    (lambda: v.positive_float("radar.scan_spacing_s", float("inf")), "radar.scan_spacing_s", "a finite number > 0"),
    (lambda: v.finite("camera.mean", "x"), "camera.mean", "a finite number"),
    (lambda: v.positive("camera", SimpleNamespace(rate_hz=-1), "rate_hz"), "camera.rate_hz", "a number > 0"),
    (lambda: v.non_negative("camera", SimpleNamespace(noise_std=True), "noise_std"), "camera.noise_std", ">= 0"),
])
def test_checks_name_the_key_and_what_is_allowed(call, key, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        call()
    assert info.value.key == key


def test_good_values_pass_through():
    d = {"n": 3, "x": 2, "b": True, "c": "b", "s": None}
    assert v.read_int(d, "p", "n", 1, 1, 5) == 3 and v.read_float(d, "p", "x", 0.0, 0.0) == 2.0
    assert v.read_bool(d, "p", "b", False) is True and v.read_choice(d, "p", "c", "a", ("a", "b")) == "b"
    assert v.read_str(d, "p", "s", "default") == "" and v.read_int({}, "p", "n", 4, 1) == 4
    assert v.section(None, "p") == {}
    v.positive("p", SimpleNamespace(a=1, b=0.5), "a", "b")
    v.non_negative("p", SimpleNamespace(a=0), "a")
    v.require(True, "p", 1, "anything")
