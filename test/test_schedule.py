"""Sparsity schedules: one-shot, IMP geometric levels, linear and cubic incremental."""
from __future__ import annotations

import pytest

from sprune.errors import UserError
from sprune.prune.schedule import (Incremental, OneShot, imp_schedule, imp_sparsity,
                                   levels_to_reach, make_schedule)


def test_imp_levels_prune_fraction_p_of_the_remaining_weights() -> None:
    p = 0.2
    kept = [1.0 - imp_sparsity(level, p) for level in range(6)]
    assert kept[0] == 1.0
    for before, after in zip(kept, kept[1:]):
        assert after == pytest.approx(before * (1 - p))  # p of what was left
    assert imp_sparsity(1, p) == pytest.approx(0.2)
    assert imp_sparsity(2, p) == pytest.approx(0.36)
    assert imp_sparsity(3, p) == pytest.approx(0.488)


def test_levels_to_reach() -> None:
    assert levels_to_reach(0.0, 0.2) == 0
    assert levels_to_reach(0.2, 0.2) == 1
    assert levels_to_reach(0.36, 0.2) == 2  # 1 - 0.8**2 is 0.3599999... in floating point
    assert levels_to_reach(0.37, 0.2) == 3
    assert levels_to_reach(0.9, 0.2) == 11  # 0.8**10 = 0.107 > 0.1 >= 0.8**11 = 0.086
    assert levels_to_reach(0.9, 0.1) == 22
    assert levels_to_reach(0.5, 0.5) == 1


def test_imp_schedule_clips_the_last_level_to_the_target() -> None:
    levels = imp_schedule(0.5, 0.2)
    assert levels[:3] == pytest.approx([0.2, 0.36, 0.488])
    assert levels[-1] == 0.5 and len(levels) == 4
    assert imp_schedule(0.5, 0.2, clip=False)[-1] == pytest.approx(1 - 0.8 ** 4)
    assert imp_schedule(0.0, 0.2) == []


def test_cubic_schedule_follows_zhu_and_gupta() -> None:
    schedule = Incremental(initial=0.1, final=0.7, start=100, steps=4, every=10, power=3)
    assert schedule.prune_steps() == [100, 110, 120, 130, 140]
    assert schedule.sparsity_at(0) == 0.1 and schedule.sparsity_at(100) == 0.1
    for step in schedule.prune_steps():
        expected = 0.7 + (0.1 - 0.7) * (1 - (step - 100) / 40) ** 3
        assert schedule.sparsity_at(step) == pytest.approx(expected)
    assert schedule.sparsity_at(115) == schedule.sparsity_at(110)  # holds between prunes
    assert schedule.sparsity_at(140) == pytest.approx(0.7) and schedule.sparsity_at(10**6) == 0.7
    assert schedule.is_prune_step(120) and not schedule.is_prune_step(125)
    assert not schedule.is_prune_step(150)
    values = [schedule.sparsity_at(t) for t in range(0, 200)]
    assert values == sorted(values)  # never decreases
    # cubic prunes fast first: the first interval removes more than the last
    assert values[110] - values[100] > values[140] - values[130]


def test_linear_schedule_and_registry() -> None:
    linear = make_schedule("linear", initial=0.0, final=0.8, steps=4, every=5)
    assert [linear.sparsity_at(t) for t in (0, 5, 10, 15, 20)] == \
        pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    cubic = make_schedule("cubic", final=0.8, steps=4, every=5)
    assert isinstance(cubic, Incremental) and cubic.power == 3
    one_shot = make_schedule("one-shot", final=0.6)
    assert isinstance(one_shot, OneShot) and one_shot.sparsity_at(12345) == 0.6


def test_bad_schedule_input_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown sparsity schedule 'exp'; known: one-shot, "
                                        "linear, cubic"):
        make_schedule("exp", final=0.5)
    with pytest.raises(UserError, match="sparsity 1.0 is outside"):
        make_schedule("one-shot", final=1.0)
    with pytest.raises(UserError, match="sparsity -0.1 is outside"):
        Incremental(initial=-0.1, final=0.5)
    with pytest.raises(UserError, match="steps >= 1"):
        Incremental(initial=0.0, final=0.5, steps=0)
    with pytest.raises(UserError, match="power 0"):
        Incremental(initial=0.0, final=0.5, power=0)
    with pytest.raises(UserError, match="prune fraction 1.2 is outside"):
        levels_to_reach(0.5, 1.2)
    with pytest.raises(UserError, match="sparsity 1.5 is outside"):
        levels_to_reach(1.5, 0.2)
