"""The summary both loopback load benchmarks report (KMS and enclave endpoint)."""

from __future__ import annotations

import os
import statistics
from typing import Any


def summarize(
    *,
    clients: int,
    seconds: float,
    wall: float,
    latencies: list[float],
    errors: list[str],
    rss: list[tuple[float, float]],
) -> dict[str, Any]:
    """Throughput, p50/p99 latency, errors and the server's RSS over the run.

    ``rss`` holds (seconds since start, MB) samples; memory is "flat" when the growth
    over the second half of the run is small.
    """
    ordered = sorted(latencies)
    half = [mb for at, mb in rss if at >= seconds / 2] or [rss[-1][1]]
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "requests_per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 2) if ordered else None,
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 2) if ordered else None,
        "errors": len(errors),
        "error_examples": errors[:5],
        "rss_mb_first": round(rss[0][1], 1),
        "rss_mb_last": round(rss[-1][1], 1),
        "rss_mb_max": round(max(mb for _, mb in rss), 1),
        "rss_mb_growth_second_half": round(max(half) - min(half), 1),
        "rss_samples": rss,
        "machine": f"{os.cpu_count()} CPU(s), loopback",
    }


def markdown_table(r: dict[str, Any], *, unit: str = "requests") -> str:
    return (
        f"| clients | seconds | {unit} | {unit}/s | p50 ms | p99 ms | errors"
        " | RSS first/last/max MB | RSS growth 2nd half MB |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
        f"| {r['clients']} | {r['seconds']} | {r['requests']} | {r['requests_per_second']} | "
        f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['rss_mb_first']} / "
        f"{r['rss_mb_last']} / {r['rss_mb_max']} | {r['rss_mb_growth_second_half']} |\n"
    )
