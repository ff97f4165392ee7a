"""Patient satisfaction: final, mean and delta of the per-turn ratings; None when unrated."""

from __future__ import annotations

import pytest

from cbtgym.transcript import Transcript
from rewards.satisfaction import SatisfactionJudge


def rated(*ratings):
    t = Transcript("t-gad", "active")
    for r in ratings:
        t.add("therapist", "How are you?")
        t.add("patient", "Okay.", satisfaction=r)
    return t


def test_final_mean_and_delta_from_the_start_of_30():
    [r] = SatisfactionJudge().score([rated(35, 50, 20)])
    assert r.scores == {"final": 20.0, "mean": 35.0, "delta": -10.0, "n_ratings": 3.0}
    assert r.total == 20.0 and r.meta["series"] == [35, 50, 20] and r.meta["start"] == 30


@pytest.mark.parametrize("total, expected", [("final", 60.0), ("mean", 50.0), ("delta", 30.0)])
def test_total_is_configurable(total, expected):
    assert SatisfactionJudge(total=total).score([rated(40, 60)])[0].total == expected


def test_unrated_session_is_none_not_zero():
    t = rated(None, None)
    [r] = SatisfactionJudge().score([t])
    assert r.total is None and r.scores["final"] is None and not r.parse_failed and r.meta["unrated"]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="0-100"):
        SatisfactionJudge().score([rated(130)])
    with pytest.raises(ValueError, match="total"):
        SatisfactionJudge(total="median")
