"""The result table every benchmark script prints: one row per metric, ours beside the anchors."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Row", "print_table"]


@dataclass
class Row:
    metric: str
    ours: str
    anchors: str
    ratio: str
    target: str
    passed: bool


def print_table(rows: list[Row], ratio_header: str = "ratio") -> None:
    header = ("metric", "ours", "anchor(s)", ratio_header, "target", "pass/fail")
    cells = [header] + [(r.metric, r.ours, r.anchors, r.ratio, r.target,
                         "PASS" if r.passed else "FAIL") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    print("\n".join(lines))
