"""Invariants of the combination sampler, checked over many shapes and seeds (hypothesis)."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydralab.data.sampler import ZERO_SLOT, CombinationSampler

sizes = st.integers(min_value=1, max_value=60)
ks = st.integers(min_value=1, max_value=8)
ps = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9])
seeds = st.integers(min_value=0, max_value=2**31)


@settings(max_examples=200, deadline=None)
@given(n=sizes, k=ks, p=ps, seed=seeds, epoch=st.integers(0, 50))
def test_without_replacement_each_scan_at_most_once_and_none_lost(n, k, p, seed, epoch):
    sets = CombinationSampler(n, k, p, seed=seed).sets_for_epoch(epoch)
    assert sets.shape == (-(-n // k), k)
    members = sets[sets != ZERO_SLOT]
    assert len(members) == len(set(members.tolist()))  # at most once per epoch
    if p == 0:
        assert sorted(members.tolist()) == list(range(n))  # every scan visited


@settings(max_examples=100, deadline=None)
@given(n=sizes, k=ks, seed=seeds)
def test_without_dropout_the_only_zero_slots_pad_the_last_set(n, k, seed):
    sets = CombinationSampler(n, k, 0.0, seed=seed).sets_for_epoch(0)
    assert (sets == ZERO_SLOT).sum() == len(sets) * k - n
    assert (sets[:-1] != ZERO_SLOT).all()


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_share_of_zero_slots_matches_p(p):
    sampler = CombinationSampler(40, 4, p, seed=3)  # 40 = 10 full sets: no padding slots
    sets = np.concatenate([sampler.sets_for_epoch(e) for e in range(500)])
    share = (sets == ZERO_SLOT).mean()
    # 20,000 slots: the binomial standard error is below 0.004.
    assert share == pytest.approx(p, abs=0.015)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(2, 30), k=ks, seed=seeds)
def test_with_replacement_sets_have_distinct_members_when_possible(n, k, seed):
    sampler = CombinationSampler(n, k, 0.0, replacement=True, seed=seed)
    sets = sampler.sets_for_epoch(0)
    assert sets.shape == (len(sampler), k)
    assert ((sets >= 0) & (sets < n)).all()
    if n >= k:
        assert all(len(set(row.tolist())) == k for row in sets)


def test_with_replacement_scans_can_repeat_across_sets():
    counts = Counter(CombinationSampler(12, 4, replacement=True, seed=0).sets_for_epoch(0).ravel())
    # Three sets of four drawn independently: some scan almost surely appears twice.
    assert max(counts.values()) > 1 or len(counts) < 12


def test_reproducible_and_different_per_epoch_and_seed():
    a, b = CombinationSampler(20, 4, 0.2, seed=7), CombinationSampler(20, 4, 0.2, seed=7)
    assert np.array_equal(a.sets_for_epoch(3), b.sets_for_epoch(3))
    assert not np.array_equal(a.sets_for_epoch(3), a.sets_for_epoch(4))
    assert not np.array_equal(
        a.sets_for_epoch(3), CombinationSampler(20, 4, 0.2, seed=8).sets_for_epoch(3)
    )


def test_iteration_follows_set_epoch_and_advances_otherwise():
    sampler = CombinationSampler(10, 2, seed=1)
    first = list(sampler)
    second = list(sampler)
    assert first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert all(len(s) == 2 for s in first)


def test_baseline_is_a_shuffled_permutation_of_single_scans():
    sets = list(CombinationSampler(9, 1, seed=0))
    assert sorted(s[0] for s in sets) == list(range(9))
    assert [s[0] for s in sets] != list(range(9))


@pytest.mark.parametrize(
    ("k", "p", "culprit"), [(0, 0.1, "k"), (2, 1.0, "p"), (2, -0.1, "p"), (2.5, 0.1, "k")]
)
def test_bad_k_or_p_is_named(k, p, culprit):
    with pytest.raises(ValueError, match=rf"^{culprit} "):
        CombinationSampler(10, k, p)


@settings(max_examples=200, deadline=None)
@given(n=sizes, k=ks, sets_per_batch=st.integers(1, 8), seed=seeds, epoch=st.integers(0, 20))
def test_full_batches_fill_every_batch_and_visit_each_scan_equally(
    n, k, sets_per_batch, seed, epoch
):
    sampler = CombinationSampler(n, k, seed=seed, sets_per_batch=sets_per_batch)
    sets = sampler.sets_for_epoch(epoch)
    assert len(sets) == len(sampler) and len(sets) % sets_per_batch == 0
    passes = len(sets) // -(-n // k)
    assert passes * -(-n // k) == len(sets)
    # the fewest whole passes that fill the batches
    assert all((pass_ * -(-n // k)) % sets_per_batch for pass_ in range(1, passes))
    counts = Counter(sets[sets != ZERO_SLOT].tolist())
    assert set(counts) == set(range(n)) and set(counts.values()) == {passes}


def test_full_batches_at_n20_k4_batch16_make_five_full_batches_not_a_one_set_batch():
    plain = CombinationSampler(20, 4, seed=0)
    full = CombinationSampler(20, 4, seed=0, sets_per_batch=4)
    assert len(plain) == 5 and len(full) == 20  # 5 sets: a batch of 4 sets, then one of 1
    # one pass per epoch draws exactly what it drew before the option existed
    np.testing.assert_array_equal(
        CombinationSampler(12, 4, 0.1, seed=3, sets_per_batch=3).sets_for_epoch(2),
        CombinationSampler(12, 4, 0.1, seed=3).sets_for_epoch(2),
    )
