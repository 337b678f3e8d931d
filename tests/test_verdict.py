"""The reproduction verdict (introduction, chapter 8): counted from result records by the stated rule, never typed."""

import pandas as pd
import pytest

from poisoncure.experiments import report, verdict
from poisoncure.experiments.report import DefenseReport, Filtering, Report, Scores

from .test_paper_tables import record, result


def sweep_record(name="pair1-pixel-whitened_net-r0.1-s0", asr=99.0, flags=True, sens=99.0, spec=100.0,
                 asr_after=0.5, acc=70.0, acc_after=69.0, ac_sens=0.0):
    """A minimal ``sweep`` result with the fields the verdict reads."""
    # the runner measures a learned attack's model after the defense even when nothing was flagged (the model is
    # then unchanged)
    after = Scores(acc_after if flags else acc, asr_after if flags else asr, test_set="held-out")
    rep = Report(5, 1, 10000, 100, Scores(acc, asr, test_set="held-out"), {
        report.POISON_CURE: DefenseReport([5] if flags else [], flags, Filtering(None, sens, spec),
                                          after if asr >= 50 else None),
        report.CLUSTERING: DefenseReport([], False, Filtering(None, ac_sens, 90.0)),
        report.SPECTRAL: DefenseReport([5], None, Filtering(None, 90.0, 90.0))})
    return result("sweep", name, {"recipe": {"model": "whitened_net", "width": 16}}, rep)


def claim(start: str) -> verdict.Claim:
    return next(c for c in verdict.CLAIMS if c.label.startswith(start))


@pytest.mark.parametrize(("k", "n", "word"), [(3, 3, verdict.HELD), (2, 3, verdict.PARTLY), (1, 2, verdict.PARTLY),
                                              (1, 3, verdict.NOT_HELD), (0, 4, verdict.NOT_HELD),
                                              (0, 0, verdict.NOT_TESTED)])
def test_judge_follows_the_stated_rule(k, n, word):
    assert verdict.judge(k, n) == word


def test_judge_refuses_impossible_counts():
    with pytest.raises(ValueError, match="n_true"):
        verdict.judge(3, 2)


def test_claims_apply_to_learned_attacks_only_and_count_what_holds():
    # trig is the accuracy on triggered images; the record's attack success is 100 - trig
    rows = verdict.main_rows([record(pair=1, trig=2.0),                        # learned, found, repaired
                              record(pair=2, trig=3.0, found=False),           # learned, missed
                              record(pair=3, trig=80.0, found=False),          # not learned: no claim applies
                              record(pair=4, trig=1.0, asr_ours=30.0)])        # learned, found, not repaired
    assert verdict.cell(claim("The attacks"), rows) == (verdict.PARTLY, 3, 4)
    assert verdict.cell(claim("Theorem 4.1"), rows) == (verdict.PARTLY, 2, 3)
    assert verdict.cell(claim("§6.2"), rows) == (verdict.HELD, 2, 2)
    assert verdict.cell(claim("§7"), rows) == (verdict.PARTLY, 1, 2)
    # a repair that costs more than the allowed clean accuracy fails even with the attack removed
    costly = verdict.main_rows([record(acc=90.0, acc_after=90.0 - verdict.MAX_DROP - 0.5, trig=1.0)])
    assert verdict.cell(claim("§7"), costly) == (verdict.NOT_HELD, 0, 1)


def test_a_repair_that_sends_the_trigger_to_another_class_does_not_count_as_removing_the_backdoor():
    # a wrong base class: the target's attack success falls to 1 %, but only 5.7 % of the triggered base images are
    # classified as their class again (the rest follow the trigger to the class the filtered images were relabelled to)
    moved = record(trig=1.0, asr_ours=1.0, trig_after=5.7)
    kept = record(pair=2, trig=1.0, asr_ours=1.0, trig_after=verdict.RECOVERED + 1)
    rows = verdict.main_rows([moved, kept])
    assert list(rows["triggered_after"]) == [5.7, verdict.RECOVERED + 1]
    assert verdict.cell(claim("§7"), rows) == (verdict.PARTLY, 1, 2)
    assert verdict.cell(claim("§7"), verdict.main_rows([moved])) == (verdict.NOT_HELD, 0, 1)
    # where the grid does not measure it (the sweep), the other two conditions decide
    assert verdict.cell(claim("§7"), rows.assign(triggered_after=float("nan"))) == (verdict.HELD, 2, 2)


def test_comparisons_use_the_tolerance_and_need_both_measurements():
    ours_worse = record(trig=1.0, ours=(99.0, 60.0), ac=(70.0, 60.0 + verdict.TOLERANCE + 1),
                        asr_ours=5.0, asr_ss=5.0 - verdict.TOLERANCE - 1)
    rows = verdict.main_rows([ours_worse, record(pair=2, trig=1.0, ours=(99.0, 95.0), ac=(70.0, 96.0))])
    assert verdict.cell(claim("Tables 3–4: filters"), rows) == (verdict.PARTLY, 1, 2)
    assert verdict.cell(claim("Table 5"), rows) == (verdict.PARTLY, 1, 2)
    no_retrain = rows.assign(ss_asr_after=float("nan"))
    assert verdict.cell(claim("Table 5"), no_retrain) == (verdict.NOT_TESTED, 0, 0)


def test_sweep_records_give_the_same_quantities_without_a_base():
    rows = verdict.sweep_rows([sweep_record(), sweep_record("b", asr=1.0, flags=False),
                               sweep_record("c", asr=96.0, flags=False)])
    assert list(rows.columns) == list(verdict.COLUMNS)
    assert verdict.cell(claim("Theorem 4.1"), rows) == (verdict.PARTLY, 1, 2)
    assert verdict.cell(claim("§6.2"), rows) == (verdict.NOT_TESTED, 0, 0)
    assert verdict.cell(claim("Theorem 5.1"), rows) == (verdict.HELD, 1, 1)
    # the unflagged learned attack keeps its backdoor, but the repair claim is about repairs that ran
    assert verdict.cell(claim("§7"), rows) == (verdict.HELD, 1, 1)
    with pytest.raises(ValueError, match="sweep"):
        verdict.sweep_rows([record()])


def test_the_paper_column_applies_the_same_tests_to_the_papers_numbers():
    t = verdict.table([])
    assert list(t.columns) == ["paper"] and len(t) == len(verdict.CLAIMS)
    assert t.loc[claim("Theorem 4.1").label, "paper"] == "18 of 18 (§6.1)"
    k, n, _ = claim("Theorem 5.1").paper()
    assert n == 18 and 0 < k <= 18
    # Table 5: pairs where the paper's own method leaves more than SS + tolerance are counted against it
    k, n, where = claim("Table 5").paper()
    assert (n, where) == (9, "Table 5") and k < 9


def test_table_html_and_markdown_show_every_set_with_its_coverage():
    rows = verdict.main_rows([record(trig=1.0)])
    ev = verdict.Evidence("full", "main", "ResNet-18 (full) · 1/18", "ResNet-18 ...", [record(trig=1.0)], rows, 18)
    t = verdict.table([ev])
    assert t.loc[claim("Theorem 4.1").label, ev.label] == "held (1 of 1)"
    assert t.loc[claim("Table 5").label, ev.label] == "held (1 of 1)"
    page = verdict.html([ev])
    assert page.count("<tr>") == 1 + len(verdict.CLAIMS) and "ResNet-18 (full) · 1/18" in page
    assert "✓ held (1 of 1)" in page and verdict.SHADES[verdict.HELD] in page


def test_evidence_reads_the_committed_results_paper_scale_first():
    sets = verdict.evidence()
    assert sets, "the repository commits result files"
    order = [verdict.PROFILE_ORDER.index(s.profile) for s in sets if s.grid == "main"]
    assert order == sorted(order)
    for s in sets:
        assert isinstance(s.rows, pd.DataFrame) and len(s.rows) == len(s.records) <= s.planned
        assert f"{len(s.records)}/{s.planned}" in s.label


def test_the_compare_grid_is_evidence_for_the_papers_eighteen_only_and_only_from_readable_files():
    """The all-defenses comparison holds the paper's grid too: its one-pixel and blend experiments on the pairs count,
    planned as those alone (not its other attacks and clean models), and files that predate the target-class details
    are left out rather than read (they would raise in the tables)."""
    from poisoncure.experiments import paper_tables, plans

    sets = [s for s in verdict.evidence() if s.grid == "compare"]
    if not sets:
        pytest.skip("no committed compare results")
    for s in sets:
        assert s.planned == len(paper_tables.paper_grid_names(plans.plan(s.profile, ["compare"]))) < \
            len(plans.plan(s.profile, ["compare"]))
        assert s.records and all(r.params["poison"] in paper_tables.POISONS for r in s.records)
        assert paper_tables.readable(s.records)[1] == [] and s.label.startswith("compare · ")


def test_the_profile_summary_has_one_column_per_committed_set_of_the_papers_grid_and_none_for_the_sweep():
    sets = verdict.evidence()
    summary = verdict.profile_summary(sets)
    grid_sets = [ev for ev in sets if ev.grid in ("main", "compare")]
    assert list(summary.columns) == [ev.label for ev in grid_sets]
    for ev in grid_sets:
        assert summary.loc["experiments with a result", ev.label] == f"{len(ev.rows)} of {ev.planned}"
        assert summary.loc["network", ev.label] == verdict.network_name(ev.records)
        moved_row = f"repairs with < {verdict.RECOVERED:g} % of triggered images back in their class"
        repaired = ev.rows[verdict._found(ev.rows) & ev.rows["asr_after"].notna()]
        moved = int((repaired["triggered_after"] < verdict.RECOVERED).sum())
        assert summary.loc[moved_row, ev.label] == (f"{moved} of {len(repaired)}" if len(repaired) else "—")
