#!/usr/bin/env python3
"""Print the report's crosscoder scoreboards from a report's data.json as Markdown, for the
README: per pair, per world variable, the held-out AUROC of the best latent of each kind, the
best random direction and the probes, mean over seeds [95 % t interval across them, clipped to
[0, 1]].

usage: scripts/crosscoder-table.py [reports/zoo/data.json]
"""
import json
import sys

COLS = ["any", "a_only", "shared", "b_only", "random", "probe_a", "probe_b"]
HEAD = ["best latent (rel. norm)", "A-only", "shared", "B-only", "random direction", "probe on A", "probe on B"]


def fmt(f):
    if f is None:
        return "—"
    if f["lo"] < f["hi"]:
        # data.json's AUROC intervals come clipped to [0, 1].
        return f"{f['value']:.2f} [{f['lo']:.2f}, {f['hi']:.2f}]"
    return f"{f['value']:.2f}"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/zoo/data.json"
    data = json.load(open(path))
    for c in data["crosscoders"]:
        used = sum(1 for r in c["runs"] if "unused" not in r)
        print(f"**{c['pair']}** ({c['a']} → {c['b']}, {used} runs)\n")
        print("| variable | " + " | ".join(HEAD) + " |")
        print("| --- | " + " | ".join("---" for _ in HEAD) + " |")
        for r in c["rows"]:
            cells = [fmt(x) for x in r["cells"]]
            rn = r.get("any_relative_norm")
            if rn is not None and cells[0] != "—":
                cells[0] += f" ({rn['value']:.2f})"
            print(f"| {r['variable']} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
