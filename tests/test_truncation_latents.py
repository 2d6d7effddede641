"""`--truncation PSI` and `--latents FILE.npz` on sample / traverse / interpolate, and
`sample --save-latents`: the round trip is exact, and a hostile latents file is one error line."""

import pickle
import zipfile

import numpy as np
import pytest
import torch

from gancli.latent import LatentSpec, truncate

from conftest import invoke


def one_line_error(r, *words: str) -> str:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def ok(r):
    assert r.exit_code == 0, r.output
    return r


def test_truncate_moves_only_z():
    spec = LatentSpec(8)
    lat = {"z": torch.randn(5, 8, generator=torch.Generator().manual_seed(1)),
           "c1": torch.tensor([0, 1, 2, 3, 4]), "c2": torch.rand(5)}
    assert truncate(lat, 1.0) is lat                        # psi 1: the very same tensors
    half = truncate(lat, 0.5)
    assert torch.equal(half["z"], lat["z"] * 0.5)
    assert torch.equal(half["c1"], lat["c1"]) and torch.equal(half["c2"], lat["c2"])
    assert (half["z"].norm(dim=1) < lat["z"].norm(dim=1)).all()
    assert spec.noise_dim == 8


def test_psi_one_is_plain_sample_bit_for_bit(tiny_run, tmp_path):
    ok(invoke("sample", tiny_run, "--n", 9, "--seed", 4, "--out", tmp_path / "plain.png"))
    ok(invoke("sample", tiny_run, "--n", 9, "--seed", 4, "--truncation", 1,
              "--out", tmp_path / "one.png"))
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "one.png").read_bytes()


def test_small_psi_shrinks_z_and_keeps_codes(tiny_run, tmp_path):
    ok(invoke("sample", tiny_run, "--n", 16, "--seed", 2, "--out", tmp_path / "a.npz"))
    ok(invoke("sample", tiny_run, "--n", 16, "--seed", 2, "--truncation", 0.25,
              "--out", tmp_path / "b.npz"))
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.allclose(b["z"], 0.25 * a["z"])
    assert (np.linalg.norm(b["z"], axis=1) < np.linalg.norm(a["z"], axis=1)).all()
    for k in ("c1", "c2", "c3"):
        assert np.array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], b["images"])


@pytest.mark.parametrize("psi", ["0", "-0.5", "2.5", "nan", "inf"])
def test_bad_psi_is_one_line(tiny_run, tmp_path, psi):
    one_line_error(invoke("sample", tiny_run, "--truncation", psi, "--out", tmp_path / "x.png"),
                   "--truncation")
    assert not (tmp_path / "x.png").exists()


def test_round_trip_gives_the_same_png(tiny_run, tmp_path):
    lat = tmp_path / "lat.npz"
    ok(invoke("sample", tiny_run, "--n", 6, "--seed", 11, "--truncation", 0.7, "--code", "c1=3",
              "--save-latents", lat, "--out", tmp_path / "a.png"))
    with np.load(lat, allow_pickle=False) as f:
        assert sorted(f.files) == ["c1", "c2", "c3", "z"] and f["z"].shape == (6, 8)
        assert (f["c1"] == 3).all()
    ok(invoke("sample", tiny_run, "--latents", lat, "--out", tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    # sample's own .npz (images beside the latents) is read back too
    ok(invoke("sample", tiny_run, "--n", 4, "--seed", 5, "--out", tmp_path / "c.npz"))
    ok(invoke("sample", tiny_run, "--latents", tmp_path / "c.npz", "--out", tmp_path / "d.npz"))
    assert np.array_equal(np.load(tmp_path / "c.npz")["images"],
                          np.load(tmp_path / "d.npz")["images"])
    # --latents fixes the count: --n beside it is refused
    one_line_error(invoke("sample", tiny_run, "--latents", lat, "--n", 3), "--n")


def test_traverse_and_interpolate_take_latents(tiny_run, tmp_path):
    lat = tmp_path / "rows.npz"
    ok(invoke("sample", tiny_run, "--n", 3, "--seed", 0, "--save-latents", lat,
              "--out", tmp_path / "s.png"))
    ok(invoke("traverse", tiny_run, "--code", "c2", "--rows", 3, "--seed", 0,
              "--out", tmp_path / "t1.png"))
    ok(invoke("traverse", tiny_run, "--code", "c2", "--latents", lat, "--out", tmp_path / "t2.png"))
    assert (tmp_path / "t1.png").read_bytes() == (tmp_path / "t2.png").read_bytes()
    ok(invoke("traverse", tiny_run, "--code", "c2", "--rows", 3, "--truncation", 0.5,
              "--out", tmp_path / "t3.png"))
    assert (tmp_path / "t3.png").read_bytes() != (tmp_path / "t1.png").read_bytes()

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    ok(invoke("sample", tiny_run, "--n", 1, "--seed", 3, "--save-latents", a, "--out", tmp_path / "a.png"))
    ok(invoke("sample", tiny_run, "--n", 1, "--seed", 7, "--save-latents", b, "--out", tmp_path / "b.png"))
    ok(invoke("interpolate", tiny_run, "--seeds", "3,7", "--steps", 5, "--out", tmp_path / "i1.npz"))
    ok(invoke("interpolate", tiny_run, "--latents", a, "--latents", b, "--steps", 5,
              "--out", tmp_path / "i2.npz"))
    assert np.array_equal(np.load(tmp_path / "i1.npz")["images"],
                          np.load(tmp_path / "i2.npz")["images"])
    ok(invoke("interpolate", tiny_run, "--seeds", "3,7", "--steps", 5, "--truncation", 0.5,
              "--out", tmp_path / "i3.npz"))
    i3 = np.load(tmp_path / "i3.npz")
    assert np.allclose(i3["z"][0], 0.5 * np.load(a)["z"][0])
    one_line_error(invoke("interpolate", tiny_run, "--latents", a, "--steps", 5), "two files")


def _npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _good(n=2):
    g = np.random.default_rng(0)
    return {"z": g.standard_normal((n, 8)).astype(np.float32),
            "c1": np.arange(n, dtype=np.int64), "c2": np.zeros(n, np.float32),
            "c3": np.zeros(n, np.float32)}


def _hostile(tmp_path, kind):
    p = tmp_path / f"{kind}.npz"
    a = _good()
    if kind == "pickled":          # an object array: np.load(allow_pickle=False) must refuse it
        a["z"] = np.array([{"x": 1}, [2]], dtype=object)
        return _npz(p, **a), "dtype object"
    if kind == "raw_pickle":       # a member that is a pickle, not a .npy
        with zipfile.ZipFile(p, "w") as zf:
            for k, v in a.items():
                zf.writestr(f"{k}.npy", pickle.dumps(v) if k == "z" else b"")
        return p, "not a NumPy array"
    if kind == "wrong_shape":
        a["z"] = np.zeros((2, 5), np.float32)
        return _npz(p, **a), "[N, 8]"
    if kind == "nan":
        a["c2"] = np.array([0.0, np.nan], np.float32)
        return _npz(p, **a), "finite"
    if kind == "huge_value":
        a["z"][0, 0] = 1e30
        return _npz(p, **a), "finite"
    if kind == "out_of_range":
        a["c1"] = np.array([0, 10])
        return _npz(p, **a), "0..9"
    if kind == "missing":
        del a["c3"]
        return _npz(p, **a), "no array c3"
    if kind == "unknown":
        a["evil"] = np.zeros(2)
        return _npz(p, **a), "unknown array"
    if kind == "rows_differ":
        a["c2"] = np.zeros(3, np.float32)
        return _npz(p, **a), "rows"
    if kind == "int_noise":
        a["z"] = np.zeros((2, 8), np.int32)
        return _npz(p, **a), "float [N, 8]"
    if kind == "many_rows":        # a header promising 2 million rows and holding a few bytes
        with zipfile.ZipFile(p, "w") as zf:
            for k, v in a.items():
                if k == "z":
                    head = {"descr": "<f4", "fortran_order": False, "shape": (2_000_000, 8)}
                    import io
                    buf = io.BytesIO()
                    np.lib.format.write_array_header_1_0(buf, head)
                    zf.writestr("z.npy", buf.getvalue() + b"\0" * 64)
                else:
                    buf = io.BytesIO()
                    np.save(buf, v)
                    zf.writestr(f"{k}.npy", buf.getvalue())
        return p, "rows"
    if kind == "not_zip":
        p.write_bytes(b"\x80\x04K\x01." * 10)       # a pickle stream named .npz
        return p, "not a .npz"
    if kind == "npy":
        np.save(p.with_suffix(".npy"), a["z"])
        p.write_bytes(p.with_suffix(".npy").read_bytes())
        return p, "not a .npz"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["pickled", "raw_pickle", "wrong_shape", "nan", "huge_value",
                                  "out_of_range", "missing", "unknown", "rows_differ",
                                  "int_noise", "many_rows", "not_zip", "npy"])
def test_hostile_latents_are_one_line(tiny_run, tmp_path, kind):
    path, words = _hostile(tmp_path, kind)
    out = tmp_path / "out.png"
    one_line_error(invoke("sample", tiny_run, "--latents", path, "--out", out), "--latents", words)
    assert not out.exists()


def test_oversized_latents_are_refused_before_reading(tiny_run, tmp_path, monkeypatch):
    import gancli.generate as gen

    path = _npz(tmp_path / "big.npz", **_good(64))
    monkeypatch.setattr(gen, "MAX_ARRAY_BYTES", 1024)      # the unpacked size, from the zip
    one_line_error(invoke("sample", tiny_run, "--latents", path), "GiB")
    monkeypatch.setattr(gen, "MAX_LATENT_FILE", 100)       # the file's own size
    one_line_error(invoke("sample", tiny_run, "--latents", path), "bytes")
