"""Property run over the readers of untrusted files: any input gives a valid result or one
GancliError, never another exception. GANCLI_FUZZ=N raises the examples per reader (a long run
by hand); the suite runs a bounded number."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gancli.checkpoint import read_json_file, read_metadata
from gancli.errors import GancliError
from gancli.recipes import Config, read_recipe
from gancli.report.run import read_metrics

N = int(os.environ.get("GANCLI_FUZZ", "200"))
FUZZ = settings(max_examples=N, deadline=None, derandomize=N <= 200,
                suppress_health_check=list(HealthCheck))

scalars = (st.none() | st.booleans() | st.integers() | st.integers(4000, 6000).map(lambda n: 10 ** n)
           | st.floats() | st.text(max_size=40)
           | st.sampled_from(["gan", "infogan", "digits", "bce", "auto", "1e999", "NaN"]))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=12), kids, max_size=6),
                           max_leaves=30)


def _good_config() -> dict:
    from gancli.recipes import resolve
    return resolve("infogan", "digits", {"steps": 10}).to_dict()


GOOD = None


def _mutated() -> st.SearchStrategy[dict]:
    """A real config with one field, at any depth, replaced by anything."""
    def mutate(draw_path, value):
        global GOOD
        GOOD = GOOD or _good_config()
        d = json.loads(json.dumps(GOOD))
        node = d
        keys = list(node)
        key = keys[draw_path % len(keys)]
        if isinstance(node[key], dict) and node[key] and draw_path % 3:
            node = node[key]
            key = list(node)[draw_path // 7 % len(node)]
        node[key] = value
        return d
    return st.builds(mutate, st.integers(0, 10 ** 6), json_values)


def _dump(v) -> str:
    try:
        return json.dumps(v, allow_nan=True)
    except (ValueError, RecursionError):
        return "{}"


def _ok(fn, *a):
    try:
        fn(*a)
    except GancliError as e:
        assert "\n" not in str(e).strip(), str(e)


@FUZZ
@given(st.one_of(json_values, _mutated()))
def test_config_from_dict(d):
    _ok(Config.from_dict, d)
    if _dump(d) != "{}":
        _ok(Config.from_json, _dump(d))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300) | json_values.map(_dump))
def test_config_from_json_text(raw):
    _ok(Config.from_json, raw if isinstance(raw, str) else raw.decode("latin-1"))


@FUZZ
@given(st.binary(max_size=400) | json_values.map(lambda v: _dump(v).encode())
       | _mutated().map(lambda c: _dump({"gancli_version": "0.1", "config": c}).encode()))
def test_state_and_config_json(tmp_path_factory, raw):
    from gancli.checkpoint import read_run_config
    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_bytes(raw)
    _ok(read_json_file, run / "config.json", "state")
    _ok(read_run_config, run)


def _safetensors(header: bytes, body: bytes, claimed: int | None) -> bytes:
    return struct.pack("<Q", len(header) if claimed is None else claimed) + header + body


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda meta, body, claimed: _safetensors(
        json.dumps({"__metadata__": meta}).encode(), body, claimed),
        st.dictionaries(st.text(max_size=10), st.text(max_size=30) | st.integers(), max_size=5),
        st.binary(max_size=50), st.none() | st.integers(0, 2 ** 64 - 1)),
    st.builds(lambda h: _safetensors(_dump(h).encode(), b"", None), json_values)))
def test_safetensors_metadata(tmp_path_factory, raw):
    f = tmp_path_factory.mktemp("st") / "generator.safetensors"
    f.write_bytes(raw)
    _ok(read_metadata, f)


@FUZZ
@given(st.lists(st.binary(max_size=60) | json_values.map(lambda v: _dump(v).encode())
                | st.builds(lambda k, v: _dump({"step": v, "kind": "train", k: v}).encode(),
                            st.text(max_size=8), scalars), max_size=8))
def test_metrics_jsonl(tmp_path_factory, lines):
    f = tmp_path_factory.mktemp("m") / "metrics.jsonl"
    f.write_bytes(b"\n".join(lines))
    _ok(read_metrics, f)


toml_text = st.text(st.sampled_from(list("[]{}=\"'#.,\n abc0123456789-+_eE")), max_size=300)


@FUZZ
@given(toml_text | st.builds(lambda n, ch: ch * n, st.integers(0, 3000), st.sampled_from("[{")))
def test_recipe_reader(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("r") / "r.toml"
    f.write_text("[data]\n" + text, encoding="utf-8")
    _ok(read_recipe, str(f))
