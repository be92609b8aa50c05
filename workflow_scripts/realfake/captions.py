"""What each result table is: its title and one-line description (the captions of the Snakemake
report's tables and the sections of ``docs/results.md``), and how its columns are shown
(``x_mean``/``x_std`` pairs merged into ``mean ± std``, empty columns left out). Values are shown as
the CSV spells them, never reformatted."""

from __future__ import annotations

import fnmatch
import html
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Section:
    pattern: str  # file name (glob) under results/tables
    title: str
    what: str
    drop: tuple = ()  # columns left out of the printed table (still in the file)


SECTIONS = (
    Section("table1.csv", "Table 1: synthetic, real and real + synthetic training data",
            "Top-1/top-5 % on the real test set, mean ± sample std over seeds; paper numbers beside ours.",
            ("cell", "setting", "top1_per_seed")),
    Section("table2.csv", "Table 2: ablation of the method's components (synthetic only)",
            "Each row adds components (LP latent prior, VG visual guidance, DM distribution matching, FT "
            "fine-tuning); the paper's ImageNet-10/100 numbers beside ours."),
    Section("table3.csv", "Table 3 and Figure 2: scaling the synthetic set",
            "Synthetic only and real + synthetic at every scale; figure `results/figures/fig2_scaling.png`."),
    Section("table4.csv", "Table 4: out-of-distribution test sets", "Top-1 % on each OOD set, every scale."),
    Section("table9.csv", "Table 9: every seed", "Top-1 % per seed; std with ddof 0 as in the paper."),
    Section("table10.csv", "Table 10: attribute accuracy", "Accuracy per attribute and their mean."),
    Section("claims.csv", "The paper's claims, tested on our tables",
            "One-sided exact paired sign-flip test over seeds; `holds` = p < 0.05."),
    Section("table_privacy.csv", "Privacy: LiRA membership inference",
            "AUC and true-positive rates of the three LiRA attacks; figure `results/figures/fig3_lira.png`.",
            ("model",)),
    Section("nearest_*.csv", "Copy check: nearest real image of synthetic queries",
            "Similarity of each query to its nearest real training images; figure `results/figures/fig4_nearest_*.png`."),
    Section("quality.csv", "Synthetic-data quality", "FID, KID, precision and recall per variant; "
            "figure `results/figures/quality.png`."),
    Section("quality_ordering.csv", "Does quality order the variants as accuracy does?",
            "Spearman's rho between each metric and synthetic-only top-1 over the variants."),
    Section("quality_per_class.csv", "Quality per class", "Per-class metrics."),
)


def section_of(file_name: str) -> Section | None:
    """The section whose pattern matches a table's file name (``table1.csv``), or None."""
    return next((s for s in SECTIONS if fnmatch.fnmatch(file_name, s.pattern)), None)


def shown_columns(df: pd.DataFrame, drop=()) -> list[tuple[str, list[str]]]:
    """(header, values) of a CSV read as text: ``x_mean``/``x_std`` pairs as ``mean ± std``, empty
    columns and ``drop`` left out; each value spelled as in the file."""
    df = df.drop(columns=[c for c in drop if c in df.columns])
    df = df.loc[:, [c for c in df.columns if (df[c] != "").any()]]
    cols = []
    for c in df.columns:
        if c.endswith("_std") and c[:-4] + "_mean" in df.columns:
            continue
        if c.endswith("_mean") and c[:-5] + "_std" in df.columns:
            std = df[c[:-5] + "_std"]
            cols.append((c[:-5] + " (mean ± std)", [f"{m} ± {s}" if s else m for m, s in zip(df[c], std)]))
        else:
            cols.append((c, list(df[c])))
    return cols


def read_csv_text(path) -> pd.DataFrame:
    """A result CSV with every value as the text the file holds."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV table ({exc})") from exc


def html_table(df: pd.DataFrame, section: Section | None) -> str:
    """A self-contained HTML page of one table with its caption (the Snakemake report shows HTML
    inline; it offers a CSV only as a download)."""
    cols = shown_columns(df, section.drop if section else ())
    esc = html.escape
    caption = f"<caption><b>{esc(section.title)}</b>. {esc(section.what)}</caption>" if section else ""
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in cols)
    body = "".join("<tr>" + "".join(f"<td>{esc(values[i])}</td>" for _, values in cols) + "</tr>\n"
                   for i in range(len(df)))
    style = ("table{border-collapse:collapse;font:13px sans-serif}caption{text-align:left;padding:4px 0}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}th{background:#eee}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><style>{style}</style></head><body>\n"
            f"<table>{caption}\n<tr>{head}</tr>\n{body}</table>\n</body></html>\n")
