"""The OTA policy alone: target fields, choosing a target, staged rollout, probation.

No sockets, no files: the policy is pure (an import-linter contract keeps it so).
"""

from __future__ import annotations

import hashlib
from math import comb, sqrt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runtime.ota.policy import (
    CUSTOM_KEY,
    DeviceFacts,
    ProbationSettings,
    ProbationStats,
    Release,
    TargetCandidate,
    TargetFields,
    TargetFieldsError,
    UpdateState,
    agreement_upper_bound,
    candidates_from_target,
    candidates_from_targets,
    choose_update,
    in_rollout,
    judge_probation,
    read_target_fields,
    rollout_bucket,
    runtime_admits,
)

SHA = "ab" * 32
PI4 = DeviceFacts(device_id="pi-0001", profile="raspberry-pi-4", runtime_version="0.1.0")


def candidate(version: int, **fields: object) -> TargetCandidate:
    values: dict[str, object] = {
        "path": f"signs/signs-{version}.tar",
        "length": 1000,
        "name": "signs",
        "version": version,
        "channel": "stable",
        "rollout": 100,
        "manifest_sha256": SHA,
    }
    values.update(fields)
    return TargetCandidate(**values)  # type: ignore[arg-type]


def device_in(percent: int, version: int, inside: bool, name: str = "signs") -> DeviceFacts:
    """A Pi 4 whose bucket for ``name`` ``version`` is inside (or outside) ``percent``."""
    for i in range(10_000):
        device_id = f"probe-{i}"
        if in_rollout(device_id, name, version, percent) == inside:
            return DeviceFacts(device_id, "raspberry-pi-4", "0.1.0")
    raise AssertionError("no such device id")


# --------------------------------------------------------------------------------------------
# Target fields


def test_target_fields_round_trip_through_custom() -> None:
    fields = TargetFields(
        name="signs",
        version=3,
        channels={"stable": Release(rollout=25), "beta": Release(rollout=100)},
        profiles=("raspberry-pi-4",),
        runtime=">=0.1",
        manifest_sha256=SHA,
    )
    custom = fields.to_custom()
    assert set(custom) == {CUSTOM_KEY}
    assert custom[CUSTOM_KEY]["schema"] == 1
    assert read_target_fields(custom) == fields
    found = candidates_from_target("signs/signs-3.tar", 4096, custom)
    assert [(c.channel, c.rollout) for c in found] == [("beta", 100), ("stable", 25)]
    assert all(c.length == 4096 and c.profiles == ("raspberry-pi-4",) for c in found)


def test_unknown_keys_are_ignored_for_newer_publishers() -> None:
    custom = TargetFields(name="signs", version=1, channels={"stable": Release(rollout=5)},
                          manifest_sha256=SHA).to_custom()
    custom[CUSTOM_KEY]["notes"] = "informative, added by a newer publisher"
    custom["another-tool"] = {"anything": 1}
    assert read_target_fields(custom).version == 1


def test_a_bad_target_is_skipped_with_a_reason_not_fatal() -> None:
    good = TargetFields(name="signs", version=2, channels={"stable": Release(rollout=50)},
                        manifest_sha256=SHA).to_custom()
    targets = {
        "signs/signs-2.tar": {"length": 10, "hashes": {}, "custom": good},
        "docs/readme.txt": {"length": 5, "hashes": {}},
        "signs/signs-9.tar": {"length": 10, "custom": {CUSTOM_KEY: {"schema": 7}}},
        "broken": {"length": "ten"},
    }
    found, problems = candidates_from_targets(targets)
    assert [(c.path, c.version, c.rollout) for c in found] == [("signs/signs-2.tar", 2, 50)]
    assert len(problems) == 3
    assert any("format 7" in p for p in problems)


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        (None, "no 'edge-classify' custom fields"),
        ({"other": {}}, "no 'edge-classify' custom fields"),
        ({CUSTOM_KEY: {"schema": 2}}, "format 2"),
        ({CUSTOM_KEY: {"name": "signs", "version": 1, "channels": {}, "manifest_sha256": SHA}},
         "channels"),
        ({CUSTOM_KEY: {"name": "signs", "version": 1, "manifest_sha256": SHA,
                       "channels": {"stable": {"rollout": 0}}}}, "rollout"),
        ({CUSTOM_KEY: {"name": "signs", "version": 1, "manifest_sha256": SHA,
                       "channels": {"Bad Name": {"rollout": 5}}}}, "channel name"),
        ({CUSTOM_KEY: {"name": "signs", "version": "1", "manifest_sha256": SHA,
                       "channels": {"stable": {"rollout": 5}}}}, "version"),
        ({CUSTOM_KEY: {"name": "signs", "version": 1, "manifest_sha256": "nope",
                       "channels": {"stable": {"rollout": 5}}}}, "manifest_sha256"),
        ({CUSTOM_KEY: {"name": "signs", "version": 1, "manifest_sha256": SHA, "runtime": "~~",
                       "channels": {"stable": {"rollout": 5}}}}, "runtime"),
    ],
)
def test_bad_target_fields_are_one_clear_error(custom: object, message: str) -> None:
    with pytest.raises(TargetFieldsError, match=message) as caught:
        read_target_fields(custom, where="target x.tar")
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Staged rollout


def test_a_quarter_of_ten_thousand_devices_within_binomial_bounds() -> None:
    # 10,000 ids at 25%: Binomial(10000, 0.25) has mean 2500 and sd sqrt(10000 * .25 * .75) =
    # 43.3. The hash is deterministic, so this either always passes or always fails; a +-5 sd
    # band (2283..2717) is missed by a uniform hash with probability 6e-7.
    ids = [f"device-{i:05d}" for i in range(10_000)]
    admitted = sum(in_rollout(d, "traffic-signs", 7, 25) for d in ids)
    assert abs(admitted - 2500) <= 5 * sqrt(10_000 * 0.25 * 0.75)


def test_buckets_are_uniform_over_0_to_99() -> None:
    # Chi-square over 100 buckets of 10,000 ids: 99 degrees of freedom, mean 99, sd
    # sqrt(2 * 99) = 14.1; 99 + 5 sd = 169 is exceeded by a uniform hash with p < 1e-5.
    counts = [0] * 100
    for i in range(10_000):
        counts[rollout_bucket(f"device-{i:05d}", "banknotes", 2)] += 1
    chi2 = sum((c - 100) ** 2 / 100 for c in counts)
    assert chi2 < 99 + 5 * sqrt(2 * 99)


def test_each_version_draws_a_fresh_quarter() -> None:
    # The quarters of two versions overlap like independent draws: 10,000 * 1/16 = 625, sd
    # sqrt(10000 * (1/16) * (15/16)) = 24.2; a shared hash would give 2500.
    ids = [f"device-{i:05d}" for i in range(10_000)]
    both = sum(in_rollout(d, "signs", 1, 25) and in_rollout(d, "signs", 2, 25) for d in ids)
    assert abs(both - 625) <= 5 * 24.2


@given(
    device_id=st.text(min_size=1, max_size=40),
    version=st.integers(min_value=1, max_value=10**6),
    low=st.integers(min_value=1, max_value=100),
    high=st.integers(min_value=1, max_value=100),
)
def test_membership_is_stable_and_monotonic_in_percent(
    device_id: str, version: int, low: int, high: int
) -> None:
    low, high = sorted((low, high))
    bucket = rollout_bucket(device_id, "signs", version)
    assert 0 <= bucket <= 99
    assert bucket == rollout_bucket(device_id, "signs", version)
    if in_rollout(device_id, "signs", version, low):
        assert in_rollout(device_id, "signs", version, high)
    assert in_rollout(device_id, "signs", version, 100)


def test_raising_a_rollout_keeps_the_first_devices_in() -> None:
    ids = [f"device-{i:05d}" for i in range(2000)]
    quarter = {d for d in ids if in_rollout(d, "signs", 4, 25)}
    half = {d for d in ids if in_rollout(d, "signs", 4, 50)}
    assert quarter < half


def test_the_bucket_is_pinned() -> None:
    # A change of the hash would reshuffle every rollout in the field: pin its values, and its
    # definition (the first 8 bytes of sha256("id:name:version"), big-endian, modulo 100).
    assert rollout_bucket("pi-0001", "traffic-signs", 2) == 25
    assert rollout_bucket("pi-0001", "traffic-signs", 3) == 21
    assert rollout_bucket("kiosk-17", "banknotes", 1) == 98
    digest = hashlib.sha256(b"kiosk-17:banknotes:1").digest()
    assert int.from_bytes(digest[:8], "big") % 100 == 98


# --------------------------------------------------------------------------------------------
# Choosing a target


def test_newest_eligible_version_is_taken() -> None:
    decision = choose_update(
        [candidate(1), candidate(2), candidate(3)], PI4, UpdateState(1), name="signs",
        channel="stable",
    )
    assert decision.action == "install"
    assert decision.target is not None and decision.target.version == 3
    assert "install signs v3 from stable" in decision.reason


def test_other_names_and_channels_are_ignored() -> None:
    found = [candidate(5, name="banknotes"), candidate(6, channel="beta"), candidate(2)]
    decision = choose_update(found, PI4, UpdateState(1), name="signs", channel="stable")
    assert decision.target is not None and decision.target.version == 2


def test_up_to_date_and_nothing_published() -> None:
    assert choose_update([candidate(2)], PI4, UpdateState(2), name="signs",
                         channel="stable").reason.startswith("up to date: v2 is active")
    decision = choose_update([], PI4, UpdateState(), name="signs", channel="stable")
    assert decision.action == "stay"
    assert decision.reason == "nothing published for signs on channel stable"


def test_an_empty_store_installs_the_newest() -> None:
    decision = choose_update([candidate(1), candidate(4)], PI4, UpdateState(), name="signs",
                             channel="stable")
    assert decision.target is not None and decision.target.version == 4


def test_never_below_the_active_version() -> None:
    decision = choose_update([candidate(1), candidate(2)], PI4, UpdateState(3), name="signs",
                             channel="stable")
    assert decision.action == "stay"
    assert "v3 is active" in decision.reason


def test_failed_versions_are_never_retried_and_an_older_newer_one_is_taken() -> None:
    state = UpdateState(active_version=1, failed_versions=frozenset({3}))
    decision = choose_update([candidate(2), candidate(3)], PI4, state, name="signs",
                             channel="stable")
    assert decision.target is not None and decision.target.version == 2
    assert [s.version for s in decision.skipped] == [3]
    assert "v3 failed here before" in decision.reason


def test_profiles_decide_and_empty_means_any() -> None:
    jetson_only = candidate(3, profiles=("jetson-orin-nano",))
    for_any = candidate(2, profiles=())
    decision = choose_update([jetson_only, for_any], PI4, UpdateState(1), name="signs",
                             channel="stable")
    assert decision.target is not None and decision.target.version == 2
    assert "made for jetson-orin-nano, this device is raspberry-pi-4" in decision.reason
    unknown = DeviceFacts("x", None, "0.1.0")
    decision = choose_update([jetson_only], unknown, UpdateState(1), name="signs",
                             channel="stable")
    assert decision.action == "stay" and "no known profile" in decision.reason


def test_runtime_range_decides() -> None:
    future = candidate(3, runtime=">=9")
    decision = choose_update([future], PI4, UpdateState(1), name="signs", channel="stable")
    assert decision.action == "stay"
    assert "needs edge-runtime >=9, this one is 0.1.0" in decision.reason
    assert runtime_admits(">=0.2", "0.2.0.dev3")  # a development build counts as its release
    assert runtime_admits(">=9", "0.0.0+unknown")  # a source tree does not know its version
    assert runtime_admits("", "0.1.0")
    assert not runtime_admits(">=0.2", "0.1.5")


def test_outside_the_rollout_stays_inside_installs() -> None:
    outside = device_in(25, 3, inside=False)
    decision = choose_update([candidate(3, rollout=25)], outside, UpdateState(2), name="signs",
                             channel="stable")
    assert decision.action == "stay"
    assert "rolled out to 25% and this device is outside it (bucket" in decision.reason
    inside = device_in(25, 3, inside=True)
    decision = choose_update([candidate(3, rollout=25)], inside, UpdateState(2), name="signs",
                             channel="stable")
    assert decision.action == "install"


def test_outside_the_newest_rollout_takes_the_previous_release() -> None:
    outside = device_in(10, 3, inside=False)
    decision = choose_update([candidate(2), candidate(3, rollout=10)], outside, UpdateState(1),
                             name="signs", channel="stable")
    assert decision.target is not None and decision.target.version == 2


def test_a_version_asked_for_by_number_may_be_older_or_outside_the_rollout() -> None:
    outside = device_in(10, 1, inside=False)
    decision = choose_update([candidate(1, rollout=10), candidate(2)], outside, UpdateState(2),
                             name="signs", channel="stable", version=1)
    assert decision.action == "install"
    assert decision.target is not None and decision.target.version == 1
    assert decision.reason == "install signs v1 as asked"
    failed = UpdateState(2, frozenset({1}))
    refused = choose_update([candidate(1)], PI4, failed, name="signs", channel="stable",
                            version=1)
    assert refused.action == "stay" and "failed here before" in refused.reason
    missing = choose_update([candidate(1)], PI4, failed, name="signs", channel="stable",
                            version=9)
    assert missing.reason == "signs on channel stable has no version 9"


@given(
    versions=st.lists(st.integers(1, 30), min_size=0, max_size=12, unique=True),
    rollouts=st.lists(st.integers(1, 100), min_size=12, max_size=12),
    active=st.one_of(st.none(), st.integers(1, 30)),
    failed=st.frozensets(st.integers(1, 30), max_size=5),
    device_id=st.text(min_size=1, max_size=12),
)
def test_a_chosen_target_is_always_newer_eligible_and_never_failed(
    versions: list[int],
    rollouts: list[int],
    active: int | None,
    failed: frozenset[int],
    device_id: str,
) -> None:
    found = [candidate(v, rollout=r) for v, r in zip(versions, rollouts)]
    device = DeviceFacts(device_id, "raspberry-pi-4", "0.1.0")
    decision = choose_update(found, device, UpdateState(active, failed), name="signs",
                             channel="stable")
    eligible = [
        c.version
        for c in found
        if (active is None or c.version > active)
        and c.version not in failed
        and in_rollout(device_id, "signs", c.version, c.rollout)
    ]
    if eligible:
        assert decision.action == "install" and decision.target is not None
        assert decision.target.version == max(eligible)
    else:
        assert decision.action == "stay" and decision.target is None
    assert decision.reason


# --------------------------------------------------------------------------------------------
# Probation


SETTINGS = ProbationSettings(frames=100)
SHADOW = ProbationSettings(frames=100, shadow=True, min_agreement=0.9)


def test_probation_continues_then_passes() -> None:
    assert judge_probation(ProbationStats(frames=10), SETTINGS).verdict == "continue"
    decision = judge_probation(ProbationStats(frames=100, errors=2), SETTINGS)
    assert decision.verdict == "pass"
    assert decision.reason == "probation passed: 100 frames, 2 errors"


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        (ProbationStats(frames=5, errors=3), "3 inference errors in 5 frames"),
        (ProbationStats(frames=5, unclean_restarts=2), "crash loop: 2 restarts"),
        (ProbationStats(frames=5, unclean_restarts=1, watchdog_restarts=1), "the watchdog"),
    ],
)
def test_errors_crash_loops_and_watchdog_roll_back_at_once(
    stats: ProbationStats, reason: str
) -> None:
    decision = judge_probation(stats, SETTINGS)
    assert decision.verdict == "rollback"
    assert reason in decision.reason


def test_one_power_cut_is_forgiven() -> None:
    assert judge_probation(ProbationStats(frames=100, unclean_restarts=1), SETTINGS).verdict == (
        "pass"
    )


def test_shadow_waits_for_enough_comparisons_then_judges() -> None:
    waiting = judge_probation(ProbationStats(frames=100, shadow_compared=20, shadow_agreed=0),
                              SHADOW)
    assert waiting.verdict == "continue"
    assert "waiting for shadow comparisons (20 of 300)" in waiting.reason
    bad = judge_probation(ProbationStats(frames=150, shadow_compared=300, shadow_agreed=240),
                          SHADOW)
    assert bad.verdict == "rollback"
    assert "shadow agreement 80.0% over 300 comparisons" in bad.reason
    assert "below min_agreement 90.0%" in bad.reason
    good = judge_probation(ProbationStats(frames=150, shadow_compared=300, shadow_agreed=285),
                           SHADOW)
    assert good.verdict == "pass"


def test_shadow_gives_up_waiting_and_says_so() -> None:
    decision = judge_probation(ProbationStats(frames=400, shadow_compared=20, shadow_agreed=20),
                               SHADOW)
    assert decision.verdict == "pass"
    assert "inconclusive (20 comparisons, 300 needed)" in decision.reason


def _binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_the_shadow_rule_has_the_error_rates_its_docstring_claims() -> None:
    # Exact binomial tails of the rule at the defaults (300 comparisons, z = 2.326, one look):
    # the largest agreement count that rolls back, and the chance of a rollback at several
    # true agreement rates.
    n, z, m = 300, 2.326, 0.9
    cut = max(k for k in range(n + 1) if agreement_upper_bound(k, n, z) < m)
    assert cut == 257
    assert _binomial_cdf(cut, n, 0.90) < 0.015  # a model exactly at min_agreement
    assert 0.6 < _binomial_cdf(cut, n, 0.85) < 0.7  # 5 points below
    assert _binomial_cdf(cut, n, 0.80) > 0.99  # 10 points below
    assert _binomial_cdf(cut, n, 0.95) < 1e-8  # 5 points above
    cut50 = max(k for k in range(51) if agreement_upper_bound(k, 50, z) < m)
    assert 0.4 < 1 - _binomial_cdf(cut50, 50, 0.80) < 0.5  # too few: 10 below passes often


@given(
    compared=st.integers(1, 2000),
    share=st.floats(0, 1),
    z=st.floats(0.5, 4),
)
def test_the_upper_bound_is_above_the_observed_rate(compared: int, share: float, z: float) -> None:
    agreed = round(share * compared)
    upper = agreement_upper_bound(agreed, compared, z)
    assert agreed / compared <= upper + 1e-12 <= 1 + 1e-12


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        ProbationStats(shadow_compared=1, shadow_agreed=2)
    with pytest.raises(ValueError):
        ProbationStats(frames=-1)
    with pytest.raises(ValueError):
        ProbationSettings(min_agreement=0)
    with pytest.raises(ValueError):
        candidate(1, rollout=0)
    with pytest.raises(ValueError):
        DeviceFacts("", None, "0.1.0")
