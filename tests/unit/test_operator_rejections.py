"""Refused child creates -> Blocked status, one Event per distinct message, capped exponential backoff."""

from __future__ import annotations

from datetime import UTC, datetime

from thinktune_operator.conditions import get_condition
from thinktune_operator.rejections import BACKOFF_CAP_S, Rejection, backoff_delay, blocked, unblocked

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PC = Rejection(403, "Forbidden", 'no PriorityClass with name "gold" was found', "Pod", "j-a0-w0")


def test_backoff_doubles_and_is_capped():
    delays = [backoff_delay(n) for n in range(1, 15)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert max(delays) == BACKOFF_CAP_S and backoff_delay(10_000) == BACKOFF_CAP_S


def test_blocked_carries_the_server_message_and_events_once_per_message():
    s1, new1 = blocked({"phase": "Pending", "attempt": 0}, PC, NOW, 1)
    assert new1 and s1["phase"] == "Blocked" and s1["attempt"] == 0
    c = get_condition(s1["conditions"], "Blocked")
    assert c["status"] == "True" and c["reason"] == "ChildForbidden"
    assert 'no PriorityClass with name "gold"' in c["message"] and "Pod j-a0-w0" in c["message"]
    s2, new2 = blocked(s1, PC, NOW, 1)
    assert not new2 and s2 == s1  # the same refusal again: no second Event, no status churn
    other = Rejection(
        422, "Invalid", "data: Too long: must have at most 1048576 bytes", "ConfigMap", "j-a0-job"
    )
    s3, new3 = blocked(s2, other, NOW, 2)
    assert new3 and get_condition(s3["conditions"], "Blocked")["reason"] == "ChildInvalid"


def test_unblocked_clears_only_a_set_condition():
    s, was = unblocked({"phase": "Pending"}, NOW, 1)
    assert not was and "conditions" not in s
    b, _ = blocked({}, PC, NOW, 1)
    s, was = unblocked(b, NOW, 2)
    assert was and s["phase"] == "Pending" and get_condition(s["conditions"], "Blocked")["status"] == "False"


def test_conflict_reason():
    r = Rejection(
        409, "AlreadyExists", "ConfigMap x-y-job belongs to FineTuneJob x.y", "ConfigMap", "x-y-job"
    )
    assert r.condition_reason == "ChildConflict"
