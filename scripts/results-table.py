#!/usr/bin/env python3
"""Print the README's results table from a report's data.json: each checkpoint's behaviour
(sampled at T = 1, all prompts; dt also per S3 bucket) as the mean over training seeds with a 95 % Student-t interval,
the same interval `feedlens report` puts on a number over seeds.

usage: scripts/results-table.py [reports/zoo/data.json]
"""
import json
import math
import sys

T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def interval(xs):
    n = len(xs)
    m = sum(xs) / n
    if n == 1:
        return m, m, m
    if n == 2:
        return m, min(xs), max(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = T975[min(n - 2, len(T975) - 1)] * sd / math.sqrt(n)
    return m, m - h, m + h


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/zoo/data.json"
    data = json.load(open(path))
    rows = {}
    for ck in data["checkpoints"].values():
        for table in ck["behaviour"]:
            if table["decode"] != "T=1" or (table["s3"] != "_" and ck["recipe"] != "dt"):
                continue
            label = ck["name"] if table["s3"] == "_" else f"{ck['name']}, S3 `{table['s3']}`"
            split = dict(table["splits"])["All"]
            rows.setdefault(label, []).append(split)
    keys = ["mean_return", "p_e", "accuracy", "bang_rate", "defection"]
    n = len(data["seeds"])
    print(f"| checkpoint ({n} seeds) | mean return | P(E) | accuracy | `!` rate | defection |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label in sorted(rows):
        cells = []
        for k in keys:
            m, lo, hi = interval([r[k] for r in rows[label]])
            p = 2 if k == "mean_return" else 3
            if k != "mean_return":  # proportions: clipped to [0, 1] as in the report
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            cells.append(f"{m:.{p}f} [{lo:.{p}f}, {hi:.{p}f}]")
        print(f"| {label} | " + " | ".join(cells) + " |")


main()
