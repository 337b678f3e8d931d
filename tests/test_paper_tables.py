"""The paper's Tables 1-5 rebuilt from result records (chapter 8): paper, ours, difference, spread, gaps."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from poisoncure.book import formatting
from poisoncure.book.pages import results_page
from poisoncure.experiments import paper, paper_tables, report, result_files
from poisoncure.experiments.report import DefenseReport, Filtering, Report, Scores


def result(grid, name, params, rep, profile="full", device="NVIDIA H100", commit="abcdef123456"):
    """A result as :func:`result_files.load_results` returns it, with a minimal provenance."""
    return report.Result(grid, name, "k" * 64, profile, params, rep,
                               {"device": device, "commit": commit, "wall_seconds": 500.0})


def record(pair=1, poison="blend", seed=0, rate=0.1, model="resnet18", acc=90.0, trig=5.0, acc_after=88.0,
           trig_after=90.0, ours=(99.0, 95.0), ac=(70.0, 50.0), asr_ours=1.0, asr_ss=2.0, found=True, base_found=None):
    """A minimal ``main`` result with the fields the tables read (rates as (specificity, sensitivity)); the base is
    found with the target unless ``base_found`` says otherwise."""
    rep = Report(5, 1, 50000, 500, Scores(acc, 100 - trig, None, trig), {
        report.POISON_CURE: DefenseReport(
            [5] if found else [], found, Filtering(None, ours[1], ours[0]),
            Scores(acc_after, asr_ours, None, trig_after) if found else None,
            {"ratio": 3.0 if found else 1.2, "base_found": found if base_found is None else base_found}),
        report.CLUSTERING: DefenseReport([], False, Filtering(None, 0.0, 0.0),
                                         details={"smaller_cluster": {"specificity": ac[0], "sensitivity": ac[1]}}),
        report.SPECTRAL: DefenseReport(None, None, Filtering(None, 90.0, 90.0), Scores(89.0, asr_ss))})
    return result("main", f"pair{pair}-{poison}-resnet18-r0.1-s{seed}",
                  {"poison": poison, "recipe": {"pair": pair, "seed": seed, "poison_rate": rate, "model": model}}, rep)


def test_before_after_table_puts_paper_ours_and_difference_side_by_side():
    rows = paper_tables.experiment_rows([record(pair=2, acc=91.0, trig=4.0), record(pair=2, seed=1, acc=93.0, trig=6.0),
                                         record(pair=5, poison="pixel")])
    t1 = paper_tables.before_after_table(rows, "blend")
    assert len(t1) == 9 and t1.index[1] == paper_tables.pair_label(2) == "2: ship→frog"
    p_acc, p_trig = paper.before("blend", 2)
    row = t1.loc["2: ship→frog"]
    assert row[("before: all", "paper")] == p_acc
    assert row[("before: all", "ours")] == pytest.approx(92.0)  # mean of the two seeds
    assert row[("before: all", "Δ")] == pytest.approx(92.0 - p_acc)
    assert row[("before: all", "± sd")] == pytest.approx(np.std([91.0, 93.0], ddof=1))
    assert row[("", "seeds")] == 2
    assert row[("after: all", "paper")] == paper.after("blend", 2)[0]
    # pairs without a blend result: the paper's number, no ours, no difference
    empty = t1.loc[paper_tables.pair_label(5)]
    assert empty[("before: all", "paper")] == paper.before("blend", 5)[0] and math.isnan(empty[("before: all", "ours")])
    assert empty[("", "seeds")] == 0
    # one seed per row: no spread column
    t2 = paper_tables.before_after_table(rows, "pixel")
    assert ("before: all", "± sd") not in t2.columns
    assert t2.loc[paper_tables.pair_label(5), ("before: triggered", "ours")] == 5.0


def test_shown_tables_put_the_spread_inside_the_ours_cell_and_dash_what_was_not_measured():
    """The page's view of Tables 1-4: a row with several seeds reads "mean ± sd" in its "ours" cell, other rows their
    mean; no "± sd" column is left (it made Tables 2 and 4 wider than the text column); numbers rounded, NaN a dash."""
    rows = paper_tables.experiment_rows([record(pair=2, acc=91.0, trig=4.0), record(pair=2, seed=1, acc=93.0, trig=6.0),
                                         record(pair=5), record(pair=5, poison="pixel")])
    t1 = paper_tables.before_after_table(rows, "blend")
    s1 = results_page.shown(t1)
    assert not any(c[1] == "± sd" for c in s1.columns) and any(c[1] == "± sd" for c in t1.columns)
    assert list(s1.index) == list(t1.index) and len(s1.columns) == len(t1.columns) - 4
    sd = np.std([91.0, 93.0], ddof=1)
    assert s1.loc["2: ship→frog", ("before: all", "ours")] == f"92.0 ± {sd:.1f}"
    assert s1.loc["2: ship→frog", ("before: all", "Δ")] == round(t1.loc["2: ship→frog", ("before: all", "Δ")], 1)
    five = paper_tables.pair_label(5)
    assert s1.loc[five, ("before: all", "ours")] == round(t1.loc[five, ("before: all", "ours")], 1)  # one seed
    assert s1.loc[paper_tables.pair_label(3), ("before: all", "ours")] == formatting.MISSING
    assert s1.loc[paper_tables.pair_label(3), ("", "seeds")] == 0
    # a table without several seeds only gets rounded and dashed
    t2 = paper_tables.before_after_table(rows, "pixel")
    s2 = results_page.shown(t2)
    assert list(s2.columns) == list(t2.columns)
    assert s2.loc[paper_tables.pair_label(1), ("before: all", "ours")] == formatting.MISSING


def test_formatting_rounds_numbers_dashes_what_is_missing_and_keeps_text():
    """The one convention every page's table uses: rounded numbers, a dash for NaN, text unchanged; a mean and its
    spread with spaces around "±" (a browser may break a narrow cell there)."""
    frame = pd.DataFrame({"acc": [83.456, np.nan], "source": ["committed file", "live"], "n": [3, 1]})
    shown = formatting.rounded(frame, 1)
    assert shown["acc"].tolist() == [83.5, formatting.MISSING]
    assert shown["source"].tolist() == ["committed file", "live"] and shown["n"].tolist() == [3, 1]
    assert formatting.rounded(frame, 2).loc[0, "acc"] == 83.46
    assert formatting.dashed(frame).loc[0, "acc"] == 83.456 and formatting.dashed(frame).loc[1, "acc"] == "—"
    assert formatting.mean_sd(66.66, 57.74) == "66.7 ± 57.7" and formatting.mean_sd(99.0, 0.5, 0) == "99 ± 0"


def test_detection_table_reads_ac_smaller_cluster_and_a_missed_target():
    rows = paper_tables.experiment_rows([record(pair=3, ours=(100.0, 0.0), ac=(62.0, 99.0), found=False)])
    t3 = paper_tables.detection_table(rows, "blend")
    row = t3.loc[paper_tables.pair_label(3)]
    spec_p, sens_p = paper.detection("blend", 3, "ac")
    assert row[("AC: specificity", "ours")] == 62.0 and row[("AC: specificity", "paper")] == spec_p
    assert row[("AC: sensitivity", "Δ")] == pytest.approx(99.0 - sens_p)
    assert row[("ours: sensitivity", "ours")] == 0.0
    # no neutralization when nothing was flagged: the model is left unchanged, so after = before (not empty, not 0)
    t1 = paper_tables.before_after_table(rows, "blend")
    assert t1.loc[paper_tables.pair_label(3), ("after: all", "ours")] == rows.loc[0, "before: all"] == 90.0
    assert rows.loc[0, "ASR after ours"] == rows.loc[0, "ASR before"] and not rows.loc[0, "repaired"]
    assert paper_tables.coverage(rows, [rows.loc[0, "name"]]).iloc[0, 0] == "missed (model left unchanged)"


def test_final_asr_table_shows_both_poisons_without_a_difference():
    rows = paper_tables.experiment_rows([record(pair=1, asr_ours=0.8, asr_ss=1.5),
                                         record(pair=1, poison="pixel", asr_ours=0.2, asr_ss=0.0)])
    t5 = paper_tables.final_asr_table(rows)
    row = t5.loc[paper_tables.pair_label(1)]
    assert row[("ours", "paper")] == paper.final_asr(1, "ours") and row[("SS", "paper")] == paper.final_asr(1, "ss")
    assert (row[("ours", "ours, blend")], row[("ours", "ours, pixel")]) == (0.8, 0.2)
    assert (row[("SS", "ours, blend")], row[("SS", "ours, pixel")]) == (1.5, 0.0)
    assert not any(sub == "Δ" for _, sub in t5.columns)


def test_large_gaps_lists_exactly_the_cells_beyond_the_tolerance():
    p_acc = paper.before("blend", 1)[0]
    rows = paper_tables.experiment_rows([record(pair=1, acc=p_acc - 4.5, trig=paper.before("blend", 1)[1] + 1.0,
                                                acc_after=paper.after("blend", 1)[0],
                                                trig_after=paper.after("blend", 1)[1])])
    t1 = paper_tables.before_after_table(rows, "blend")
    gaps = paper_tables.large_gaps({"T1": t1}, tolerance=3.0)
    assert gaps["quantity"].tolist() == ["before: all"]
    assert gaps["Δ"].iloc[0] == pytest.approx(-4.5)
    assert len(paper_tables.large_gaps({"T1": t1}, tolerance=0.5)) == 2  # the triggered cell (+1) joins
    with pytest.raises(ValueError):
        paper_tables.large_gaps({"T1": t1}, tolerance=-1)


def test_tables_keep_one_rate_and_refuse_mixed_models():
    rows = paper_tables.experiment_rows([record(pair=1, acc=90.0), record(pair=1, rate=0.05, acc=80.0)])
    t = paper_tables.before_after_table(rows, "blend")
    assert t.loc[paper_tables.pair_label(1), ("before: all", "ours")] == 90.0  # the 5 % run is another table
    assert paper_tables.before_after_table(rows, "blend", rate=0.05).loc[paper_tables.pair_label(1),
                                                                          ("before: all", "ours")] == 80.0
    mixed = paper_tables.experiment_rows([record(pair=1), record(pair=2, model="vgg19")])
    with pytest.raises(ValueError, match="model"):
        paper_tables.detection_table(mixed, "blend")
    assert paper_tables.final_asr_table(mixed, model="vgg19").loc[paper_tables.pair_label(2),
                                                                  ("ours", "ours, blend")] == 1.0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="main"):
        paper_tables.experiment_rows([dataclasses.replace(record(), grid="reverse")])
    rows = paper_tables.experiment_rows([record()])
    with pytest.raises(ValueError, match="poison"):
        paper_tables.before_after_table(rows, "patch")
    with pytest.raises(ValueError, match="poison"):
        paper_tables.detection_table(rows, "clean")


def test_coverage_marks_missing_experiments():
    rows = paper_tables.experiment_rows([record(pair=1), record(pair=3, found=False)])
    cov = paper_tables.coverage(rows, [f"pair{k}-{p}-resnet18-r0.1-s0" for p in ("blend", "pixel") for k in (1, 2, 3)])
    blend, pixel = "blend · ResNet-18 · 10 %", "one pixel · ResNet-18 · 10 %"  # one seed: not in the labels
    assert cov.shape == (3, 2) and list(cov.columns) == [blend, pixel]
    assert list(cov.index) == [paper_tables.pair_label(k) for k in (1, 2, 3)]
    assert paper_tables.experiment_label("pixel-resnet18-r0.1-s2") == "one pixel · ResNet-18 · 10 % · seed 2"
    assert paper_tables.experiment_label("blend-whitened_net16-s1") == "blend · whitened fast network 16 · seed 1"
    assert cov[blend].tolist() == ["target and base", "missing", "missed (model left unchanged)"]
    assert set(cov[pixel]) == {"missing"}
    assert paper_tables.experiment_label("odd-name") == "odd-name"
    with pytest.raises(ValueError, match="main-grid"):
        paper_tables.coverage(rows, ["chessboard-resnet18-s0"])


def test_committed_results_fill_the_tables_with_their_own_numbers():
    records = result_files.load_results("full", "main")
    if not records:
        pytest.skip("no committed results/full/main")
    rows = paper_tables.experiment_rows(records)
    for rec in records:
        poison, pair = rec.params["poison"], rec.params["recipe"]["pair"]
        t = paper_tables.before_after_table(rows, poison)
        assert t.loc[paper_tables.pair_label(pair), ("before: all", "ours")] == \
            pytest.approx(rec.report.before.clean_accuracy)
    assert "missing" not in paper_tables.coverage(rows, [r.name for r in records]).to_numpy()


def compare_record(poison="pixel", pair=2, details=True):
    """A minimal ``compare`` result: held-out scores, the paper's method's target-class details, AC's smaller cluster,
    Spectral Signatures' retraining (every label scanned)."""
    ours_details = {"ratio": 4.0, "base_found": True, "distances": [0.1] * 10, "candidate": 6, "poisoned": True,
                    "base": 8, "target_class": {"specificity": 99.5, "sensitivity": 98.0, "flagged": 505}}
    rep = Report(6, 8, 50000, 500, Scores(83.0, 99.0, None, 1.0, test_set="held-out"), {
        report.POISON_CURE: DefenseReport([6], True, Filtering(505, 98.0, 99.99, 15, 10, "training set"),
                                          Scores(82.0, 0.5, None, 80.0, test_set="held-out"),
                                          ours_details if details else {}),
        report.CLUSTERING: DefenseReport([6], True, Filtering(600, 97.0, 99.8, 110, 15, "training set"),
                                         details={"smaller_cluster": {"specificity": 96.0, "sensitivity": 97.0}}),
        report.SPECTRAL: DefenseReport(None, None, Filtering(7500, 100.0, 85.0, 7000, 0, "training set"),
                                       Scores(78.0, 0.6, test_set="held-out"))})
    return result("compare", f"pair{pair}-{poison}-whitened_net16-s0",
                  {"poison": poison, "recipe": {"pair": pair, "seed": 0, "poison_rate": 0.1, "model": "whitened_net"}},
                  rep, profile="smoke")


def test_compare_results_feed_the_papers_tables_with_their_target_class_numbers():
    """The compare grid's pixel and blend experiments are the paper's grid run with every defense: their rows carry
    the paper's method's detection inside the target class (not its whole-training-set filtering), the other attacks
    are left out, and a file without the target-class details is refused by name, never read as zeros."""
    other = compare_record(poison="chessboard")
    rows = paper_tables.experiment_rows([compare_record(), other, record(pair=3)])
    assert list(rows["grid"]) == ["compare", "main"] and list(rows["pair"]) == [2, 3]
    row = rows.iloc[0]
    assert (row["ours: specificity"], row["ours: sensitivity"]) == (99.5, 98.0)  # inside the target class
    assert (row["AC: specificity"], row["before: all"], row["ASR after SS"]) == (96.0, 83.0, 0.6)
    assert row["base found"] and row["ratio"] == 4.0 and row["after: triggered"] == 80.0
    t4 = paper_tables.detection_table(rows[rows["grid"] == "compare"], "pixel")
    assert t4.loc[paper_tables.pair_label(2), ("ours: sensitivity", "ours")] == 98.0
    with pytest.raises(ValueError, match="pair2-pixel-whitened_net16-s0: .*predates"):
        paper_tables.experiment_rows([compare_record(details=False)])


def test_compare_files_without_the_details_are_shown_as_refused_not_missing_and_never_read():
    """Chapter 8 reads the compare grid: a file that predates the target-class details is named as refused in the
    coverage grid (and left out of the tables), a readable one fills its cell; an attack outside the paper's grid
    never counts as refused; a seed the plan does not have reads as not planned."""
    old, new = compare_record(pair=2, details=False), compare_record(pair=3)
    other = compare_record(poison="chessboard", details=False)
    usable, refused = paper_tables.readable([old, new, other])
    assert refused == [old.name] and [r.name for r in usable] == [new.name, other.name]
    rows = paper_tables.experiment_rows(usable)
    assert list(rows["name"]) == [new.name]
    planned = [old.name, new.name, "pair4-pixel-whitened_net16-s0", "pair3-pixel-whitened_net16-s1",
               "pair3-blend-whitened_net16-s0"]
    cover = paper_tables.coverage(rows, planned, refused)
    pixel, blend = "one pixel · whitened fast network 16", "blend · whitened fast network 16"
    assert list(cover.columns) == [pixel, blend]
    # several seeds planned: each row names its seed
    assert list(cover.index) == [f"{paper_tables.pair_label(k)} · seed {seed}"
                                 for k, seed in ((2, 0), (3, 0), (3, 1), (4, 0))]
    assert cover.loc[f"{paper_tables.pair_label(2)} · seed 0", pixel] == paper_tables.PREDATES
    assert cover.loc[f"{paper_tables.pair_label(3)} · seed 0", pixel] == "target and base"
    assert cover.loc[f"{paper_tables.pair_label(3)} · seed 1", pixel] == "missing"
    assert cover.loc[f"{paper_tables.pair_label(4)} · seed 0", pixel] == "missing"
    assert cover.loc[f"{paper_tables.pair_label(3)} · seed 1", blend] == paper_tables.NOT_PLANNED


def test_the_papers_grid_in_the_compare_plan_is_its_one_pixel_and_blend_experiments_on_the_pairs():
    from poisoncure.experiments import plans

    names = paper_tables.paper_grid_names(plans.plan("smoke", ["compare"]))
    assert len(names) == 22 and len(set(names)) == 22  # 9 pairs × 2 triggers, pair 1 with 3 seeds
    assert all(n.split("-")[1] in paper_tables.POISONS and n.startswith("pair") for n in names)
    main = plans.plan("cpu-cnn", ["main"])
    assert paper_tables.paper_grid_names(main) == [e.name for e in main]


def test_a_compare_scan_that_flagged_nothing_left_the_model_unchanged_even_though_its_after_is_scored():
    """The compare grid evaluates the model after every defense, also the unchanged one where the paper's scan flagged
    no class: that row is not a repair (coverage: 'model left unchanged', not 'a wrong class repaired')."""
    rec = compare_record(pair=5, poison="blend")
    ours = rec.report.defenses[report.POISON_CURE]
    quiet = dataclasses.replace(ours, labels=[], names_target=False,
                                details={**ours.details, "poisoned": False, "base_found": False, "ratio": 1.15},
                                after=rec.report.before)
    rec = dataclasses.replace(rec, report=dataclasses.replace(
        rec.report, defenses={**rec.report.defenses, report.POISON_CURE: quiet}))
    rows = paper_tables.experiment_rows([rec])
    assert not rows.loc[0, "repaired"] and rows.loc[0, "after: all"] == rows.loc[0, "before: all"]
    cover = paper_tables.coverage(rows, [rec.name])
    assert cover.iloc[0, 0] == "missed (model left unchanged)"


def test_a_table_reads_check_marks_and_dashes_not_pythons_words():
    """``for_reading``: booleans become ✓ / ✗ and NaN / None a dash, in the columns that hold them only; a number
    column keeps its dtype (so pandas still formats it), and text that merely reads "True" stays."""
    frame = pd.DataFrame({"R": [4.12, 1.15], "flagged": [True, False], "right target": [np.bool_(True), np.nan],
                          "base": ["ship", None], "written": ["True", "None"]})
    shown = formatting.for_reading(frame)
    assert shown["flagged"].tolist() == [formatting.YES, formatting.NO]
    assert shown["right target"].tolist() == [formatting.YES, formatting.MISSING]
    assert shown["base"].tolist() == ["ship", formatting.MISSING]
    assert shown["written"].tolist() == ["True", "None"]
    assert shown["R"].dtype == np.float64 and shown["R"].tolist() == [4.12, 1.15]
    assert frame["flagged"].dtype == bool  # the input is not changed


def test_a_notebook_kernel_shows_every_dataframe_in_the_books_conventions(monkeypatch):
    """``set_style`` (every chapter calls it) makes ``for_reading`` the HTML of any DataFrame a kernel displays,
    glued or not; outside a kernel nothing is installed."""
    import warnings

    import IPython
    from IPython.core.interactiveshell import InteractiveShell

    from poisoncure.book import plots

    assert plots.tables_for_reading() is False  # pytest is no IPython kernel
    shell = InteractiveShell.instance()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # set_style redirects it in a kernel
    frame = pd.DataFrame({"flagged": [True, False], "acc": [83.4, np.nan]}, index=["blend", "pixel"])
    html = shell.display_formatter.format(frame)[0]["text/html"]
    assert ">True<" in html  # IPython's own display, before
    try:
        plots.set_style()
        html = shell.display_formatter.format(frame)[0]["text/html"]
        assert ">True<" not in html and ">False<" not in html and ">NaN<" not in html
        assert f">{formatting.YES}<" in html and f">{formatting.NO}<" in html and f">{formatting.MISSING}<" in html
    finally:
        shell.display_formatter.formatters["text/html"].pop(pd.DataFrame, None)
        InteractiveShell.clear_instance()


def test_the_wrong_base_sentence_reads_the_experiments_that_named_another_base():
    """Chapter 8 ties a wrong base class to its filtering and repair numbers: only repaired experiments whose target
    was found but not the base are named, with their sensitivity, attack success after and accuracy on the triggered
    base images after, beside the medians of those where both were found; the ones whose triggered images did not go
    back to their class are called moved, not removed; nothing when no such experiment exists."""
    rows = pd.DataFrame({
        "pair": [1, 2, 3, 4, 5, 6], "poison": ["blend", "blend", "pixel", "blend", "blend", "blend"],
        "target found": [True, True, True, True, False, True], "base found": [True, True, True, False, False, False],
        "repaired": [True, True, True, True, False, True],
        "ours: sensitivity": [95.0, 97.0, 99.0, 51.8, 0.0, 88.6], "ASR after ours": [1.0, 2.0, 0.5, 19.8, 90.0, 1.2],
        "after: triggered": [90.0, 92.0, 96.0, 65.2, 6.4, 5.7]})
    text = results_page.wrong_base_text(rows)
    assert "(blend on pairs 4, 6)" in text and "sensitivity blend on pairs 4 (51.8 %), 6 (88.6 %)" in text
    assert "attack success after the defense blend on pairs 4 (19.8 %), 6 (1.2 %)" in text
    assert "classified as their class after it blend on pairs 4 (65.2 %), 6 (5.7 %)" in text
    assert "medians of 97.0, 1.0 and 92.0 % over the 3 experiments where both were found" in text
    assert "the backdoor was moved rather than removed (blend on pair 6)" in text  # 65.2 % went back: not moved
    assert "pair 5" not in text  # not found and not repaired: the claim above it names that miss
    assert "moved" not in results_page.wrong_base_text(rows[rows["pair"] != 6])
    assert results_page.wrong_base_text(rows[rows["base found"] | ~rows["target found"]]) == ""


def test_every_large_gap_gets_the_cause_its_own_experiments_point_to():
    """Chapter 8 explains each cell beyond the tolerance from the experiments behind it, not by the kind of
    quantity alone: one experiment per cause, placed against the paper's numbers."""
    b = {k: paper.before("blend", k) for k in range(1, 10)}
    a = {k: paper.after("blend", k) for k in range(1, 10)}
    d = {k: paper.detection("blend", k) for k in range(1, 10)}  # (specificity, sensitivity)
    recs = [
        # 1: clean accuracy 5 points low before and after (carried over); learned more firmly; repaired well, triggered
        # images back at 8 points above the paper's; the filter catches 5 points more (mixture boundary)
        record(pair=1, acc=b[1][0] - 5, trig=b[1][1] - 4, acc_after=a[1][0] - 5, trig_after=a[1][1] + 8,
               ours=(d[1][0], d[1][1] + 5), ac=(70.7, 46.6)),
        # 2: same clean accuracy before, 5 points lost by the repair (repair cost); learned less firmly
        record(pair=2, acc=b[2][0], trig=b[2][1] + 20, acc_after=a[2][0] - 5, trig_after=a[2][1], ours=d[2],
               ac=(73.4, 96.2)),
        # 3: not learned (attack success 10 %)
        record(pair=3, acc=b[3][0], trig=90.0, acc_after=a[3][0], trig_after=90.0, found=False, ours=(100.0, 0.0),
               ac=(99.8, 93.4)),
        # 4: learned, but the scan named nothing: no repair, the backdoor stays
        record(pair=4, acc=b[4][0], trig=b[4][1], trig_after=b[4][1], found=False, ours=(100.0, 0.0),
               ac=(50.6, 13.0)),
        # 5: target found, a wrong base: the backdoor moved (5.7 % back in their class), sensitivity 30 points low
        record(pair=5, acc=b[5][0], trig=b[5][1], acc_after=a[5][0], trig_after=5.7, base_found=False,
               ours=(d[5][0], d[5][1] - 30), ac=(72.4, 70.8)),
        # 6: target and base found, repaired, but 30 % attack success left
        record(pair=6, acc=b[6][0], trig=b[6][1], acc_after=a[6][0], trig_after=60.0, asr_ours=30.0, ours=d[6],
               ac=(68.4 + 20, 79.8)),
        # 7: a wrong base, yet the triggered images went back to their class (8 points above the paper's): the repair
        # worked; the filter caught 10 points less
        record(pair=7, acc=b[7][0], trig=b[7][1], acc_after=a[7][0], trig_after=a[7][1] + 8, base_found=False,
               ours=(d[7][0], d[7][1] - 10), ac=(59.2, 6.4))]
    rows = paper_tables.experiment_rows(recs)
    tables = {"T1": paper_tables.before_after_table(rows, "blend"), "T3": paper_tables.detection_table(rows, "blend")}
    gaps = paper_tables.large_gaps(tables, 3.0)
    causes = results_page.gap_causes(gaps, rows, tables, 3.0)
    got = {(g["table"], int(g["pair"].split(":")[0]), g["quantity"]): c
           for (_, g), c in zip(gaps.iterrows(), causes, strict=True)}
    expected = {
        ("T1", 1, "before: all"): "network and training", ("T1", 1, "after: all"): "carried over",
        ("T1", 1, "before: triggered"): "learned more firmly", ("T1", 1, "after: triggered"): "base-class accuracy",
        ("T3", 1, "ours: sensitivity"): "mixture boundary",
        ("T1", 2, "after: all"): "repair cost", ("T1", 2, "before: triggered"): "learned less firmly",
        ("T1", 3, "before: triggered"): "not learned", ("T1", 3, "after: triggered"): "not learned",
        ("T3", 3, "ours: sensitivity"): "not learned",
        ("T1", 4, "after: triggered"): "scan missed", ("T3", 4, "ours: sensitivity"): "scan missed",
        ("T1", 5, "after: triggered"): "backdoor moved", ("T3", 5, "ours: sensitivity"): "wrong base",
        ("T1", 6, "after: triggered"): "backdoor left", ("T3", 6, "AC: specificity"): "AC clusters",
        ("T1", 7, "after: triggered"): "base-class accuracy", ("T3", 7, "ours: sensitivity"): "wrong base"}
    assert got == expected
    assert set(causes) <= set(results_page.CAUSES)
    explained = results_page.cause_table(gaps, causes)
    assert list(explained.index) == [c for c in results_page.CAUSES if c in set(causes)]  # the order of CAUSES
    assert explained.loc["not learned", "cells (table, pairs)"] == "T1 3; T3 3"
    assert explained.loc["wrong base", "what it means"] == results_page.CAUSES["wrong base"]
    # a cell with no experiment behind it cannot be explained
    with pytest.raises(ValueError, match="no experiment"):
        results_page.gap_causes(gaps, rows[rows["pair"] != 6], tables, 3.0)


def test_runs_of_consecutive_numbers_read_as_ranges():
    assert formatting.runs([1, 2, 3, 4, 6, 8, 9]) == "1–4, 6, 8, 9"
    assert formatting.runs([1, 2]) == "1, 2" and formatting.runs([5]) == "5" and formatting.runs([]) == ""
    assert formatting.runs([1, 2, 3, 5, 6, 7]) == "1–3, 5–7"


# ------------------------------------------------------------------- why a pair's one pixel is learned or not
def grey_images(n: int, grey: np.ndarray, seed: int = 0, colour_noise: float = 1.0) -> np.ndarray:
    """uint8 (n, 32, 32, 3) images whose patches vary mostly in brightness, as natural patches do: around ``grey``
    (one level per image) a blocky grey field and grey pixel noise (the same in the three channels), plus a little
    independent noise per channel (``colour_noise``)."""
    rng = np.random.default_rng(seed)
    field = np.stack([np.kron(c, np.ones((4, 4))) for c in rng.normal(0.0, 30.0, (n, 8, 8))])
    field += rng.normal(0.0, 8.0, (n, 32, 32))
    x = grey[:, None, None, None] + field[..., None] + rng.normal(0.0, colour_noise, (n, 32, 32, 3))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_whitening_amplifies_a_change_of_hue_far_more_than_a_change_of_brightness():
    """The contrast chapters 2 and 8 measure: on images whose patches vary mostly in brightness, a pixel change of
    hue moves a whitened patch many times further than a brightness change of the same length, while on the raw
    pixels the two are alike."""
    import torch

    from poisoncure import models, train

    x = grey_images(400, np.full(400, 120.0))
    stem = models.PatchWhitening(3, 2)
    norm = models.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    stem.fit(norm(train.to_float(torch.from_numpy(x))))
    step = 40.0 / np.sqrt(3)
    changes = {"brightness": np.array([step, step, step]),
               "hue": np.array([step * np.sqrt(1.5), -step * np.sqrt(1.5), 0.0])}  # the same length, 40
    seen = {}
    for name, change in changes.items():
        y = x.astype(np.float64)
        y[:, 16, 16, :] += change
        y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
        seen[name] = models.trigger_contrast(stem, norm, train.to_float(torch.from_numpy(x)),
                                             train.to_float(torch.from_numpy(y)))
    raw = seen["hue"]["raw"].median() / seen["brightness"]["raw"].median()
    white = seen["hue"]["whitened"].median() / seen["brightness"]["whitened"].median()
    assert 0.8 < raw < 1.25, raw
    assert white > 4.0, white  # measured 16.4 (seeds 0-2 alike)


def test_pair_trigger_contrast_measures_each_pairs_own_trigger_on_its_base_class():
    """One row per pair, with that pair's trigger; the brightness share is read on the pair's base-class images
    (each class here has its own grey level, so the base class and the target give different shares), the whitened
    contrast of these hue-rich pixels exceeds the raw one on images that vary mostly in brightness; a blend is
    measured with its own pattern and opacity."""
    from poisoncure import attacks, data

    levels = 25.0 * np.arange(10)
    y = np.repeat(np.arange(10), 30)
    test = data.ImageSet(grey_images(len(y), levels[y], seed=1, colour_noise=0.5), y)
    train_y = np.repeat(np.arange(10), 60)
    train_set = data.ImageSet(grey_images(len(train_y), levels[train_y], seed=2), train_y)
    frame = paper_tables.pair_trigger_contrast(train_set, test, "pixel", per_class=30)
    assert list(frame.index) == list(attacks.PAPER_PAIRS)
    tested = 0
    for pair, (base, target) in attacks.PAPER_PAIRS.items():
        t = attacks.random_pixel_trigger(seed=1000 + pair)
        row = frame.loc[pair]
        assert row["trigger"] == f"colour {t.colour} at {(t.row, t.col)}" and row["base → target"] == f"{base}→{target}"

        def share(level, colour=t.colour):
            d = np.asarray(colour, float) - level
            return d.sum() ** 2 / 3 / (d ** 2).sum()
        b, other = attacks.class_index(base), attacks.class_index(target)
        # the grey field moves each pixel around the class's level: a test only where the base class and the target
        # class would give clearly different shares
        if abs(share(levels[b]) - share(levels[other])) > 0.15:
            tested += 1
            assert abs(row["brightness share"] - share(levels[b])) < abs(row["brightness share"] - share(levels[other]))
    assert tested >= 3, tested
    assert frame["brightness share"].between(0.0, 1.0).all()
    assert (frame["whitened"] > frame["raw"]).all()
    blend = paper_tables.pair_trigger_contrast(train_set, test, "blend", per_class=30, blend_source="noise",
                                               opacity=0.1)
    assert blend["trigger"].tolist() == [f"{1000 + k} at 10 %" for k in range(1, 10)]
    assert blend["brightness share"].between(0.0, 1.0).all() and (blend["raw"] != frame["raw"]).all()
    again = paper_tables.pair_trigger_contrast(train_set, test, "pixel", per_class=30,
                                               whitening=paper_tables.fitted_whitening(train_set))
    pd.testing.assert_frame_equal(again, frame)  # a whitening fitted once for several calls is the same one
    with pytest.raises(ValueError, match="per_class"):
        paper_tables.pair_trigger_contrast(train_set, test, per_class=0)
    with pytest.raises(ValueError, match="poison"):
        paper_tables.pair_trigger_contrast(train_set, test, "patch")


def pixel_frame(whitened, share, raw=None):
    """A :func:`paper_tables.pair_trigger_contrast`-shaped frame for the nine pairs."""
    from poisoncure import attacks

    raw = np.linspace(0.4, 0.9, 9) if raw is None else raw
    return pd.DataFrame({"base → target": [f"{b}→{t}" for b, t in attacks.PAPER_PAIRS.values()],
                         "trigger": [f"colour (30, 33, {k})" for k in range(9)], "brightness share": share,
                         "raw": raw, "whitened": whitened}, index=pd.Index(range(1, 10), name="pair"))


def test_attack_success_averages_seeds_of_one_poison_at_the_rate_and_knows_the_network():
    # record's trig is the triggered images' accuracy: attack success 100 - trig
    sets = {"w": [record(1, "pixel", 0, model="whitened_net", trig=10.0),
                  record(1, "pixel", 1, model="whitened_net", trig=0.0),
                  record(1, "blend", 0, model="whitened_net", trig=90.0),
                  record(2, "pixel", 0, rate=0.05, model="whitened_net", trig=90.0),
                  record(3, "pixel", 0, model="whitened_net", trig=96.0)],
            "c": [record(1, "pixel", 0, model="small_cnn", trig=98.0)], "none": []}
    out = paper_tables.attack_success(sets)
    assert list(zip(out["set"], out["pair"], out["seeds"], strict=True)) == [("w", 1, 2), ("w", 3, 1), ("c", 1, 1)]
    assert out["ASR"].tolist() == [95.0, 4.0, 2.0]
    assert out["whitened"].tolist() == [True, True, False]
    # a blend counts only where it is the trigger the contrast measured (same opacity and image source)
    blend = record(1, "blend", 0, model="whitened_net", trig=90.0)
    other = record(2, "blend", 0, model="whitened_net", trig=90.0)
    other.params["recipe"].update(opacity=0.1, blend_source="skimage")
    blend.params["recipe"].update(opacity=0.2, blend_source="skimage")
    out = paper_tables.attack_success({"w": [blend, other]}, "blend")
    assert out["pair"].tolist() == [1] and out["ASR"].tolist() == [10.0]


def test_the_trigger_sentence_names_the_missed_pairs_with_their_places_and_the_networks_that_see_raw_pixels():
    whitened = np.array([17.0, 16.0, 7.0, 4.2, 10.0, 10.5, 5.2, 9.5, 8.0])
    share = np.array([0.3, 0.5, 0.6, 0.98, 0.8, 0.3, 0.94, 0.65, 0.67])
    contrast = pixel_frame(whitened, share, raw=np.array([0.7, 0.6, 0.4, 0.9, 0.8, 0.6, 0.55, 0.5, 0.45]))
    asr_w = [99.8, 100.0, 95.8, 5.0, 98.8, 98.4, 90.2, 98.0, 95.2]
    asr_c = [1.7, 3.6, 1.5, 44.3, 11.1, 1.3, 41.9, 24.6, 17.2]
    success = pd.DataFrame({"set": ["smoke"] * 9 + ["cpu-cnn"] * 9, "pair": list(range(1, 10)) * 2,
                            "model": ["whitened_net"] * 9 + ["small_cnn"] * 9, "whitened": [True] * 9 + [False] * 9,
                            "ASR": asr_w + asr_c, "seeds": 1})
    text = results_page.trigger_text(contrast, success, {"smoke": "whitened 16", "cpu-cnn": "small CNN"})
    assert "0.95 for smoke (whitened 16, 9 pairs, whitened contrast)" in text
    assert "(small CNN, 9 pairs, raw contrast; " in text and "against the whitened one)" in text
    assert "did not learn the one-pixel trigger of pair 4 (airplane→bird, colour (30, 33, 3): smoke 5.0 %)" in text
    assert "Its whitened contrast (4.2) is the lowest of the 9, and its brightness share (0.98) is the highest of " \
           "the 9: the trigger changes the pixel mostly in brightness (the pairs learned: contrast 5.2–17.0, " \
           "brightness share 0.30–0.94)." in text
    assert "learned pair 4's trigger best (44.3 %; raw contrast the highest of the 9), a pair the whitened" in text
    assert "none of its 9 triggers reached 50 %" in text
    # two missed pairs: places, plural
    two = success.assign(ASR=np.where((success["pair"] == 7) & success["whitened"], 20.0, success["ASR"]))
    text = results_page.trigger_text(contrast, two, {}, "blend")
    assert "Their whitened contrasts (4.20–5.20) are places 1 and 2 from the bottom of the 9, and their " \
           "brightness shares (0.94–0.98) are places 1 and 2 from the top of the 9: the trigger changes the image" \
           in text
    # a missed trigger that changes hue as much as brightness: no word on brightness; a constant column: no correlation
    hue = contrast.assign(**{"brightness share": np.where(contrast.index == 4, 0.4, share)})
    text = results_page.trigger_text(hue, success, {})
    assert "its brightness share (0.40) is" in text and "mostly in brightness" not in text
    flat = success.assign(ASR=np.where(success["set"] == "smoke", 100.0, success["ASR"]))
    assert "— for smoke (smoke, 9 pairs, whitened contrast)" in results_page.trigger_text(contrast, flat, {})
    # a whitened network that learned every trigger: no missed pair, the weakest one named instead
    learned = success.assign(ASR=np.where(success["pair"] == 4, 60.0, success["ASR"]))
    text = results_page.trigger_text(contrast, learned, {})
    assert "did not learn" not in text and "lowest attack success, 60.0 % (pair 4, smoke)" in text
    table = results_page.trigger_table(contrast, success[success["pair"] != 9])
    assert table.loc["4: airplane→bird", ("attack success %", "cpu-cnn")] == 44.3
    assert table.loc["9: cat→dog", ("attack success %", "smoke")] == formatting.MISSING
    fig = results_page.trigger_figure({"pixel": contrast, "blend": contrast}, {"pixel": success, "blend": two})
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("pair 4") == 4 and texts.count("pair 7") == 2  # both panels of each row


def test_the_misses_bracket_tells_a_weak_backdoor_from_a_firmly_learned_one_the_scan_missed():
    rows = pd.DataFrame({"pair": [3, 5, 7], "poison": ["blend", "blend", "pixel"], "ratio": [1.10, 1.07, 1.5],
                         "ASR before": [9.1, 99.1, 95.0]})
    text = results_page.quiet_text(rows, 2.0)
    assert text.startswith(" (where nothing was flagged, the largest ratio stayed below λ = 2: blend on pairs 3 "
                           "(1.10), 5 (1.07); one pixel on pair 7 (1.50)")
    assert "; blend on pair 3 (9.1 %) attack success: a weaker backdoor" in text
    assert "; blend on pair 5 (99.1 %); one pixel on pair 7 (95.0 %) attack success, learned firmly and still " \
           "missed" in text and text.endswith("for one experiment))")
    assert "learned firmly" not in results_page.quiet_text(rows[rows["pair"] == 3], 2.0)
    assert "weaker" not in results_page.quiet_text(rows[rows["pair"] != 3], 2.0)
    assert results_page.quiet_text(rows.iloc[:0], 2.0) == ""
