#!/usr/bin/env python3
"""Summarize raw wrk outputs written by bench/run.sh into a markdown table.

Usage: summarize.py OUT_DIR   (normally bench/out)

Reads, all written by run.sh:
  OUT_DIR/targets.tsv          name, url, server (one target a line, in run order)
  OUT_DIR/raw/roundN-NAME.txt  `wrk --latency` output of measured round N
  OUT_DIR/rss.tsv              server, peak RSS in KiB (VmHWM)
  OUT_DIR/run.env              key=value facts about the run (optional)
and prints markdown on stdout. Standard library only.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
from pathlib import Path

UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

RE_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
RE_PCT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.M)
RE_SOCK = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
RE_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
RE_REQS = re.compile(r"(\d+) requests in ")


def parse_wrk(text: str) -> dict:
    """Return rps, p50/p99 in ms, request count and error counts (None if absent)."""
    res: dict = {"rps": None, "p50": None, "p99": None, "requests": None}
    if m := RE_RPS.search(text):
        res["rps"] = float(m.group(1))
    for pct, value, unit in RE_PCT.findall(text):
        if pct in ("50", "99"):
            res["p" + pct] = float(value) * UNIT_TO_MS[unit]
    if m := RE_REQS.search(text):
        res["requests"] = int(m.group(1))
    sock = RE_SOCK.search(text)
    res["socket_errors"] = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx = RE_NON2XX.search(text)
    res["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    return res


def read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def read_env(path: Path) -> dict[str, str]:
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key.strip()] = value.strip()
    return env


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def median_ci(values: list[float]) -> tuple[float, float]:
    """A ~95% confidence interval of the median from order statistics
    (distribution-free; 1-based ranks floor(n/2 - 0.98 sqrt(n)) and
    ceil(1 + n/2 + 0.98 sqrt(n)))."""
    v = sorted(values)
    n = len(v)
    lo = max(math.floor(n / 2 - 0.98 * math.sqrt(n)) - 1, 0)
    hi = min(math.ceil(n / 2 + 0.98 * math.sqrt(n)), n - 1)
    return v[lo], v[hi]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def paired_ratios(rows: list[dict]) -> list[tuple[str, list[float]]]:
    """Per-round req/s of every concierge policy route over the baseline's:
    `concierge-open` (same route shape, no policy) when it ran, else the
    plain `concierge` row."""
    by_name = {r["name"]: r for r in rows}
    plain = by_name.get("concierge-open") or by_name.get("concierge")
    if plain is None:
        return []
    out = []
    for r in rows:
        if r["server"] != "concierge" or r["name"] in ("concierge", "concierge-open"):
            continue
        ratios = [
            run["rps"] / plain["rounds"][i]["rps"]
            for i, run in sorted(r["rounds"].items())
            if run["rps"] and plain["rounds"].get(i, {}).get("rps")
        ]
        if ratios:
            out.append((r["name"], ratios))
    return out


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    targets = read_tsv(out / "targets.tsv")
    if not targets:
        print(f"no targets in {out / 'targets.tsv'}", file=sys.stderr)
        return 1
    rss_kib = {row[0]: int(row[1]) for row in read_tsv(out / "rss.tsv") if len(row) >= 2}
    env = read_env(out / "run.env")

    round_re = re.compile(r"^round(\d+)-(.+)\.txt$")
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted((out / "raw").glob("round*-*.txt")):
        if m := round_re.match(path.name):
            runs.setdefault(m.group(2), {})[int(m.group(1))] = parse_wrk(
                path.read_text(errors="replace")
            )

    rows = []
    for name, url, server, *_ in targets:
        per_round = runs.get(name, {})
        ok = [r for r in per_round.values() if r["rps"] is not None]
        rows.append(
            {
                "name": name,
                "url": url,
                "server": server,
                "rounds": per_round,
                "rps": median([r["rps"] for r in ok]),
                "p50": median([r["p50"] for r in ok if r["p50"] is not None]),
                "p99": median([r["p99"] for r in ok if r["p99"] is not None]),
                "non2xx": sum(r["non2xx"] for r in per_round.values()),
                "socket": sum(r["socket_errors"] for r in per_round.values()),
                "failed_rounds": len(per_round) - len(ok),
                "rss": rss_kib.get(server),
            }
        )
    direct = next((r["rps"] for r in rows if r["name"] == "direct"), None)
    # Concierge's other routes (authenticated, rate-limited) are compared with
    # its plain route in the same run.
    plain = next((r["rps"] for r in rows if r["name"] == "concierge"), None)

    lines = ["# Concierge benchmark", ""]
    if env:
        facts = [
            f"{env.get('date', '?')}, git {env.get('git', '?')}",
            f"CPU: {env.get('cpu', '?')} (kernel {env.get('kernel', '?')})",
            f"wrk {env.get('wrk', '?')}: {env.get('rounds', '?')} rounds x "
            f"{env.get('duration', '?')} (warm-up {env.get('warmup', '?')}), "
            f"{env.get('connections', '?')} connections, {env.get('threads', '?')} thread(s), "
            f"pinned to CPU {env.get('client_cpu', '?')}",
            f"servers pinned to CPU {env.get('server_cpu', '?')}; backend threads "
            f"{env.get('backend_threads', '?')}",
        ]
        versions = [f"{k} {env[k]}" for k in ("nginx", "haproxy") if k in env]
        if versions:
            facts.append("versions: " + ", ".join(versions))
        lines += [f"- {f}" for f in facts] + [""]

    lines += [
        "| target | req/s | p50 ms | p99 ms | vs direct | vs concierge | peak RSS MiB | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = r["rps"] / direct if r["rps"] is not None and direct else None
        if r["server"] != "concierge":
            vs_plain_cell = ""
        else:
            vs_plain = r["rps"] / plain if r["rps"] is not None and plain else None
            vs_plain_cell = fmt(vs_plain, ".2f")
        rss = r["rss"] / 1024 if r["rss"] is not None else None
        errors = r["non2xx"] + r["socket"]
        if r["failed_rounds"]:
            errors_cell = f"{errors} ({r['failed_rounds']} failed runs)"
        else:
            errors_cell = str(errors)
        lines.append(
            f"| {r['name']} | {fmt(r['rps'], ',.0f')} | {fmt(r['p50'], '.3f')} | "
            f"{fmt(r['p99'], '.3f')} | {fmt(ratio, '.2f')} | {vs_plain_cell} | {fmt(rss, '.1f')} | "
            f"{errors_cell} |"
        )

    lines += ["", "Per round req/s:", ""]
    n_rounds = max((max(r["rounds"], default=0) for r in rows), default=0)
    lines.append("| target | " + " | ".join(f"round {i}" for i in range(1, n_rounds + 1)) + " |")
    lines.append("| --- |" + " ---: |" * n_rounds)
    for r in rows:
        cells = [fmt(r["rounds"].get(i, {}).get("rps"), ",.0f") for i in range(1, n_rounds + 1)]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")

    paired = paired_ratios(rows)
    names = {r["name"] for r in rows}
    baseline = "concierge-open" if "concierge-open" in names else "concierge"
    if paired:
        lines += [
            "",
            f"Paired ratios: each concierge policy route against `{baseline}` in the",
            "same round (run.sh reverses the target order every other round, so a",
            "machine that speeds up or slows down during a run biases no route):",
            "",
            "| target | rounds | median | 95% CI of the median | lowest quarter | highest quarter | min | max |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for name, ratios in paired:
            q1, _, q3 = quartiles(ratios)
            lo, hi = median_ci(ratios)
            lines.append(
                f"| {name} | {len(ratios)} | {statistics.median(ratios):.2f} | "
                f"{lo:.2f}–{hi:.2f} | {q1:.2f} | {q3:.2f} | {min(ratios):.2f} | "
                f"{max(ratios):.2f} |"
            )

    if any(r["non2xx"] or r["socket"] for r in rows):
        lines += ["", "Errors summed over rounds:", ""]
        for r in rows:
            if r["non2xx"] or r["socket"]:
                lines.append(
                    f"- {r['name']}: {r['non2xx']} non-2xx/3xx responses, "
                    f"{r['socket']} socket errors"
                )

    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
