"""Helpers shared by the benchmark scripts: statistics, machine facts, Airflow home."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements (same unit as the samples)."""

    n: int
    median: float
    minimum: float
    maximum: float
    p90: float

    @classmethod
    def of(cls, samples: list[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        # Nearest-rank 90th percentile: honest for small n (it is a sample that was seen).
        rank = max(0, -(-9 * len(ordered) // 10) - 1)
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            minimum=ordered[0],
            maximum=ordered[-1],
            p90=ordered[rank],
        )


def meminfo_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


def machine_facts(dsn: str) -> list[str]:
    """One line per fact: CPUs, memory, load, Python, PostgreSQL and its memory settings."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("select version()").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "select name, current_setting(name) from pg_settings where name = any(%s)",
                [["shared_buffers", "max_parallel_workers_per_gather", "work_mem", "jit"]],
            ).fetchall()
        )
    memory = meminfo_gib()
    load = os.getloadavg()
    pg_version = str(version[0]).split(" on ")[0] if version else "?"
    return [
        f"CPUs (nproc): {os.cpu_count()}   memory: "
        + (f"{memory:.1f} GiB" if memory is not None else "?")
        + f"   load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"{pg_version}; "
        + ", ".join(f"{name}={value}" for name, value in sorted(settings.items())),
    ]


def load_note() -> str:
    """The 1-minute load average now, to show whether other work ran alongside."""
    return f"load average now: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)"
