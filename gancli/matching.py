"""Match unsupervised codes (an InfoGAN categorical code, a cluster id) to true classes.

A code value carries no name: code 3 may well mean the digit 7. To score how well codes separate
classes we first build a confusion table (rows = code values, columns = classes), then map codes to
classes either one-to-one (Hungarian: the honest figure, two codes cannot both claim one class) or
many-to-one (purity: an upper bound that forgives codes which split or share a class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


def _as_int_array(x: Any) -> np.ndarray:
    """Torch tensors (any device) or array-likes -> flat int64 numpy array."""
    if hasattr(x, "detach"):  # a torch tensor; avoids importing torch for numpy callers
        x = x.detach().to("cpu").numpy()
    return np.asarray(x).astype(np.int64, copy=False).reshape(-1)


def confusion(codes: Any, classes: Any, n_codes: int, n_classes: int) -> np.ndarray:
    """Count pairs: table[c, k] = how many samples got code value c and belong to class k.

    Values outside [0, n_codes) / [0, n_classes) raise ValueError: silently dropping them would
    inflate every score computed from the table.
    """
    c, k = _as_int_array(codes), _as_int_array(classes)
    if c.shape != k.shape:
        raise ValueError(f"codes and classes differ in length ({c.size} vs {k.size})")
    if n_codes <= 0 or n_classes <= 0:
        raise ValueError("n_codes and n_classes must be positive")
    if c.size and (c.min() < 0 or c.max() >= n_codes):
        raise ValueError(f"code values must lie in [0, {n_codes})")
    if k.size and (k.min() < 0 or k.max() >= n_classes):
        raise ValueError(f"class values must lie in [0, {n_classes})")
    flat = np.bincount(c * n_classes + k, minlength=n_codes * n_classes)
    return flat.reshape(n_codes, n_classes).astype(np.int64)


def hungarian_accuracy(conf: np.ndarray) -> tuple[float, dict[int, int]]:
    """One-to-one matching of code values to classes that maximises agreement.

    Returns (matched count / total, {code: class}). With more codes than classes the extra codes
    stay unmatched (absent from the dict) and their samples count as wrong; with fewer codes,
    some classes are never claimed.
    """
    conf = np.asarray(conf, dtype=np.int64)
    total = int(conf.sum())
    if conf.size == 0 or total == 0:
        return 0.0, {}
    # linear_sum_assignment handles rectangular tables: it matches min(rows, cols) pairs.
    rows, cols = linear_sum_assignment(conf, maximize=True)
    matched = int(conf[rows, cols].sum())
    return matched / total, {int(r): int(c) for r, c in zip(rows, cols)}


def purity(conf: np.ndarray) -> tuple[float, dict[int, int]]:
    """Many-to-one: every code value maps to its majority class (ties: the lowest class index).

    Returns (majority count / total, {code: class}) over code values that occur at all; always
    >= the Hungarian accuracy of the same table.
    """
    conf = np.asarray(conf, dtype=np.int64)
    total = int(conf.sum())
    if conf.size == 0 or total == 0:
        return 0.0, {}
    best = conf.argmax(axis=1)
    used = conf.sum(axis=1) > 0  # a code never emitted has no majority class
    mapping = {int(r): int(best[r]) for r in np.flatnonzero(used)}
    return int(conf.max(axis=1).sum()) / total, mapping
