"""Which rows the paper's tables have: table 1's rows (shared by tables 9 and 10), read by the
planner (which classifiers to train) and by the report (which rows to write)."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import Tables


@dataclass(frozen=True)
class Row:
    """One row of table 1 (and table 10): its label, the classifier setting and variant behind it,
    and the cell key the paper's numbers and the claims are stored under."""

    label: str
    setting: str
    variant: str
    cell: str


def table1_spec(tables: Tables) -> list[Row]:
    """Table 1's rows (also table 10's and table 9's): real only, the text-to-image baseline, the
    caption baseline when configured, ours synthetic only, the official-guidance variant when
    configured, real + ours."""
    t = tables
    spec = [Row("real only", "real", "", "real"),
            Row(f"synthetic only: {t.table1_baseline}", "syn", t.table1_baseline, "syn_baseline")]
    if t.table1_caption_baseline:
        spec.append(Row(f"synthetic only: {t.table1_caption_baseline}", "syn", t.table1_caption_baseline,
                        "syn_caption_baseline"))
    spec.append(Row(f"synthetic only: {t.table1_method}", "syn", t.table1_method, "syn_method"))
    if t.table1_official:
        spec.append(Row(f"synthetic only: {t.table1_official}", "syn", t.table1_official, "syn_official"))
    spec.append(Row(f"real + synthetic: {t.table1_method}", "realsyn", t.table1_method, "realsyn_method"))
    return spec
