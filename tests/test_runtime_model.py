"""The run-time model: its estimate, persistence, and safe warm starts."""

from __future__ import annotations

import json
import math
import random

import pytest

from runcomfy_async import AdaptivePolling
from runcomfy_async._runtime_model import RunTimeModel

DAY = 86400.0


def learned(runs: list[float]) -> RunTimeModel:
    """A model that watched jobs of *runs* from their start to their finish."""
    model = RunTimeModel()
    for run in runs:
        model.add_exposure(0.0, run)
        model.add_event(run)
    return model


def lognormal(n: int, mean: float = 60.0, cv: float = 0.3, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    s2 = math.log1p(cv * cv)
    return [rng.lognormvariate(math.log(mean) - s2 / 2, math.sqrt(s2)) for _ in range(n)]


def test_the_mean_run_time_is_estimated():
    """The model's mean is close to the runs' mean."""
    assert pytest.approx(60.0, rel=0.1) == learned(lognormal(400)).mean()


def test_a_model_survives_a_round_trip_through_json():
    """to_json / from_json through real JSON gives the same hazard, as a prior."""
    model = learned(lognormal(100))
    data = json.loads(json.dumps(model.to_json(saved_at=1000.0)))
    loaded = RunTimeModel.from_json(data, now=1000.0)
    assert 0 == loaded.finished  # this session has seen nothing yet
    assert loaded.ready
    for seconds in (20.0, 50.0, 60.0, 80.0):
        assert pytest.approx(model.hazard(seconds), rel=1e-3) == loaded.hazard(seconds)


def test_a_prior_counts_as_at_most_cap_finishes():
    """A big persisted model is scaled down so this session's evidence soon outweighs it."""
    data = learned(lognormal(1000)).to_json(saved_at=0.0)
    loaded = RunTimeModel.from_json(data, now=0.0, cap=50.0)
    assert pytest.approx(50.0) == loaded.evidence


def test_an_old_prior_is_down_weighted():
    """A model saved longer ago than stale_after weighs a fifth."""
    data = learned(lognormal(100)).to_json(saved_at=0.0)
    fresh = RunTimeModel.from_json(data, now=DAY, stale_after=7 * DAY)
    old = RunTimeModel.from_json(data, now=8 * DAY, stale_after=7 * DAY)
    assert pytest.approx(fresh.prior_weight / 5) == old.prior_weight


@pytest.mark.parametrize("factor", [0.5, 2.0], ids=["service-faster", "service-slower"])
def test_a_prior_that_this_session_contradicts_is_distrusted(factor):
    """Jobs twice as fast or slow as the prior said make it lose its weight."""
    data = learned(lognormal(200)).to_json(saved_at=0.0)
    model = RunTimeModel.from_json(data, now=0.0)
    for run in lognormal(20, mean=60.0 * factor, seed=5):
        model.add_exposure(0.0, run)
        model.add_event(run)
    model.hazard(1.0)  # a rebuild checks the prior
    assert not model.trusted
    # The session's own runs now decide where the hazard peaks.
    assert model.cumulative(60.0 * factor) > 0.5


def test_a_prior_that_agrees_stays_trusted():
    """Jobs like the prior's keep its weight."""
    data = learned(lognormal(200)).to_json(saved_at=0.0)
    model = RunTimeModel.from_json(data, now=0.0)
    for run in lognormal(20, seed=5):
        model.add_exposure(0.0, run)
        model.add_event(run)
    model.hazard(1.0)
    assert model.trusted


def test_unreadable_models_are_refused():
    """A model of another format, or with a bad count, raises ValueError."""
    good = learned(lognormal(10)).to_json()
    with pytest.raises(ValueError, match="version"):
        RunTimeModel.from_json({**good, "format": 99})
    with pytest.raises(ValueError, match="non-negative"):
        RunTimeModel.from_json({**good, "events": [-1.0] * len(good["events"])})


def test_a_policy_exports_and_loads_its_models():
    """export_models -> load_models warms a new policy; bad entries are skipped."""
    policy = AdaptivePolling()
    model = policy._model("a/b/c")
    for run in lognormal(50):
        model.add_exposure(0.0, run)
        model.add_event(run)
    saved = json.loads(json.dumps(policy.export_models()))
    fresh = AdaptivePolling()
    assert 1 == fresh.load_models({**saved, "x/y/z": {"format": 0}})
    assert fresh._model("a/b/c").ready
    assert not fresh._model("x/y/z").ready


def test_the_model_cache_saves_and_loads(tmp_path):
    """save_model_cache then load_model_cache warms a new policy; a bad file loads nothing."""
    from runcomfy_async._model_cache import load_model_cache, save_model_cache  # noqa: PLC0415

    policy = AdaptivePolling()
    model = policy._model("a/b/c")
    for run in lognormal(50):
        model.add_exposure(0.0, run)
        model.add_event(run)
    path = tmp_path / "cache" / "models.json"
    save_model_cache(policy, path)
    fresh = AdaptivePolling()
    assert 1 == load_model_cache(fresh, path)
    assert fresh._model("a/b/c").ready
    path.write_text("not json", encoding="utf-8")
    assert 0 == load_model_cache(AdaptivePolling(), path)
