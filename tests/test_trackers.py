"""--log-with through Accelerate's trackers: TensorBoard's event files hold the losses, the
evaluation figures, the sample grids and the config."""

from __future__ import annotations

import pytest

from conftest import invoke


def test_tensorboard_gets_losses_images_and_config(tmp_path, tiny_recipe):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", run, "--log-with",
               "tensorboard", "--no-progress")
    assert r.exit_code == 0, r.output
    logs = [p.parent for p in (run / "trackers").rglob("events.out.tfevents.*")]
    assert logs, list((run / "trackers").rglob("*"))
    acc = EventAccumulator(str(logs[0]), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for figure in ("d_loss", "g_loss", "d_real", "d_fake", "images_per_s"):
        assert figure in tags["scalars"], tags["scalars"]
    # the same numbers as metrics.jsonl, at the same steps
    import json
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {e.step: e.value for e in acc.Scalars("d_loss")}
    assert logged == pytest.approx({x["step"]: x["d_loss"] for x in records if "d_loss" in x})
    assert "samples" in tags["images"] and [e.step for e in acc.Images("samples")] == [2, 4]
    hparams = list((run / "trackers").rglob("hparams.yml"))
    assert hparams and "train.lr_g" in hparams[0].read_text()


def test_unknown_or_missing_tracker_is_one_line(tmp_path, tiny_recipe, monkeypatch):
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", tmp_path / "a",
               "--log-with", "tensorbored")
    assert r.exit_code == 2 and "unknown tracker 'tensorbored'" in r.stderr
    import accelerate.utils
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    r = invoke("train", "infogan", "--recipe", tiny_recipe, "--out", tmp_path / "b",
               "--log-with", "wandb")
    assert r.exit_code == 2 and "needs the wandb package" in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
