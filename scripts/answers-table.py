#!/usr/bin/env python3
"""Print the report's answers table (its first page) from a report's data.json as Markdown,
for the README. Every cell is the report's own text; its numbers are in the report's
answers_summary.facts.

usage: scripts/answers-table.py [reports/zoo/data.json]
"""
import json
import sys

COLS = [
    ("question", "question"),
    ("verdict", "verdict"),
    ("key", "key number [95 % interval]"),
    ("location", "where in the network"),
    ("causal", "causal check"),
    ("seeds", "seeds in which it holds"),
    ("caveat", "caveat"),
]


def cell(s):
    return s.replace("|", "\\|")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "reports/zoo/data.json"
    data = json.load(open(path))
    print("| " + " | ".join(h for _, h in COLS) + " |")
    print("| " + " | ".join("---" for _ in COLS) + " |")
    for a in data["answers"]:
        print("| " + " | ".join(cell(a[k]) for k, _ in COLS) + " |")


if __name__ == "__main__":
    main()
