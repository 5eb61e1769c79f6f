"""Clock offset of a worker from the master, from NTP-style rounds (pure functions, no I/O)."""
from __future__ import annotations


def estimate_offset(rounds: list) -> dict | None:
    """rounds: (t0 worker send, t1 master receive, t2 master send, t3 worker receive).

    theta = master clock - worker clock. Each round bounds it: t2 - t3 <= theta <= t1 - t0 (a message
    cannot arrive before it was sent). The intersection of the rounds' intervals (the lowest round trips
    bound it most) gives theta at its midpoint and the error bound as its half width. If the intervals do
    not intersect (a clock stepped or drifted), the lowest-round-trip round decides and the error bound
    grows by the disagreement."""
    if not rounds:
        return None
    lo = max(t2 - t3 for t0, t1, t2, t3 in rounds)
    hi = min(t1 - t0 for t0, t1, t2, t3 in rounds)
    rtts = sorted((t3 - t0) - (t2 - t1) for t0, t1, t2, t3 in rounds)
    if lo <= hi:
        theta, err, consistent = (lo + hi) / 2.0, (hi - lo) / 2.0, True
    else:
        t0, t1, t2, t3 = min(rounds, key=lambda r: (r[3] - r[0]) - (r[2] - r[1]))
        theta = ((t1 - t0) + (t2 - t3)) / 2.0
        err, consistent = ((t3 - t0) - (t2 - t1)) / 2.0 + (lo - hi), False
    return {"theta": theta, "error": err, "rounds": len(rounds), "rtt_min": rtts[0],
            "rtt_median": rtts[len(rtts) // 2], "consistent": consistent}


def clock_report(theta_est: dict | None) -> dict | None:
    """The worker's clock as people read it: offset = worker clock - master clock."""
    if theta_est is None:
        return None
    return {"offset_s": round(-theta_est["theta"], 6), "error_bound_s": round(theta_est["error"], 6),
            "rounds": theta_est["rounds"], "rtt_min_ms": round(theta_est["rtt_min"] * 1000, 3),
            "rtt_median_ms": round(theta_est["rtt_median"] * 1000, 3), "consistent": theta_est["consistent"]}
