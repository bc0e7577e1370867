"""Sharding and gathering helpers of multi-process runs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iterframe.loop.distributed import gather_in_order, group, interleave, largest_share, shard


def test_shard_takes_every_world_th_item_from_rank():
    assert shard(list(range(7)), 1, 3) == [1, 4]
    assert shard(list(range(7)), 0, 3) == [0, 3, 6]


@given(st.lists(st.integers(), max_size=30), st.integers(min_value=1, max_value=6))
def test_interleave_undoes_shard(items, world):
    assert interleave([shard(items, rank, world) for rank in range(world)]) == items


@given(st.lists(st.integers(), max_size=30), st.integers(min_value=1, max_value=6))
def test_shards_cover_every_item_once(items, world):
    shards = [shard(items, rank, world) for rank in range(world)]
    assert sorted(sum(shards, [])) == sorted(items)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_shard_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 is not a process of a world of 2"):
        shard([1, 2, 3], 2, 2)


def test_interleave_refuses_shards_that_are_not_a_strided_split():
    with pytest.raises(ValueError, match="shard 0 holds 1 items; a strided split of 3 items gives it 2"):
        interleave([[0], [1, 3]])


def test_group_splits_samples_per_prompt():
    assert group(["a0", "a1", "b0", "b1"], 2) == [["a0", "a1"], ["b0", "b1"]]
    with pytest.raises(ValueError, match="3 items do not split into groups of 2"):
        group([1, 2, 3], 2)


def test_group_splits_samples_of_prompts_with_different_counts():
    assert group(["a0", "b0", "b1", "b2"], [1, 3, 0]) == [["a0"], ["b0", "b1", "b2"], []]
    with pytest.raises(ValueError, match=r"3 items do not split into groups of \[1, 1\]"):
        group([1, 2, 3], [1, 1])


def test_gather_in_order_with_one_process_is_the_local_list():
    local = [3, 1, 2]
    assert gather_in_order(local, 1) == [3, 1, 2]


@pytest.mark.parametrize(
    ("selected", "world", "largest"),
    [([True] * 5, 2, 3), ([True] * 4, 2, 2), ([True], 3, 1), ([True, False, True, False], 2, 2), ([False], 2, 0)],
)
def test_largest_share_is_the_most_selected_items_any_process_holds(selected, world, largest):
    assert largest_share(selected, world) == largest
    assert largest == max(sum(shard(selected, rank, world)) for rank in range(world))


def test_leave_process_group_waits_for_every_process_and_ends_the_group(tmp_path, monkeypatch):
    import torch.distributed as dist

    from iterframe.api import leave_process_group

    leave_process_group()  # one process, no group: nothing to do
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    barriers = []
    real_barrier = dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: barriers.append(1) or real_barrier())
    try:
        leave_process_group()
        assert barriers == [1]
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
