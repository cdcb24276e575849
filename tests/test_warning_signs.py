"""Each warning sign fires on data built to trip it and stays silent below its sample size,
saying so in words ("too few to judge (13 requests ...)") instead of "no warning signs"."""

from __future__ import annotations

from blocks.stats import warning_lines
from store.stats import WEEK_HOURS, Report, bucket_index, build_report


def _report(bucket: dict[str, int], weeks: list[tuple[int, dict[str, int]]] | None = None) -> Report:
    return build_report([(0, bucket)], now_s=0, queue_depth=0, oldest_created_s=None, weeks=weeks)


def _codes(r: Report) -> list[str]:
    return [w.code for w in r.warnings]


def _few(r: Report) -> str:
    return " ".join(s.text for s in r.too_few)


def test_escalation_rate_needs_twenty_requests() -> None:
    r = _report({"mode:approve": 12, "mode:auto": 1})  # 92% of 13
    assert _codes(r) == [] and "Escalation rate 92%: too few to judge (13 requests" in _few(r)
    lines = "\n".join(warning_lines(r))
    assert "No warning signs" not in lines and "too few to judge (13 requests" in lines
    r = _report({"mode:approve": 19, "mode:auto": 1})
    assert _codes(r) == ["escalation_high"] and "Escalation rate" not in _few(r)


def test_time_to_escalate_needs_ten_escalations() -> None:
    r = _report({f"tte:{bucket_index(90)}": 9})
    assert _codes(r) == [] and "Time to escalate: too few to judge (9 escalations" in _few(r)
    assert _codes(_report({f"tte:{bucket_index(90)}": 10})) == ["slow_escalation"]


def _weeks(before: tuple[int, int], last: tuple[int, int]) -> list[tuple[int, dict[str, int]]]:
    """Two weeks of hours; `(approved, rejected)` in the first hour of each week."""
    out = [(h, {}) for h in range(2 * WEEK_HOURS)]
    out[0] = (0, {"st:approved": before[0], "st:rejected": before[1]})
    out[WEEK_HOURS] = (WEEK_HOURS, {"st:approved": last[0], "st:rejected": last[1]})
    return out


def test_override_trend_week_over_week() -> None:
    r = _report({}, _weeks((19, 1), (14, 6)))  # 5% -> 30%
    assert "override_rising_weekly" in _codes(r) and "5% the week before, 30%" in r.warnings[-1].text
    assert "override_rising_weekly" not in _codes(_report({}, _weeks((19, 1), (18, 2))))
    assert "override_rising_weekly" not in _codes(_report({}, _weeks((9, 0), (0, 9))))  # 9 a week: too few


def _reviewer(uid: str, n: int, ok: int, *, nt: int = 0, seconds: float = 40) -> dict[str, int]:
    out = {f"rv:{uid}:n": n, f"rv:{uid}:ok": ok, f"rv:{uid}:t{bucket_index(seconds)}": n}
    if nt:
        out[f"rv:{uid}:nt{bucket_index(seconds)}"] = nt
    return out


def test_decisions_faster_than_a_card_can_be_read() -> None:
    r = _report({**_reviewer("U0FAST", 5, 2, nt=5, seconds=1.5)})
    assert _codes(r) == ["rubber_stamp"] and r.warnings[0].user_id == "U0FAST"
    r = _report({**_reviewer("U0FAST", 4, 2, nt=4, seconds=1.5)})
    assert _codes(r) == [] and "too few to judge for 1 reviewers" in _few(r)


def test_approval_rate_near_all_for_a_reviewer_with_many_decisions() -> None:
    r = _report(_reviewer("U0YES", 50, 50))
    assert _codes(r) == ["rubber_stamp"] and "100% of 50" in r.warnings[0].text
    assert _codes(_report(_reviewer("U0YES", 49, 49))) == []


def test_canary_catch_rate() -> None:
    trip = {"canary:n": 5, "canary:caught": 3, "cn:U0A:n": 5, "cn:U0A:caught": 3}
    r = _report(trip)
    assert [(w.code, w.user_id) for w in r.warnings] == [("canary_catch_low", None), ("canary_catch_low", "U0A")]
    assert "Canary catch rate 60% of 5" in r.warnings[0].text
    r = _report({"canary:n": 4, "canary:caught": 0, "cn:U0A:n": 4})
    assert _codes(r) == [] and "Canary catch rate: too few to judge (4 canaries" in _few(r)
    assert _codes(_report({"canary:n": 10, "canary:caught": 9})) == []


def test_the_chart_adds_a_reliability_diagram() -> None:
    import struct
    from dataclasses import replace

    from bot import charts

    def size(png: bytes) -> tuple[int, int]:
        return struct.unpack(">II", png[16:24])  # type: ignore[return-value]

    plain = _report({"mode:approve": 3, "st:approved": 3})
    assert size(charts.png(plain)) == (900, 560)
    with_cal = replace(plain, calibration=[("pay-bot/pay", "0.8", 40, 24), ("pay-bot/pay", "0.5", 12, 3)])
    png = charts.png(with_cal)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and size(png) == (1300, 560)
