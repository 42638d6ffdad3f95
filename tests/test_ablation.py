"""Disabling dims: bit-exact restore (property-based), validation, modes, planted outliers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from bertbusters_nb import (
    Condition,
    disabled_dims,
    find_norm_sites,
    find_outliers,
    random_dims,
    select_sites,
    state_fingerprint,
)
from bertbusters_nb.model.ablation import fingerprints_equal

MODEL = tiny_model("bert")
SITES = find_norm_sites(MODEL)
ROLES = ["embeddings", "attention_output", "block_output", "head"]


class Boom(Exception):
    pass


dims_strategy = st.lists(st.integers(0, 31), min_size=1, max_size=6, unique=True)


@settings(max_examples=40, deadline=None)
@given(
    dims=dims_strategy,
    roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=4, unique=True),
    mode=st.sampled_from(["zero", "mean"]),
    raise_inside=st.booleans(),
    inner=st.one_of(st.none(), dims_strategy),
)
def test_restore_is_bit_exact(dims, roles, mode, raise_inside, inner):
    before = state_fingerprint(MODEL)
    chosen = select_sites(SITES, roles)
    try:
        with disabled_dims(chosen, dims, mode):
            touched = chosen[0].weight[dims[0]].item()
            assert touched == 0.0 or mode == "mean"
            if inner is not None:
                with disabled_dims(select_sites(SITES, "block_output"), inner, "zero"):
                    if raise_inside:
                        raise Boom
            if raise_inside:
                raise Boom
    except Boom:
        pass
    assert fingerprints_equal(before, state_fingerprint(MODEL))


def test_keyboard_interrupt_restores():
    before = state_fingerprint(MODEL)
    with pytest.raises(KeyboardInterrupt):
        with disabled_dims(select_sites(SITES, "block_output"), [1, 2]):
            raise KeyboardInterrupt
    assert fingerprints_equal(before, state_fingerprint(MODEL))


def test_zero_and_mean_modes_set_the_right_values():
    site = select_sites(SITES, "block_output")[0]
    with torch.no_grad():
        site.weight[5] = 7.0
    try:
        mean_w = site.weight.mean().item()
        with disabled_dims([site], [5], "zero"):
            assert site.weight[5].item() == 0 and site.bias[5].item() == 0
        with disabled_dims([site], [5], "mean"):
            assert site.weight[5].item() == pytest.approx(mean_w)
        assert site.weight[5].item() == 7.0
    finally:
        with torch.no_grad():
            site.weight[5] = 1.0


def test_only_chosen_sites_and_dims_change():
    model = tiny_model("bert")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) + 0.1)  # no zeros anywhere, so every touched entry changes
    before = state_fingerprint(model)
    chosen = select_sites(find_norm_sites(model), "block_output", layers=[1])
    with disabled_dims(chosen, [3]):
        after = state_fingerprint(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert all(
        torch.equal(before[k][[i for i in range(32) if i != 3]], after[k][[i for i in range(32) if i != 3]])
        for k in changed
    )
    assert changed == ["bert.encoder.layer.1.output.LayerNorm.weight", "bert.encoder.layer.1.output.LayerNorm.bias"]


@pytest.mark.parametrize(
    "dims, error, match",
    [
        ([], ValueError, "empty"),
        ([32], ValueError, "out of range.*hidden size is 32"),
        ([-1], ValueError, "out of range"),
        ([1, 1], ValueError, "more than once"),
        ([1.5], TypeError, "integers"),
        ("12", TypeError, "list of integers"),
    ],
)
def test_bad_dims_are_clear_errors(dims, error, match):
    with pytest.raises(error, match=match):
        with disabled_dims(select_sites(SITES, "block_output"), dims):
            pass


def test_empty_site_selection_is_an_error():
    with pytest.raises(ValueError, match="No norm sites selected"):
        with disabled_dims([], [1]):
            pass


def test_planted_outliers_are_found():
    model = tiny_model("bert")
    torch.manual_seed(1)
    sites = select_sites(find_norm_sites(model), "block_output")
    with torch.no_grad():
        for site in sites:
            site.weight.normal_(1.0, 0.05)
            site.bias.normal_(0.0, 0.05)
            site.weight[7] = 3.0
            site.bias[20] = -2.0
        sites[0].weight[11] = 3.0  # flagged in one layer only: not a model-level outlier
    report = find_outliers(sites, k=3)
    assert sorted(report.dims) == [7, 20]
    assert report.per_dim.set_index("dim").loc[11, "sites_flagged"] == 1
    assert report.min_sites == 2


def test_random_dims_are_seeded_distinct_and_exclude():
    a = random_dims(40, 3, draws=25, exclude=[7, 20], seed=3)
    assert a == random_dims(40, 3, draws=25, exclude=[7, 20], seed=3)
    assert a != random_dims(40, 3, draws=25, exclude=[7, 20], seed=4)
    assert all(len(set(d)) == 3 and not {7, 20} & set(d) for d in a)


def test_condition_is_noop_without_dims():
    before = state_fingerprint(MODEL)
    with Condition("intact").apply(SITES):
        assert fingerprints_equal(before, state_fingerprint(MODEL))


CONDITIONS = [
    Condition("none"),
    Condition("outliers", dims=(3, 17)),
    Condition("one role", dims=[np.int64(5)], roles="attention_output", mode="mean"),
    Condition("layers", dims=(1, 2, 30), roles=("block_output", "embeddings"), layers=(0, 2), stack="encoder"),
    Condition("empty layers", dims=(4,), layers=()),
]


@pytest.mark.parametrize("condition", CONDITIONS, ids=[c.name for c in CONDITIONS])
def test_condition_round_trips_through_json(condition):
    data = condition.to_dict()
    again = Condition.from_dict(json.loads(json.dumps(data)))
    assert again == condition and Condition.from_dict(data) == condition
    assert again.to_dict() == data and json.dumps(again.to_dict()) == json.dumps(data)
    assert type(again.dims) is tuple and all(type(d) is int for d in again.dims)


@settings(max_examples=30, deadline=None)
@given(
    dims=st.lists(st.integers(0, 31), max_size=5, unique=True),
    roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True),
    layers=st.one_of(st.none(), st.lists(st.integers(0, 2), max_size=3, unique=True)),
    mode=st.sampled_from(["zero", "mean"]),
    stack=st.sampled_from([None, "encoder"]),
    name=st.text(max_size=12),
)
def test_condition_round_trip_property(dims, roles, layers, mode, stack, name):
    condition = Condition(name, tuple(dims), tuple(roles), None if layers is None else tuple(layers), mode, stack)
    assert Condition.from_dict(json.loads(json.dumps(condition.to_dict()))) == condition


def test_a_condition_from_its_row_reruns_exactly():
    """The stored dict puts the same edit in force: same sites, same output."""
    condition = Condition("outliers", dims=(3, 17), roles=("block_output", "attention_output"), layers=(1, 2))
    again = Condition.from_dict(json.loads(json.dumps(condition.to_dict())))
    ids = torch.randint(4, 120, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with condition.apply(SITES) as touched:
            first = MODEL(input_ids=ids).logits
        with again.apply(SITES) as touched_again:
            second = MODEL(input_ids=ids).logits
    assert [s.name for s in touched] == [s.name for s in touched_again] and touched
    assert torch.equal(first, second)


def test_condition_from_dict_names_unknown_or_missing_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['dim'\]"):
        Condition.from_dict({"name": "x", "dim": [1]})
    with pytest.raises(ValueError, match="'name' is missing"):
        Condition.from_dict({"dims": [1]})
    with pytest.raises(ValueError, match="Unknown mode"):
        Condition.from_dict({"name": "x", "dims": [1], "mode": "zeros"})
