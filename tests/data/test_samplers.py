"""Tests of the training (shuffled, P x K) and inference samplers."""

import itertools
from collections import Counter

import numpy as np
import pytest

from reid_plugins.data.samplers import InferenceSampler, RandomIdentitySampler, TrainingSampler

# 10 identities; identity 7 has 1 image and identity 8 has 2 (< K = 4).
COUNTS = [5, 4, 6, 4, 9, 4, 5, 1, 2, 7]
PIDS = [pid for pid, n in enumerate(COUNTS) for _ in range(n)]
# Shuffle the index order so identity blocks are not contiguous in the dataset.
PIDS = list(np.random.default_rng(0).permutation(PIDS))


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def _batches(sampler, batch, num):
    stream = _take(sampler, batch * num)
    return [stream[i * batch : (i + 1) * batch] for i in range(num)]


def test_pk_batches_have_p_ids_times_k_instances():
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=1, world_size=1)
    for batch in _batches(sampler, 12, 60):
        pids = [PIDS[i] for i in batch]
        assert Counter(pids) == {p: 4 for p in set(pids)} and len(set(pids)) == 3
        # The K images of an identity are adjacent.
        assert all(len(set(pids[j : j + 4])) == 1 for j in range(0, 12, 4))


def test_pk_replacement_only_for_small_identities():
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=2, world_size=1)
    seen_small = Counter()
    for batch in _batches(sampler, 12, 60):
        for j in range(0, 12, 4):
            group = batch[j : j + 4]
            pid = PIDS[group[0]]
            if COUNTS[pid] >= 4:
                assert len(set(group)) == 4  # without replacement
            else:
                assert set(group) <= {i for i, p in enumerate(PIDS) if p == pid}
                seen_small[pid] += 1
    assert seen_small[7] > 0 and seen_small[8] > 0


def test_pk_identities_shuffled_per_epoch():
    # An epoch = 10 // 3 = 3 batches with 9 distinct identities; epochs differ in order.
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=3, world_size=1)
    batches = _batches(sampler, 12, 30)
    epochs = []
    for e in range(10):
        ids = [PIDS[b[j]] for b in batches[3 * e : 3 * e + 3] for j in range(0, 12, 4)]
        assert len(set(ids)) == 9
        epochs.append(tuple(ids))
    assert len(set(epochs)) > 1
    assert set(itertools.chain(*epochs)) == set(range(10))  # nobody starves


def test_pk_deterministic_given_seed():
    a = _take(RandomIdentitySampler(PIDS, 8, 4, seed=5, world_size=1), 400)
    b = _take(RandomIdentitySampler(PIDS, 8, 4, seed=5, world_size=1), 400)
    c = _take(RandomIdentitySampler(PIDS, 8, 4, seed=6, world_size=1), 400)
    assert a == b and a != c


def test_pk_ddp_shares_are_disjoint_and_add_up_to_the_global_batch():
    glob = RandomIdentitySampler(PIDS, 16, 4, seed=9, rank=0, world_size=1)
    r0 = RandomIdentitySampler(PIDS, 16, 4, seed=9, rank=0, world_size=2)
    r1 = RandomIdentitySampler(PIDS, 16, 4, seed=9, rank=1, world_size=2)
    for g, b0, b1 in zip(_batches(glob, 16, 25), _batches(r0, 8, 25), _batches(r1, 8, 25)):
        ids0, ids1 = [PIDS[i] for i in b0], [PIDS[i] for i in b1]
        assert Counter(ids0) == {p: 4 for p in set(ids0)} and len(set(ids0)) == 2
        assert Counter(ids1) == {p: 4 for p in set(ids1)} and len(set(ids1)) == 2
        assert not set(ids0) & set(ids1)
        assert b0 + b1 == g


def test_pk_errors_give_the_numbers():
    with pytest.raises(ValueError, match=r"batch_size \(10\).*\(4\)"):
        RandomIdentitySampler(PIDS, 10, 4, seed=0, world_size=1)
    with pytest.raises(ValueError, match=r"P = .*= 4 identities.*only 3 identities"):
        RandomIdentitySampler([0, 0, 1, 1, 2, 2], 16, 4, seed=0, world_size=1)
    with pytest.raises(ValueError, match=r"\(16\).*3 per-process"):
        RandomIdentitySampler(PIDS, 16, 4, seed=0, rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"\(12\).*2 per-process.*\(4\)"):
        RandomIdentitySampler(PIDS, 12, 4, seed=0, rank=0, world_size=2)


def test_training_sampler_infinite_permutations_and_rank_interleave():
    n = 7
    glob = _take(TrainingSampler(n, seed=4, world_size=1), 5 * n)
    for e in range(5):
        assert sorted(glob[e * n : (e + 1) * n]) == list(range(n))
    assert glob[:n] != glob[n : 2 * n]
    r0 = _take(TrainingSampler(n, seed=4, rank=0, world_size=2), 10)
    r1 = _take(TrainingSampler(n, seed=4, rank=1, world_size=2), 10)
    assert r0 == glob[0:20:2] and r1 == glob[1:20:2]
    assert _take(TrainingSampler(n, seed=4, world_size=1), 5 * n) == glob
    assert _take(TrainingSampler(3, shuffle=False, seed=0, world_size=1), 7) == [0, 1, 2] * 2 + [0]
    with pytest.raises(ValueError, match="size > 0"):
        TrainingSampler(0, seed=0)


def test_inference_sampler_contiguous_shards():
    shards = [list(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(InferenceSampler(10, rank=r, world_size=3)) for r in range(3)] == [4, 3, 3]
    assert [list(InferenceSampler(2, rank=r, world_size=3)) for r in range(3)] == [[0], [1], []]
    assert list(InferenceSampler(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rank 3"):
        InferenceSampler(5, rank=3, world_size=3)
