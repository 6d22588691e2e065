"""Large configs (issue 16): one bad server among 10,000 is reported alone, with its path; the
loader remembers its last parse compactly and still sees every change. Costs are measured by
tests/bench/config_bench.py, never asserted here."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from lvsd.config import ConfigError, parse_config
from lvsd.config import load as load_mod

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from config_bench import big_config, one_bad_server  # noqa: E402


def test_one_bad_server_among_10000_is_the_only_error_reported() -> None:
    text = big_config(1000, 10)
    bad, path = one_bad_server(text)
    assert bad != text
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    assert e.value.errors == [f"{path}: must be 0..2147483647, got -7"]
    assert len(parse_config(text).services) == 1000  # the same file without the mistake loads


def test_a_bad_server_after_an_unchanged_parse_is_still_seen() -> None:
    text = big_config(50, 10)
    parse_config(text)
    bad, path = one_bad_server(text)
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    assert e.value.errors == [f"{path}: must be 0..2147483647, got -7"]
    parse_config(text)  # the remembered parse is the bad text's now, and the good text loads again
    with pytest.raises(ConfigError):
        parse_config(bad)


def test_the_remembered_parse_is_compact_and_gives_the_same_config() -> None:
    text = big_config(200, 10)
    load_mod.clear_parse_cache()
    first = parse_config(text)
    digest, doc = load_mod._last_parse or (b"", b"")
    assert isinstance(doc, bytes) and len(doc) < len(text) and len(digest) < 100  # no text, no tree kept
    assert parse_config(text) == first


def test_loading_leaves_the_collector_as_it_found_it() -> None:
    text = big_config(5, 10)
    assert gc.isenabled()
    parse_config(text + "# 1\n")
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        parse_config(one_bad_server(text)[0])
    assert gc.isenabled()
    gc.disable()
    try:
        parse_config(text + "# 2\n")
        assert not gc.isenabled()  # a caller that paused it keeps it paused
    finally:
        gc.enable()
