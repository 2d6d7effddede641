"""Nothing gancli loads is unpickled, and no output name can leave the chosen directory."""

import ast

import pytest

from gancli.errors import GancliError
from gancli.files import OutputError, safe_name

from conftest import REPO

PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _name(node: ast.AST) -> str:
    """'torch.load' for torch.load, 'np.load' for np.load, ... ('' when not a plain name)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unpickling_uses(source: str) -> list[str]:
    """Code (not comments or strings) that could unpickle: an import of a pickling module, a call
    into one, torch.load without weights_only=True, anything with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLERS]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in PICKLERS:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: import {a.name} from {node.module}"
                      for a in node.names if a.name in PICKLERS | {"load", "loads"}
                      and (node.module or "").split(".")[0] in {"torch", "numpy"} | PICKLERS]
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if name.split(".")[0] in PICKLERS:
                found.append(f"line {node.lineno}: {name}(...)")
            if name.endswith("torch.load") or name == "load" and "weights_only" in kw:
                if not _is_true(kw.get("weights_only")):
                    found.append(f"line {node.lineno}: {name}(...) without weights_only=True")
            if _is_true(kw.get("allow_pickle")):
                found.append(f"line {node.lineno}: {name}(..., allow_pickle=True)")
            if name.endswith(("Unpickler", "hub.load", "load_state_dict_from_url")):
                found.append(f"line {node.lineno}: {name}(...)")
    return found


def test_the_scanner_finds_what_it_should():
    bad = """
import pickle
import dill as d
from cloudpickle import loads
import torch, numpy as np
x = torch.load("f.pt")
y = torch.load("f.pt", weights_only=False)
z = np.load("f.npy", allow_pickle=True)
w = pickle.loads(b"")
"""
    lines = {int(u.split(":")[0].split()[1]) for u in unpickling_uses(bad)}
    assert lines == {2, 3, 4, 6, 7, 8, 9}
    good = """
# CIFAR's python version is a pickle; gancli reads no pickle.
import torch, numpy as np
msg = "holds CIFAR-10's python (pickle) version, which gancli does not read"
x = torch.load("f.pt", weights_only=True)
z = np.load("f.npz")
"""
    assert unpickling_uses(good) == []


def test_no_module_unpickles():
    files = sorted((REPO / "gancli").rglob("*.py"))
    assert len(files) > 10
    found = {str(f.relative_to(REPO)): uses for f in files
             if (uses := unpickling_uses(f.read_text()))}
    assert found == {}


# ---------------------------------------------------------------------- output names


@pytest.mark.parametrize("name", ["c1-seed0.png", "label-seed3.png", "sample-seed0-n64.png",
                                  "z7-seed1.png", "seed1-seed2-slerp.png"])
def test_plain_names_pass(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("name", ["../c1-seed0.png", "a/b.png", "..", ".", "", "a\\b.png",
                                  "/etc/passwd", "x..y", "nul\0.png", "../../../tmp/evil"])
def test_names_that_could_escape_are_refused(name):
    with pytest.raises(OutputError, match="one plain file name"):
        safe_name(name)


def test_default_outputs_stay_in_the_run(tmp_path):
    from gancli.cli import default_output

    assert default_output(tmp_path, "traversals", "c1-seed0.png") == \
        tmp_path / "traversals" / "c1-seed0.png"
    for evil in ("../../escape-seed0.png", "x/../../y.png"):
        with pytest.raises(GancliError):
            default_output(tmp_path, "traversals", evil)


def test_a_code_name_from_a_checkpoint_cannot_escape(tiny_run, tmp_path, monkeypatch):
    """Code names come from the checkpoint's config: were one to hold a path, traverse refuses
    to build its default output name from it."""
    from dataclasses import replace

    import gancli.cli.pictures as pictures

    from conftest import invoke

    real = pictures.load

    def evil_load(*a, **k):
        g, dev = real(*a, **k)
        codes = tuple(replace(c, name="../../evil") if c.name == "c1" else c for c in g.spec.codes)
        g.spec = replace(g.spec, codes=codes)
        return g, dev
    monkeypatch.setattr(pictures, "load", evil_load)
    r = invoke("traverse", tiny_run, "--code", "../../evil", "--rows", 1)
    assert r.exit_code == 2 and "one plain file name" in r.stderr
    assert not (tiny_run.parent / "evil-seed0.png").exists()
    assert not list(tiny_run.parent.parent.glob("evil*"))
