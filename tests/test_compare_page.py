"""The all-defenses comparison's reading of compare results (:mod:`poisoncure.book.pages.compare_page`): every cell,
count and sentence follows the reports it reads."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from poisoncure.book.pages import compare_page as cp
from poisoncure.experiments import report
from poisoncure.experiments.report import DefenseReport, Filtering, Report, Result, Scores
from poisoncure.experiments.store import Recipe

RECIPE = {"pair": 1, "model": "whitened_net", "width": 16, "epochs": 8}


def held_out(acc, asr=None):
    return Scores(acc, asr, test_set="held-out")


def result(poison, seed, defenses, before=None, works=True, pair=1, seconds=None, defense_settings=None):
    params = {"poison": poison, "recipe": {**RECIPE, "pair": pair, "seed": seed}, "defense": defense_settings or {}}
    clean = poison == "clean"
    before = before or held_out(84.0, None if clean else 99.0)
    details = {"attack_works": works and not clean, "train_seconds": 100.0,
               "defense_seconds": seconds or {d: 50.0 for d in defenses}}
    rep = Report(None if clean else 5, None if clean else 1, 50_000, 0 if clean else 500, before, defenses, details)
    name = f"{'clean' if clean else f'pair{pair}-{poison}'}-whitened_net16-s{seed}"
    return Result("compare", name, "key", "smoke", params, rep, {"device": "cpu", "commit": "abc"})


def pac(hit=True, asr_after=0.5):
    return DefenseReport([5] if hit else [3], hit, Filtering(500, 100.0, 100.0, 0, 0, "training set"),
                         held_out(83.0, asr_after))


def test_cells_count_false_alarms_on_clean_models_and_cost_as_a_multiple_of_training():
    """On a clean model a label named is a false alarm, and so is any sample a filter without label verdict removes;
    a defense that names nothing raises none. Cost = defense seconds / training seconds."""
    clean = result("clean", 0, {
        report.POISON_CURE: DefenseReport([], None, Filtering(0, None, 100.0, 0, 0, "training set"), None),
        report.CLEANSE: DefenseReport([2], None, None, None),
        report.SPECTRAL: DefenseReport(None, None, Filtering(7500, None, 85.0, 7500, 0, "training set"), None)},
        seconds={report.POISON_CURE: 25.0, report.CLEANSE: 10.0, report.SPECTRAL: 150.0})
    c = cp.cells([clean]).set_index("defense")
    assert not c.loc[report.POISON_CURE, "false alarm"]
    assert c.loc[report.CLEANSE, "false alarm"] and c.loc[report.SPECTRAL, "false alarm"]
    assert c.loc[report.POISON_CURE, "cost"] == pytest.approx(0.25)
    assert c.loc[report.SPECTRAL, "cost"] == pytest.approx(1.5)
    assert list(c.index) == [report.POISON_CURE, report.SPECTRAL, report.CLEANSE]  # the book's order


def test_the_table_aggregates_seeds_marks_verdicts_and_counts_false_alarms():
    records = [result("pixel", s, {report.POISON_CURE: pac(hit=s != 2, asr_after=a),
                                   report.XIANG: DefenseReport([], False, None, None)})
               for s, a in [(0, 0.5), (1, 1.5), (2, 2.5)]]
    records.append(result("blend", 0, {report.POISON_CURE: pac(), report.HYGIENE: DefenseReport(
        [5, 0, 2], True, None, held_out(80.0, 1.0))}))
    records += [result("clean", s, {report.POISON_CURE: DefenseReport([3] if s else [], None, None, None)})
                for s in (0, 1)]
    table = cp.all_defenses_table(cp.cells(records), ["pair1-blend", "pair1-pixel"])
    assert list(table.index[:2]) == ["pair 1, blend", "pair 1, one pixel (3 seeds)"]  # the plan's order
    assert table.loc["pair 1, one pixel (3 seeds)", "PaC"] == "2/3 ✓ 1.5 ± 1.0 | 83.0 ± 0.0"
    assert table.loc["pair 1, one pixel (3 seeds)", "Xiang"] == "0/3 ✓ no repair"
    assert table.loc["pair 1, blend", "PoisHyg."] == "✓+2 1.0 | 80.0"
    assert table.loc["pair 1, blend", "Xiang"] == "not run"
    assert table.loc["clean models: false alarms", "PaC"] == "1/2"
    assert table.loc["cost (× one training)", "PaC"] == "×0.50"


def test_a_repair_that_sends_the_triggered_images_to_another_class_is_marked_as_moving_the_backdoor():
    """Attack success 0.3 % after the repair, but 0.6 % of the triggered images back in their class (as on the smoke
    compare grid's 3x3 patch): marked † and named in the reading; 90 % back is a removal; Mislabel, whose source
    class has no label left to go back to, is never counted as moved."""
    def repaired(asr_after, back):
        return DefenseReport([5], True, Filtering(500, 100.0, 100.0, 0, 0, "training set"),
                             Scores(83.0, asr_after, None, back, test_set="held-out"))

    records = [result("blend", 0, {report.POISON_CURE: repaired(0.3, 0.6), report.SPECTRAL: repaired(0.8, 90.0)}),
               result("mislabel", 0, {report.POISON_CURE: repaired(0.5, 0.0)})]
    cell = cp.cells(records).set_index(["setting", "defense"])
    assert cell.loc[("pair1-blend", report.POISON_CURE), "moved"]
    assert not cell.loc[("pair1-blend", report.SPECTRAL), "moved"]
    assert not cell.loc[("pair1-mislabel", report.POISON_CURE), "moved"]
    table = cp.all_defenses_table(cp.cells(records))
    assert table.loc["pair 1, blend", "PaC"] == f"✓ 0.3{cp.MOVED} | 83.0"
    assert table.loc["pair 1, blend", "SS"] == "✓ 0.8 | 83.0"
    text = cp.reading(cp.cells(records))
    pac_line = next(line for line in text.splitlines() if line.startswith(f"- **{report.POISON_CURE}**"))
    assert "leaves at most 10\u00a0% attack success in 2 of 2 models" in pac_line
    assert f"but on pair 1, blend fewer than {cp.RECOVERED:g}\u00a0% of the triggered images" in pac_line
    assert "moved" not in next(line for line in text.splitlines() if line.startswith(f"- **{report.SPECTRAL}**"))


def _long_numeric_words(table, limit=6):
    """The words holding a digit that are longer than ``limit`` characters, anywhere in the table's cells."""
    return sorted({w for v in table.to_numpy().ravel() for w in str(v).split() if len(w) > limit
                   and any(ch.isdigit() for ch in w)})


def test_several_seeds_leave_no_long_word_in_a_cell_so_the_tables_can_narrow_to_the_column():
    """A browser narrows a table column no further than its longest word: written "66.7±57.4", a mean and its spread
    made chapter 7's every-defense table 698 px wide in the 688-px text column (CI at 9491705). Three seeds as far
    apart as results go, and the committed smoke grid: no word with a number in it is longer than six characters
    ("100.0", "57.7", "×4.97"). (The filtering table has four defense columns and room for "(12,730)" samples.)"""
    records = [result("pixel", s, {report.POISON_CURE: DefenseReport(
        [5], True, Filtering(500, 100.0, 100.0, 0, 0, "training set"),
        held_out(10.0 + 75.0 * (s > 0), 100.0 * (s == 0)))}, before=held_out(10.0 + 75.0 * (s > 0), 100.0 * (s > 0)))
        for s in (0, 1, 2)]
    cells = [cp.cells(records)]
    committed = cp.load("smoke")
    if not committed.cell.empty:
        cells.append(committed.cell)
    for cell in cells:
        assert _long_numeric_words(cp.all_defenses_table(cell)) == []


def test_the_reading_names_the_attacks_a_repair_does_not_remove():
    records = [result("pixel", 0, {report.CLEANSE: DefenseReport([], False, None, held_out(84.0, 99.0)),
                                   report.POISON_CURE: pac()}),
               result("blend", 0, {report.CLEANSE: DefenseReport([5], True, None, held_out(82.0, 2.0)),
                                   report.POISON_CURE: pac(asr_after=30.0)})]
    text = cp.reading(cp.cells(records), ["pair1-pixel", "pair1-blend"])
    nc = next(line for line in text.splitlines() if "Neural Cleanse" in line)
    assert nc.startswith("- **Neural Cleanse**: names the target in 1 of 2 models")
    assert "attack success in 1 of 2 models (not on: pair 1, one pixel)" in nc
    ours = next(line for line in text.splitlines() if "Poison as a Cure" in line)
    assert "in 1 of 2 models (not on: pair 1, blend)" in ours
    seeds = [result("pixel", s, {report.POISON_CURE: pac(asr_after=a)}) for s, a in [(0, 0.5), (1, 80.0), (2, 1.0)]]
    ours = cp.reading(cp.cells(seeds), []).splitlines()[-1]  # counted per model, not by the mean over seeds
    assert "in 2 of 3 models (not on: pair 1, one pixel (1 of 3 seeds))" in ours
    assert cp.reading(cp.cells([]), []).startswith("No working attack")


def test_the_live_cell_is_matched_to_the_file_of_the_same_model_and_settings():
    records = [result("pixel", 0, {report.POISON_CURE: pac()}, defense_settings={"eta": 2.0}),
               result("pixel", 1, {report.POISON_CURE: pac()}, defense_settings={"eta": 2.0})]
    recipe = Recipe(poison="pixel", **RECIPE, seed=1)
    assert cp.matching_result(records, recipe, {"eta": 2.0, "threshold": 2.0}) is records[1]  # threshold: default
    assert cp.matching_result(records, recipe, {"eta": 3.0}) is None
    assert cp.matching_result(records, Recipe(poison="blend", **RECIPE, seed=1), {"eta": 2.0}) is None
    table = cp.live_table(records[1].report, records[1])
    assert table.loc[(report.POISON_CURE, "this build"), "ASR after"] == "0.50"
    assert table.loc[(report.CLEANSE, "committed file"), "names target"] == "—"  # not in the report: shown as such
    # the sentence under it counts the cells both fill alike and names both machines
    same = cp.live_note(table, records[1], "cpu")
    assert "agree in 6 of the 6 cells" in same and "both on cpu" in same
    other = cp.live_table(result("pixel", 1, {report.POISON_CURE: pac(asr_after=7.0)}).report, records[1])
    moved = cp.live_note(other, records[1], "CPU (another, 2 cores)")
    assert "agree in 5 of the 6 cells" in moved and "the file on cpu" in moved and "not expected" in moved
    assert "nothing is compared" in cp.live_note(table, None, "cpu")


def test_backdoorbench_rows_set_ours_beside_the_published_numbers():
    records = [result("blend", 0, {report.SPECTRAL: DefenseReport(None, None, None, held_out(80.0, 1.0))})]
    bb = cp.backdoorbench_table(cp.cells(records))
    row = bb.loc[("pair 1, blend / Blended", report.SPECTRAL)]
    assert (row["ASR"], row["ASR (BackdoorBench)"]) == ("1.0", "99.84")
    assert bb.loc[("pair 1, blend / Blended", "none"), "ASR"] == "99.0"
    assert bb.loc[("BadNets 4×4, all-to-one / BadNets", "none"), "ASR"] == "not run yet"


def test_the_heat_map_marks_each_verdict_and_greys_a_detector_without_repair():
    records = [result("pixel", 0, {report.POISON_CURE: pac(), report.XIANG: DefenseReport([5], True, None, None)})]
    fig = cp.heatmap_figure(cp.cells(records), [])
    texts = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert texts == ["99", "0\n✓", "✓"]  # the verdict under the number


def test_the_committed_heat_map_keeps_every_number_and_mark_apart_at_the_columns_width():
    """Chapter 7's heat map of the committed smoke grid, through the page's own figure pipeline (fitted to the text
    column, small text enlarged): no two cell labels overlap (with the mark beside the number, 16 did)."""
    from poisoncure.book import plots

    cmp = cp.load("smoke")
    if cmp.cell.empty:
        pytest.skip("no committed smoke compare results")
    fig = cp.heatmap_figure(cmp.cell, cmp.order)
    plots.fit_to_column(fig)
    if plots.enlarge_small_text(fig):
        plots.fit_to_column(fig, relayout_first=True)
    if plots.untangle_text(fig):
        plots.fit_to_column(fig, relayout_first=True)
    problems = plots.text_collisions(fig)
    plt.close(fig)
    assert problems == []


def test_one_defense_rows_for_chapters_10_to_12():
    records = [result("pixel", 0, {report.XIANG: DefenseReport([5], True, None, None)}),
               result("clean", 0, {report.XIANG: DefenseReport([4], None, None, None)})]
    rows = cp.defense_rows(cp.cells(records), report.XIANG)
    assert rows.loc["pair 1, one pixel", "verdict"] == "✓" and rows.loc["pair 1, one pixel", "ASR after"] == "no repair"
    assert rows.loc["clean models (1)", "verdict"] == "1 false alarm(s)"


def test_no_committed_result_yet_gives_empty_tables_and_a_placeholder():
    """A profile whose compare grid has no file yet: every output exists and says so, nothing raises."""
    empty = cp.cells([])
    assert cp.all_defenses_table(empty).index.tolist() == ["cost (× one training)"]
    assert cp.filtering_table(empty).empty and cp.defense_rows(empty, report.XIANG).empty
    assert (cp.backdoorbench_table(empty)["ASR"] == "not run yet").all()
    fig = cp.heatmap_figure(empty)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no committed compare result yet"]
    plt.close(fig)
    loaded = cp.load("cpu-cnn")  # a profile without a compare section
    assert loaded.records == [] and loaded.planned == [] and loaded.cell.empty


def test_the_heat_map_of_all_eight_defenses_has_no_colliding_labels_in_the_book_style():
    from poisoncure.book import plots

    plots.set_style("smoke")
    every = {d: DefenseReport([5], True, None, held_out(80.0, 1.0)) for d in cp.DEFENSES}
    fig = cp.heatmap_figure(cp.cells([result("pixel", 0, every), result("blend", 0, every)]), [])
    assert not plots.text_collisions(fig)
    plt.close(fig)
