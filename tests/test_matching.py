import numpy as np
import pytest
import torch

from gancli.matching import confusion, hungarian_accuracy, purity


def test_confusion_counts_pairs_from_torch_and_numpy():
    codes = torch.tensor([0, 0, 1, 2, 2, 2])
    classes = np.array([1, 1, 0, 0, 2, 2])
    conf = confusion(codes, classes, n_codes=3, n_classes=3)
    assert conf.dtype == np.int64
    assert conf.tolist() == [[0, 2, 0], [1, 0, 0], [1, 0, 2]]


def test_confusion_rejects_out_of_range_values():
    with pytest.raises(ValueError):
        confusion([0, 3], [0, 1], n_codes=3, n_classes=2)
    with pytest.raises(ValueError):
        confusion([0, 1], [0, 2], n_codes=3, n_classes=2)


def test_permuted_identity_is_perfect():
    perm = [2, 0, 3, 1]  # code c always means class perm[c]
    conf = np.zeros((4, 4), dtype=np.int64)
    for c, k in enumerate(perm):
        conf[c, k] = 10 + c
    acc, mapping = hungarian_accuracy(conf)
    assert acc == 1.0
    assert mapping == {0: 2, 1: 0, 2: 3, 3: 1}
    assert purity(conf) == (1.0, {0: 2, 1: 0, 2: 3, 3: 1})


def test_two_codes_sharing_one_class():
    # Codes 0 and 1 both mostly emit class 0; code 2 emits class 2; nobody wants class 1.
    conf = np.array([[8, 2, 0],
                     [6, 1, 3],
                     [0, 0, 10]])
    # Purity: 0->0, 1->0, 2->2: (8 + 6 + 10) / 30.
    p, pmap = purity(conf)
    assert p == pytest.approx(24 / 30)
    assert pmap == {0: 0, 1: 0, 2: 2}
    # Hungarian, one-to-one: best is 0->0 (8), 1->1 (1), 2->2 (10) = 19, versus e.g.
    # 0->1, 1->0, 2->2 = 2 + 6 + 10 = 18.
    h, hmap = hungarian_accuracy(conf)
    assert h == pytest.approx(19 / 30)
    assert hmap == {0: 0, 1: 1, 2: 2}
    assert h < p


def test_more_codes_than_classes():
    conf = np.array([[5, 0],
                     [4, 1],
                     [0, 6],
                     [1, 3]])
    h, hmap = hungarian_accuracy(conf)
    assert hmap == {0: 0, 2: 1}  # codes 1 and 3 stay unmatched
    assert h == pytest.approx(11 / 20)
    p, pmap = purity(conf)
    assert pmap == {0: 0, 1: 0, 2: 1, 3: 1}
    assert p == pytest.approx(18 / 20)


def test_fewer_codes_than_classes():
    conf = np.array([[1, 7, 2, 0],
                     [0, 6, 0, 5]])
    h, hmap = hungarian_accuracy(conf)
    assert hmap == {0: 1, 1: 3}  # 7 + 5 beats 1 + 6 or 6 + 2
    assert h == pytest.approx(12 / 21)
    p, pmap = purity(conf)
    assert pmap == {0: 1, 1: 1}
    assert p == pytest.approx(13 / 21)


def test_unused_codes_and_empty_tables():
    conf = np.array([[3, 0], [0, 0]])
    assert purity(conf) == (1.0, {0: 0})
    assert hungarian_accuracy(np.zeros((2, 2), dtype=np.int64)) == (0.0, {})
    assert purity(np.zeros((2, 2), dtype=np.int64)) == (0.0, {})


def test_end_to_end_from_labels():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 5, size=500)
    codes = (classes + 2) % 5  # a relabelling, nothing lost
    acc, mapping = hungarian_accuracy(confusion(codes, classes, 5, 5))
    assert acc == 1.0
    assert all(mapping[(k + 2) % 5] == k for k in range(5))
