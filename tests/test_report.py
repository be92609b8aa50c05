"""Table assembly: mean and std over seeds, the right rows, paper numbers beside ours."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from realfake.config import load_config
from realfake.report import crossover, load_metrics, table1, table2, table3, table9

from conftest import REPO


def mini_config(**overrides):
    """config/mini.yaml with tables 1 and 2 at scale 1, the scale write_metrics writes by default."""
    tables = {"scale": 1, "table2_scale": 1, **overrides.pop("tables", {})}
    return load_config(REPO / "config" / "mini.yaml", overrides={"tables": tables, **overrides})


def write_metrics(tmp_path, rows):
    files = []
    for i, (setting, variant, seed, top1, *scale) in enumerate(rows):
        f = tmp_path / f"m{i}.json"
        f.write_text(json.dumps({"dataset": "mini", "setting": setting, "variant": variant,
                                 "scale": str(scale[0] if scale else 1), "seed": seed, "top1": top1, "top5": 100.0}))
        files.append(f)
    return files


def test_table1_mean_std_over_seeds(tmp_path):
    cfg = mini_config()
    rows = []
    for seed, (r, b, o, rs) in enumerate([(90, 30, 50, 92), (92, 34, 52, 94), (94, 32, 54, 96)]):
        rows += [("real", "", seed, r), ("syn", "base", seed, b), ("syn", "ours", seed, o), ("realsyn", "ours", seed, rs)]
    t = table1(load_metrics(write_metrics(tmp_path, rows)), cfg).set_index("row")
    assert t.loc["real only", "top1_mean"] == pytest.approx(92.0)
    assert t.loc["real only", "top1_std"] == pytest.approx(2.0)  # sample std of 90, 92, 94
    assert t.loc["synthetic only: ours", "top1_mean"] == pytest.approx(52.0)
    assert t.loc["real + synthetic: ours", "delta_vs_real"] == pytest.approx(2.0)
    assert (t.n_seeds == 3).all() and np.isnan(t.paper_top1).all()


def test_table10_attribute_accuracy_per_attribute_and_mean(tmp_path):
    from realfake.report import table10

    cfg = mini_config()
    files = []
    cells = {("real", ""): (80, 60), ("syn", "base"): (50, 40), ("syn", "ours"): (70, 50), ("realsyn", "ours"): (84, 62)}
    for seed in (0, 1):
        for (setting, variant), (smile, makeup) in cells.items():
            f = tmp_path / f"{setting}{variant}{seed}.json"
            f.write_text(json.dumps({"dataset": "face", "setting": setting, "variant": variant, "scale": "1",
                                     "seed": seed, "attributes": ["Smiling", "Heavy_Makeup"],
                                     "attr_acc": {"Heavy_Makeup": makeup + 2 * seed, "Smiling": smile}}))
            files.append(f)
    t = table10(load_metrics(files), cfg).set_index(["cell", "attribute"])
    assert t.index.get_level_values("attribute")[:3].tolist() == ["Smiling", "Heavy_Makeup", "mean"]
    assert t.loc[("syn_method", "Heavy_Makeup"), "acc_mean"] == pytest.approx(51.0)
    assert t.loc[("syn_method", "Heavy_Makeup"), "acc_std"] == pytest.approx(np.std([50, 52], ddof=1))
    assert t.loc[("syn_method", "mean"), "acc_mean"] == pytest.approx((70 + 51) / 2)
    assert t.loc[("realsyn_method", "Smiling"), "delta_vs_real"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="without per-attribute accuracy"):
        table10(load_metrics(write_metrics(tmp_path, [("real", "", 0, 90.0), ("syn", "base", 0, 9.0)])), cfg)


def test_table1_missing_cell_is_an_error(tmp_path):
    cfg = mini_config()
    files = write_metrics(tmp_path, [("real", "", 0, 90.0)])
    with pytest.raises(ValueError, match="no metrics for dataset=mini setting=syn variant=base"):
        table1(load_metrics(files), cfg)


def test_table2_flags_and_paper_numbers(tmp_path):
    cfg = mini_config(tables={"scale": 2})  # table 1 at 2x, table 2 at 1x (the metrics' scale)
    rows = [("syn", v, 0, 10.0 + i) for i, v in enumerate(cfg["tables"]["table2_variants"])]
    t = table2(load_metrics(write_metrics(tmp_path, rows)), cfg).set_index("variant")
    assert list(t.loc["ours", ["latent_prior", "visual_guidance", "distribution_matching", "finetune"]]) == [True] * 4
    assert list(t.loc["lp", ["latent_prior", "visual_guidance", "distribution_matching", "finetune"]]) == \
        [True, False, False, False]
    assert t.loc["ours", "paper_in10_top1"] == 90.5 and t.loc["base", "paper_in100_top1"] == 66.0
    assert (t.scale == 1).all()  # table 2's own scale (tables.table2_scale), not table 1's
    # appendix G.5 places the rows: latent prior alone +8.2 / +10.3 over the baseline, FT alone below it
    assert t.loc["lp", "paper_in10_top1"] == 88.0 and t.loc["lp", "paper_in100_top1"] == 76.3
    assert t.loc["ft", "paper_in10_top1"] == 80.8 and t.loc["ft", "paper_in100_top1"] == 73.3
    assert t.paper_in10_top1.notna().all() and t.paper_in100_top1.notna().all()  # all ten rows stored
    assert t.loc["lp", "paper_in10_top1"] - t.loc["base", "paper_in10_top1"] == pytest.approx(8.2)
    assert t.loc["ft_dm", "paper_in100_top1"] - t.loc["ft", "paper_in100_top1"] == pytest.approx(0.5)
    assert t.loc["ours", "paper_in100_top1"] - t.loc["lp", "paper_in100_top1"] == pytest.approx(3.7)


def test_claims_follow_the_numbers(tmp_path):
    """Claims are judged on per-seed paired differences with an exact one-sided sign-flip test."""
    from realfake.report import claims

    cfg = mini_config(seeds=[0, 1, 2, 3, 4])
    rows = []
    per_seed = [(90, 30, 50, 88), (92, 34, 52, 93), (94, 32, 54, 90), (91, 40, 45, 92), (93, 35, 60, 91)]
    for seed, (r, b, o, rs) in enumerate(per_seed):
        rows += [("real", "", seed, r), ("syn", "base", seed, b), ("syn", "ours", seed, o), ("realsyn", "ours", seed, rs)]
    # ablation: lp is 8 above base on every seed; ft_dm and ft differ in sign from seed to seed
    for seed, (_, b, o, _) in enumerate(per_seed):
        acc = {"lp": b + 8, "ft": 35, "ft_vg": 36, "ft_dm": 35 + (1 if seed % 2 else -1), "ft_vg_dm": 37,
               "lp_ft": 45, "lp_ft_vg": 47, "lp_ft_dm": 44}
        rows += [("syn", v, seed, float(a)) for v, a in acc.items()]
    m = load_metrics(write_metrics(tmp_path, rows))
    t1 = table1(m, cfg)
    assert t1.set_index("cell").loc["syn_method", "top1_per_seed"].split() == [f"{o:.4f}" for _, _, o, _ in per_seed]
    c = claims(t1, table2(m, cfg)).set_index("claim")
    win = c.loc["synthetic only: method beats text-to-image baseline"]
    assert win.holds and win.seeds == 5 and win.seeds_positive == 5 and win.p_value == pytest.approx(1 / 32)
    assert win.test == "one-sided exact paired sign-flip test over seeds"
    mix = c.loc["real + synthetic beats real only"]  # -2, +1, -4, +1, -2
    assert not mix.holds and mix.seeds_positive == 2 and mix.delta_top1 == pytest.approx(-1.2)
    lp = c.loc["adding latent prior helps (ablation pairs)"]
    assert lp.pairs == 5 and lp.holds and lp.p_value == pytest.approx(1 / 32)
    dm = c.loc["adding distribution matching helps (ablation pairs)"]
    assert dm.pairs == 4 and not dm.holds and dm.p_value > 0.05


def test_three_seeds_cannot_show_a_claim(tmp_path):
    """With 3 seeds even 3 of 3 positive differences give p = 1/8: the claim is not shown."""
    from realfake.report import claims, sign_flip_p

    assert sign_flip_p([3, -1, 2]) == pytest.approx(2 / 8)  # sums >= 4 of (+-3 +-1 +-2): 6 and 4
    assert sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(1 / 32)
    assert np.isnan(sign_flip_p([4.0]))
    cfg = mini_config()
    rows = []
    for seed in range(3):
        rows += [("real", "", seed, 90), ("syn", "base", seed, 30), ("syn", "ours", seed, 60), ("realsyn", "ours", seed, 95)]
    c = claims(table1(load_metrics(write_metrics(tmp_path, rows)), cfg), None).set_index("claim")
    win = c.loc["synthetic only: method beats text-to-image baseline"]
    assert win.seeds_positive == 3 and win.p_value == pytest.approx(1 / 8) and not win.holds


def test_crossover_interpolates_and_reports_never():
    assert crossover([1, 2, 5, 10], [80, 85, 95, 97], 90.0) == pytest.approx(2 + 5 / 10 * 3)
    assert crossover([1, 2], [91, 95], 90.0) == 1.0
    assert np.isnan(crossover([1, 2, 5], [40, 45, 50], 90.0))


def test_table3_scaling_rows_and_crossover(tmp_path):
    cfg = mini_config(scales=[1, 2, 5])
    rows = []
    for seed in (0, 1):
        rows.append(("real", "", seed, 90.0))
        for k, syn, realsyn in ((1, 80.0, 91.0), (2, 88.0, 92.0), (5, 94.0, 93.0)):
            rows += [("syn", "ours", seed, syn + seed, k), ("realsyn", "ours", seed, realsyn, k)]
    t = table3(load_metrics(write_metrics(tmp_path, rows)), cfg)
    assert len(t) == 6 and list(t[t.setting == "syn"].scale) == [1, 2, 5]
    syn5 = t[(t.setting == "syn") & (t.scale == 5)].iloc[0]
    assert syn5.top1_mean == pytest.approx(94.5) and syn5.delta_vs_real == pytest.approx(4.5)
    # synthetic-only means 80.5, 88.5, 94.5 vs real 90: crossover between 2x and 5x
    assert t.crossover_scale.iloc[0] == pytest.approx(2 + 1.5 / 6 * 3)


def test_table9_lists_every_seed(tmp_path):
    cfg = mini_config()
    rows = []
    for seed, (r, b, o, rs) in enumerate([(90, 30, 50, 92), (92, 34, 52, 94)]):
        rows += [("real", "", seed, r), ("syn", "base", seed, b), ("syn", "ours", seed, o), ("realsyn", "ours", seed, rs)]
    t = table9(load_metrics(write_metrics(tmp_path, rows)), cfg).set_index("cell")
    assert t.loc["syn_method", "top1_seed0"] == 50 and t.loc["syn_method", "top1_seed1"] == 52
    assert t.loc["syn_method", "top1_mean"] == pytest.approx(51.0)


def test_samples_read_dataset_and_variant_from_sidecars(tmp_path):
    """The samples figure takes plain file lists; which dataset and variant each file is comes from the
    .meta.json its stage wrote, and a missing sidecar is named."""
    import json

    from realfake.report import main

    index = tmp_path / "real_index.parquet"
    index.write_bytes(b"")
    man = tmp_path / "manifest.parquet"
    man.write_bytes(b"")
    (tmp_path / "real_index.parquet.meta.json").write_text(json.dumps({"dataset": "a"}))
    (tmp_path / "manifest.parquet.meta.json").write_text(json.dumps({"dataset": "b", "variant": "ours"}))
    args = ["samples", "--cfg", "{}", "--index", str(index), "--manifest", str(man), "--out", str(tmp_path / "s.png")]
    with pytest.raises(ValueError, match="dataset 'b', which no --index file is"):
        main(args)
    (tmp_path / "manifest.parquet.meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.parquet.meta.json not found"):
        main(args)


def test_sample_figure_shows_at_most_twelve_evenly_spaced_classes():
    from realfake.report import shown_classes

    assert shown_classes(range(10)) == list(range(10))
    picked = shown_classes(range(1000))
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 999 and picked == sorted(set(picked))


def test_table9_std_is_the_papers_population_std(tmp_path):
    """The paper's Tab. 9 std is ddof 0 (three runs 90.5/90.8/91.2 give 0.29, not 0.36)."""
    cfg = mini_config()
    rows = []
    for seed, o in enumerate([90.5, 90.8, 91.2]):
        rows += [("real", "", seed, 95.0), ("syn", "base", seed, 40.0), ("syn", "ours", seed, o),
                 ("realsyn", "ours", seed, 96.0)]
    t = table9(load_metrics(write_metrics(tmp_path, rows)), cfg).set_index("cell")
    assert t.loc["syn_method", "top1_std_ddof0"] == pytest.approx(np.std([90.5, 90.8, 91.2]), abs=1e-9)
    assert round(t.loc["syn_method", "top1_std_ddof0"], 2) == 0.29
    assert "top1_std" not in t  # no unlabelled std beside it


def test_table1_shows_every_number_the_paper_text_gives(tmp_path, monkeypatch):
    """IN-10 / IN-100 ours (90.5 / 80.0), IN-1K real (79.6) and the real + synthetic gains (+2.1 /
    +1.9) reach table 1; every stored paper number is read by some table."""
    import realfake.report as report

    cfg = mini_config()
    t = {}
    for ds in ("imagenet10", "imagenet100", "imagenet1k"):
        rows = [("real", "", 0, 90.0), ("syn", "base", 0, 40.0), ("syn", "ours", 0, 80.0), ("realsyn", "ours", 0, 91.0)]
        (tmp_path / ds).mkdir()
        df = load_metrics(write_metrics(tmp_path / ds, rows)).assign(dataset=ds)
        t[ds] = table1(df, cfg).set_index("cell")
    assert t["imagenet10"].loc["syn_method", "paper_top1"] == 90.5
    assert t["imagenet100"].loc["syn_method", "paper_top1"] == 80.0
    assert t["imagenet1k"].loc["real", "paper_top1"] == 79.6
    assert t["imagenet10"].loc["realsyn_method", "paper_delta_vs_real"] == 2.1
    assert t["imagenet100"].loc["realsyn_method", "paper_delta_vs_real"] == 1.9
    assert t["imagenet1k"].loc["syn_method", "paper_delta_vs_real"] == pytest.approx(70.9 - 79.6)
    source = Path(report.__file__).read_text()
    for key in report.PAPER:  # nothing stored goes unread
        assert f'PAPER["{key}"]' in source or f'PAPER.get("{key}"' in source, key


def test_tables_1_to_3_come_with_an_html_page_and_caption_for_the_report(tmp_path):
    """The Snakemake report offers a CSV only as a download; it shows HTML inline. The page holds the
    table as the CSV spells it (mean and std merged), under its caption, with markup escaped."""
    import json

    from conftest import run_cli

    cfg = mini_config()
    rows = []
    for seed, (r, b, o, rs) in enumerate([(90, 30, 50, 92), (92, 34, 52, 94), (94, 32, 54, 96)]):
        rows += [("real", "", seed, r), ("syn", "base", seed, b), ("syn", "ours", seed, o), ("realsyn", "ours", seed, rs)]
    files = write_metrics(tmp_path, rows)
    run_cli("report", "table1", "--cfg", json.dumps(cfg), "--metrics", *map(str, files),
            "--out", str(tmp_path / "table1.csv"), "--html", str(tmp_path / "table1.html"))
    page = (tmp_path / "table1.html").read_text()
    assert "<caption><b>Table 1: synthetic, real and real + synthetic training data</b>" in page
    assert "<th>top1 (mean ± std)</th>" in page and "<td>92.00 ± 2.00</td>" in page  # as table1.csv spells them
    assert page.count("<tr>") == 1 + len(pd.read_csv(tmp_path / "table1.csv"))

    from realfake.captions import html_table, section_of

    odd = html_table(pd.DataFrame({"row": ["<b>x</b> & y"]}), section_of("table2.csv"))
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in odd and "Table 2: ablation" in odd
    assert section_of("nearest_mini.csv").title.startswith("Copy check") and section_of("other.csv") is None
