"""`gancli encode`: InfoGAN's Q read as an encoder, as JSON or CSV; other families refused."""

import csv
import io
import json
import shutil

import numpy as np
import pytest

from conftest import invoke
from test_families import trained
from test_truncation_latents import ok, one_line_error


@pytest.fixture(scope="module")
def pictures(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("enc") / "png"
    ok(invoke("sample", tiny_run, "--n", 3, "--seed", 1, "--out", d))
    return d


def test_json_probabilities_and_means(tiny_run, pictures):
    r = ok(invoke("encode", pictures, tiny_run))
    got = json.loads(r.stdout)
    assert got["codes"]["c1"] == {"kind": "categorical", "size": 10}
    assert got["codes"]["c2"]["kind"] == "continuous"
    rows = got["images"]
    assert [row["image"].rsplit("/", 1)[-1] for row in rows] == ["000000.png", "000001.png",
                                                                  "000002.png"]
    for row in rows:
        p = np.array(row["c1_probs"])
        assert p.shape == (10,) and (p >= 0).all() and abs(p.sum() - 1) < 1e-4
        assert row["c1"] == int(p.argmax())
        assert isinstance(row["c2"], float) and isinstance(row["c3"], float)
    # one image alone reads the same as in a folder (eval mode: no batch statistics)
    one = json.loads(ok(invoke("encode", pictures / "000001.png", tiny_run)).stdout)["images"][0]
    assert np.allclose(one["c1_probs"], rows[1]["c1_probs"], atol=1e-5)


def test_csv_to_a_file(tiny_run, pictures, tmp_path):
    out = tmp_path / "codes.csv"
    ok(invoke("encode", pictures, tiny_run, "--format", "csv", "--out", out))
    table = list(csv.reader(io.StringIO(out.read_text())))
    assert table[0] == ["image", "c1"] + [f"c1_p{k}" for k in range(10)] + ["c2", "c3"]
    assert len(table) == 4 and all(len(row) == 14 for row in table)
    assert abs(sum(float(v) for v in table[1][2:12]) - 1) < 1e-4
    one_line_error(invoke("encode", pictures, tiny_run, "--out", out), "--overwrite")


def test_bad_inputs_are_one_line(tiny_run, pictures, tmp_path, tmp_path_factory):
    one_line_error(invoke("encode", pictures, trained("gan", tmp_path_factory)), "InfoGAN")
    one_line_error(invoke("encode", pictures, tiny_run, "--format", "xml"), "--format")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("encode", empty, tiny_run), "no image files")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG broken")
    one_line_error(invoke("encode", junk, tiny_run), "junk.png")
    # a generator file copied away from its run has no discriminator, hence no Q
    alone = tmp_path / "alone" / "generator.safetensors"
    alone.parent.mkdir()
    shutil.copy(next(tiny_run.glob("checkpoints/step-*/generator.safetensors")), alone)
    one_line_error(invoke("encode", pictures, alone), "discriminator")


def test_encode_mnist_benchmark(tiny_run, mnist_raw):
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "benchmarks"))
    from encode_mnist import measure

    r = measure(str(tiny_run), mnist_raw)
    assert r["n"] == 10_000 and r["code"] == "c1"
    assert 0 <= r["hungarian_accuracy"] <= r["purity"] <= 1
    assert sum(r["values_used"]) == 10_000 and abs(r["error"] + r["hungarian_accuracy"] - 1) < 1e-3
