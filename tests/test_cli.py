import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke


def test_sample_grid_files_and_npz(tiny_run, tmp_path):
    r = invoke("sample", tiny_run, "--n", 12, "--out", tmp_path / "grid.png", "--nrow", 4)
    assert r.exit_code == 0 and "grid.png" in r.stdout
    assert Image.open(tmp_path / "grid.png").size[0] > 4 * 16
    r = invoke("sample", tiny_run, "--n", 5, "--code", "c1=3", "--out", tmp_path / "files")
    assert r.exit_code == 0
    files = sorted((tmp_path / "files").glob("*.png"))
    assert len(files) == 5 and Image.open(files[0]).size == (16, 16)
    r = invoke("sample", tiny_run, "--n", 7, "--code", "c1=3", "--code", "c2=-1.5",
               "--out", tmp_path / "codes.npz")
    assert r.exit_code == 0
    d = np.load(tmp_path / "codes.npz")
    assert d["images"].shape == (7, 1, 16, 16) and d["images"].dtype == np.uint8
    assert (d["c1"] == 3).all() and np.allclose(d["c2"], -1.5) and d["z"].shape == (7, 8)
    # the PNG files hold the same pixels as the npz for the same seed and codes
    r = invoke("sample", tiny_run, "--n", 7, "--code", "c1=3", "--code", "c2=-1.5",
               "--out", tmp_path / "same")
    first = np.asarray(Image.open(tmp_path / "same" / "000000.png"))
    assert np.array_equal(first, d["images"][0, 0])


def test_sample_default_output_is_inside_the_run(tiny_run):
    r = invoke("sample", tiny_run, "--n", 4, "--seed", 9)
    assert r.exit_code == 0
    assert (tiny_run / "samples" / "sample-seed9-n4.png").is_file()


def test_same_seed_same_images_bit_for_bit(tiny_run, tmp_path):
    for name in ("a", "b"):
        assert invoke("sample", tiny_run, "--n", 9, "--seed", 5, "--out",
                      tmp_path / f"{name}.npz").exit_code == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["images"], b["images"])
    invoke("sample", tiny_run, "--n", 9, "--seed", 6, "--out", tmp_path / "c.npz")
    assert not np.array_equal(a["images"], np.load(tmp_path / "c.npz")["images"])


def test_traverse_categorical_and_continuous(tiny_run, tmp_path):
    r = invoke("traverse", tiny_run, "--code", "c1", "--rows", 3, "--out", tmp_path / "c1.png")
    assert r.exit_code == 0 and "3 rows x 10 values of c1" in r.stdout
    r = invoke("traverse", tiny_run, "--code", "c2", "--range", "-2", "2", "--steps", 5,
               "--rows", 2, "--gif", "--out", tmp_path / "c2.png")
    assert r.exit_code == 0 and "-2, -1, 0, 1, 2" in r.stdout
    assert (tmp_path / "c2.gif").is_file() and Image.open(tmp_path / "c2.gif").n_frames >= 5
    r = invoke("traverse", tiny_run, "--code", "z3", "--steps", 3, "--rows", 1)
    assert r.exit_code == 0 and (tiny_run / "traversals" / "z3-seed0.png").is_file()
    r = invoke("traverse", tiny_run, "--code", "c1", "--rows", 2, "--fix", "c2=1",
               "--out", tmp_path / "fix.png")
    assert r.exit_code == 0


@pytest.mark.parametrize("args,msg", [
    (["train", "nosuchgan"], "unknown model 'nosuchgan'; known models:"),
    (["train", "infogan", "--recipe", "nosuch"], "unknown recipe 'nosuch'"),
    (["train", "infogan", "--batch-size", "0"], "--batch-size must be positive"),
    (["train", "infogan", "--mixed-precision", "fp64"], "--mixed-precision must be one of"),
    (["train", "infogan", "--compile-mode", "fastest"], "--compile-mode must be one of"),
])
def test_user_errors_are_one_line(args, msg):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert msg in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_code_errors(tiny_run):
    r = invoke("traverse", tiny_run, "--code", "c7")
    assert r.exit_code == 2 and "unknown code 'c7'" in r.stderr and "c1 (categorical" in r.stderr
    r = invoke("sample", tiny_run, "--code", "c1")
    assert r.exit_code == 2 and "NAME=VALUE" in r.stderr
    r = invoke("sample", tiny_run, "--code", "c1=12")
    assert r.exit_code == 2 and "integers 0..9" in r.stderr
    r = invoke("sample", tiny_run, "--out", "x.jpg")
    assert r.exit_code == 2


def test_existing_run_is_not_overwritten(tiny_run, tiny_recipe):
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", tiny_run)
    assert r.exit_code == 2 and "--resume" in r.stderr


def test_resume_continues_to_more_steps(tiny_run, tiny_recipe, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    r = invoke("train", "infogan", "--resume", run, "--steps", 6, "--no-progress")
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "step-0000006").is_dir()
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    state = json.loads((run / "checkpoints" / "step-0000006" / "state.json").read_text())
    assert state["step"] == 6 and state["batches"]["position"] > 0
    r = invoke("train", "infogan", "--resume", run, "--steps", 6)
    assert r.exit_code == 2 and "already reached step 6" in r.stderr


def test_python_dash_m_and_console_script(tiny_run):
    r = subprocess.run([sys.executable, "-m", "gancli", "list"], capture_output=True, text=True)
    assert r.returncode == 0 and "infogan" in r.stdout and "digits" in r.stdout


def test_two_process_training_with_torchrun(tiny_recipe, tmp_path):
    """Two CPU processes (gloo): one run directory, one loadable checkpoint, InfoGAN's Q head
    does not break DDP."""
    torchrun = Path(sys.executable).parent / "torchrun"
    gancli = Path(sys.executable).parent / "gancli"
    if not torchrun.exists() or not gancli.exists():
        pytest.skip("torchrun or the gancli script is not installed beside this python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python",
                        str(gancli), "train", "infogan", "--recipe", str(tiny_recipe),
                        "--steps", "3", "--checkpoint-every", "3", "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert [p.name for p in runs] == ["infogan-tiny"]
    assert r.stdout.count("run: ") == 1 and r.stdout.count("wrote ") == 1 and "processes: 2" in r.stdout
    from gancli.checkpoint import load_generator
    g = load_generator(runs[0])
    assert g.step == 3


def test_balance_classes_on_unlabelled_folder_is_one_line(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    r = invoke("train", "dcgan", "--recipe", "imagefolder", "--data", folder, "--image-size", 8,
               "--batch-size", 4, "--steps", 1, "--balance-classes", "--cpu", "--out", out,
               "--no-progress")
    assert r.exit_code == 2, r.output
    assert "needs a labelled data set" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
