import math

import pytest

from cbpqsnn.quant.schedule import WindowSchedule


def test_g_sequence_is_1_to_10_then_steps_of_10():
    schedule = WindowSchedule(p_max=1)
    seen = [schedule.g]
    for _ in range(12):
        assert schedule.end_epoch(1.0).updated
        seen.append(schedule.g)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40]


def test_rising_lagrangian_triggers_an_update_and_resets_state():
    schedule = WindowSchedule(p_max=20)
    assert not schedule.end_epoch(5.0).updated
    assert not schedule.end_epoch(4.0).updated
    assert (schedule.p, schedule.L_prev) == (2, 4.0)
    decision = schedule.end_epoch(4.0)  # L_sum >= L_prev (equal counts as rising)
    assert decision.updated and schedule.g == 2
    assert (schedule.p, schedule.L_prev) == (0, math.inf)
    assert not schedule.end_epoch(100.0).updated  # first epoch after an update compares to inf


def test_p_max_forces_an_update_when_the_lagrangian_keeps_falling():
    schedule = WindowSchedule(p_max=3)
    decisions = [schedule.end_epoch(10.0 - epoch).updated for epoch in range(7)]
    assert decisions == [False, False, True, False, False, True, False]
    assert schedule.g == 3


def test_lr_drop_fires_once_when_g_reaches_20():
    schedule = WindowSchedule(p_max=1, lr_drop_at_g=20)
    drops = []
    for _ in range(12):
        decision = schedule.end_epoch(0.0)
        drops.append((schedule.g, decision.lr_drop))
    assert [g for g, drop in drops if drop] == [20]
    no_drop = WindowSchedule(p_max=1, lr_drop_at_g=None)
    assert not any(no_drop.end_epoch(0.0).lr_drop for _ in range(12))


def test_state_dict_round_trip_and_bad_values():
    schedule = WindowSchedule(p_max=4)
    schedule.end_epoch(3.0)
    schedule.end_epoch(2.0)
    other = WindowSchedule()
    other.load_state_dict(schedule.state_dict())
    assert other == schedule
    with pytest.raises(ValueError, match="p_max"):
        WindowSchedule(p_max=0)
    with pytest.raises(ValueError, match="NaN"):
        schedule.end_epoch(float("nan"))
