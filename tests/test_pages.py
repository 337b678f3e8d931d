"""The chapters' page helpers (:mod:`poisoncure.book.pages`): the sentences they build follow the numbers they read."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from poisoncure.book.pages import hygiene_page as page

CLASSES = tuple(f"c{k}" for k in range(10))


def scan(prob, infected=None):
    prob = np.asarray(prob, dtype=float)
    infected = prob > 0.5 if infected is None else np.asarray(infected)
    return SimpleNamespace(prob=prob, infected=infected, suspect=int(np.argmax(prob)),
                           model_infected=bool(infected.any()))


def test_detection_sentences_follow_the_scans():
    """The main suspect's verdict names the target only when it is the one label over τ; the healthy twin's names
    a false positive only when one exists; the paper's method is credited only when it names the target."""
    hit = scan([0.9] + [0.1] * 9)
    two = scan([0.9, 0.7] + [0.1] * 8)
    healthy = scan([0.2] * 10)
    found = {"poison_cure": {"target": 0, "ratio": 3.2, "poisoned": True}}
    wrong = {"poison_cure": {"target": 4, "ratio": 2.5, "poisoned": True}}
    t = page.detection_texts({"healthy": healthy, "badnets": hit}, {"badnets": found}, "badnets", CLASSES, 0, 2.0)
    assert t["fm_verdict_main"] == "c0 has the highest Prob and is the only label over τ"
    assert t["fm_healthy_verdict"] == "no label passes" and t["fm_prob_main"] == "0.9"
    assert t["fm_pc_verdict"] == "The paper's method names c0 (R = 3.20)."
    t = page.detection_texts({"healthy": two, "badnets": two}, {"badnets": wrong}, "badnets", CLASSES, 0, 2.0)
    assert t["fm_verdict_main"] == "labels over τ: c0, c1 (highest: c0)"
    assert t["fm_healthy_verdict"] == "2 label(s) pass — a false positive"
    assert "does not find the badnets target" in t["fm_pc_verdict"] and "names the wrong class" in t["fm_pc_verdict"]
    t = page.detection_texts({"healthy": healthy}, {}, None, CLASSES, 0, 2.0)
    assert t["fm_main"] == "none" and t["fm_prob_main"] == "—" and t["fm_pc_verdict"] == ""


def test_the_mitigation_summary_says_halved_only_when_it_is():
    def metrics(acc, asr):
        return SimpleNamespace(metrics=SimpleNamespace(clean_accuracy=acc, attack_success_rate=asr))

    before = {"badnets": metrics(90.0, 98.0)}
    t = page.mitigation_texts("badnets", before, {"badnets": metrics(89.0, 10.0)}, {"badnets": metrics(89.5, 97.0)})
    assert t["mit_summary"].startswith("MITIGATE at least halves") and "alone does not" in t["mit_summary"]
    t = page.mitigation_texts("badnets", before, {"badnets": metrics(89.0, 60.0)}, {"badnets": metrics(89.5, 30.0)})
    assert t["mit_summary"].startswith("MITIGATE does not halve") and "and so does" in t["mit_summary"]
    assert page.mitigation_texts("blend", before, {}, {})["mit_summary"] == "MITIGATE did not run"


def test_the_cifar_verdict_calls_a_label_passing_on_the_clean_model_a_false_positive():
    refs = [SimpleNamespace(accuracies=[61.4])]
    t = page.cifar_texts({"blend": scan([0.1] * 5 + [0.8] + [0.1] * 4), "clean": scan([0.7] + [0.1] * 9)}, refs, [500])
    assert t["c_pass_clean"] == "1" and t["c_verdict"].startswith("Every label that passes on the clean model")
    assert t["cifar_ref_desc"] == "500 images per class (61 % accurate)"
    t = page.cifar_texts({"blend": scan([0.1] * 10), "clean": scan([0.1] * 10)}, refs, [500])
    assert t["c_verdict"].startswith("No label passes on the clean model")


def test_the_full_profile_sentences_follow_the_committed_runs():
    """No alarm on any clean ResNet-18 says so; one alarm says false alarms persist; an additive attack under 50 %
    is called not learned."""
    from poisoncure.book.pages import reverse_page
    from poisoncure.experiments import report
    from poisoncure.experiments.report import DefenseReport, Report, Scores

    from .test_paper_tables import result

    def clean(p, acc, detected):
        return result("reverse", "clean", {"poison": "clean"}, Report(None, None, None, None, Scores(acc), {
            report.XIANG: DefenseReport(details={"p_value": p, "detected": detected})}))

    additive = result("reverse", "chessboard", {"poison": "chessboard", "recipe": {"additive_l2": 0.2, "epochs": 40}},
                      Report(9, 1, None, None, Scores(90.0, 12.0), {
                          report.XIANG: DefenseReport([], False, details={"detected": False, "p_value": 0.4,
                                                                          "source": 1, "target": 9}),
                          report.POISON_CURE: DefenseReport([], False, details={"poisoned": False, "candidate": 3}),
                          report.CLEANSE: DefenseReport([], False)}))
    t = reverse_page.full_profile_texts([clean(0.3, 90.0, False), clean(0.6, 80.0, False), additive], 10, CLASSES)
    assert t["full_clean_text"].startswith("None of the 2 clean ResNet-18s is called attacked")
    assert "p = 0.60 at 80.0% clean accuracy, p = 0.30 at 90.0%" in t["full_clean_text"]
    assert t["full_additive"].startswith("The additive model (chessboard, ‖v‖₂ = 0.2) reached an attack success")
    t = reverse_page.full_profile_texts([clean(0.01, 90.0, True), clean(0.6, 80.0, False)], 10, CLASSES)
    assert t["full_clean_text"].startswith("1 of the 2 clean ResNet-18s are called attacked")
    assert t["full_additive"] == "No committed full-profile result for the additive model."


def test_the_attack_verdict_says_which_backdoors_work():
    from poisoncure.book.pages import attack_page

    def model(acc, asr):
        return SimpleNamespace(metrics=SimpleNamespace(clean_accuracy=acc, attack_success_rate=asr))

    both = attack_page.attack_verdict({"blend": model(84.0, 97.0), "pixel": model(83.5, 99.9)}, ["blend", "pixel"])
    assert both == ("The pixel-poisoned model reaches 83.5% clean accuracy with 99.9% attack success. Both backdoors "
                    "work in this build (at least 80% attack success).")
    one = attack_page.attack_verdict({"blend": model(84.0, 97.0), "pixel": model(83.5, 8.0)}, ["blend", "pixel"])
    assert "The blend backdoor works" in one and "The pixel backdoor is not learned (below 80% attack success)" in one


def test_the_theorem_reading_follows_the_sweep_points():
    """Errors falling as ‖v‖/σ grows, on the Gaussian tail: direction and shape hold; errors rising: the direction
    does not; zero errors are counted apart; no non-zero error: the shape is untested."""
    import pandas as pd
    from scipy.stats import norm

    from poisoncure.book.pages import sweep_page

    snr = np.array([2.0, 3.0, 4.0, 5.0])
    tail = pd.DataFrame({"snr": snr, "error": 100 * norm.cdf(-snr / 2), "attack works": True})
    t = sweep_page.theorem_texts(tail, fit_c=float("nan"))
    assert t["theorem_reading"].startswith("The direction holds: the error falls as the signal grows, and the shape")
    assert t["snr_corr"] == "-1.00" and t["snr_range"] == "2.0–5.0"
    t = sweep_page.theorem_texts(tail.assign(error=[0.5, 1.0, 2.0, 3.0]), fit_c=float("nan"))
    assert t["theorem_reading"].startswith("Even the direction does not hold here")
    t = sweep_page.theorem_texts(tail.assign(error=[1.0, 0.5, 0.2, 0.0]), fit_c=float("nan"))
    assert "1 learned attack has no filtering error at all" in t["theorem_reading"]
    t = sweep_page.theorem_texts(tail.assign(error=0.0), fit_c=float("nan"))
    assert t["theorem_reading"].startswith("No learned attack has a non-zero filtering error")


def test_the_pixel_filter_note_reads_the_model():
    from poisoncure.book.pages import filtering_page

    def model(asr):
        return SimpleNamespace(metrics=SimpleNamespace(attack_success_rate=asr))

    results = [{"sensitivity %": 97.0, "specificity %": 99.5}]
    assert filtering_page.pixel_note({"pixel": model(99.0)}, results).startswith(
        "For the one-pixel poison the filter reaches 97.0% sensitivity")
    assert filtering_page.pixel_note({"pixel": model(3.0)}, results).startswith("The one-pixel backdoor was not")
    assert filtering_page.pixel_note({}, results).startswith("The one-pixel model is not among")


def test_a_trained_model_row_reads_the_model_and_keeps_column_order(tiny_images):
    from poisoncure.book.pages import reverse_page
    from poisoncure.book.pages.rows import trained_model_row

    clean = SimpleNamespace(train_set=tiny_images, metrics=SimpleNamespace(clean_accuracy=81.25,
                                                                            attack_success_rate=None),
                            history=SimpleNamespace(seconds=12.5))
    row = trained_model_row("clean", clean, architecture="Model I")
    assert list(row)[:3] == ["model", "architecture", "training images"]
    assert row["training images"] == 200 and row["poisoned"] == 0 and np.isnan(row["attack success %"])
    table = reverse_page.models_table({"clean": clean})
    assert table.loc["clean", "clean accuracy %"] == 81.2 and table.loc["clean", "attack success %"] == "—"


def test_the_detection_table_judges_each_detector_within_the_target_class():
    """Chapter 7's table from the pipeline's runs: sensitivity and specificity on the target rows only (a flag
    outside them does not count), one row per (poison, method)."""
    from poisoncure.book.pages import baselines_page
    from poisoncure.experiments import pipeline

    is_poison = np.array([True, True, False, False, False, True])  # rows 0-3 carry the target label
    rows = np.arange(4)
    flags = np.array([True, False, True, False, False, True])  # 1 of 2 poisons, 1 of 2 clean target rows
    run = pipeline.DefenseRun(5, rows, {
        pipeline.POISON_CURE: SimpleNamespace(flagged=flags),
        pipeline.CLUSTERING: SimpleNamespace(artefact=SimpleNamespace(flagged=flags,
                                                                     cluster=np.array([1, 1, 0, 0, 0, 1]))),
        pipeline.SPECTRAL: SimpleNamespace(artefact=SimpleNamespace(removed=np.array([1, 1, 1, 1], bool)))})
    trained = {"blend": SimpleNamespace(train_set=SimpleNamespace(is_poison=is_poison))}
    t = baselines_page.detection_table({"blend": run}, trained, ["blend"]).set_index("method")
    assert len(t) == len(baselines_page.DETECTION_ROWS)
    assert t.loc["Poison as a Cure", ["sensitivity", "specificity"]].tolist() == [50.0, 50.0]
    assert t.loc["Activation Clustering (smaller target cluster)", ["sensitivity", "specificity"]].tolist() == \
        [100.0, 100.0]
    assert t.loc["Spectral Signatures (target, 1.5ε)", ["sensitivity", "specificity"]].tolist() == [100.0, 0.0]


def test_the_hygiene_comparison_table_lists_three_detectors_per_model():
    scan = SimpleNamespace(prob=np.array([0.9] + [0.1] * 9), infected=np.array([True] + [False] * 9), suspect=0,
                           model_infected=True)
    others = {"neural_cleanse": {"anomaly": [3.0] + [0.0] * 9, "flagged": [0]},
              "poison_cure": {"poisoned": True, "target": 0, "ratio": 4.0}, "missing": []}
    t = page.comparison_table({"badnets": scan, "healthy": scan}, {"badnets": others, "healthy": others},
                              tuple(f"c{k}" for k in range(10)), {"badnets": 0, "healthy": None})
    assert len(t) == 6 and t.index.names == ["model", "detector"]
    assert (t.loc["badnets", "right target"] == True).all()  # noqa: E712
    assert (t.loc["healthy", "right target"] == "—").all()  # nothing to be right about on a healthy model


def test_the_component_reading_follows_the_classes_each_component_holds():
    """Chapter 12's composition figure: the sentences compare the learners' accuracy on the classes their component
    holds little of with the classes it holds plenty of, and name the classes losing the least and the most clean
    images; a record without the per-class numbers (written before they were measured) gives dashes, not a crash."""
    from poisoncure.book.pages import ensembles_page
    from poisoncure.experiments.report import DefenseReport, Report

    held = [[300, 300, 300, 10, 10, 10, 10, 10, 10, 40], [10, 10, 10, 300, 300, 300, 10, 10, 10, 40]]
    acc = [[80, 80, 80, 5, 5, 5, 5, 5, 5, 50], [5, 5, 5, 90, 90, 90, 5, 5, 5, 50]]
    comps = [{"bag": 0, "index": i, "size": sum(h), "poison": 0, "per_label": h, "learner_accuracy_per_class": a}
             for i, (h, a) in enumerate(zip(held, acc, strict=True))]
    details = {"components": comps, "clean_per_class": [100] * 10,
               "clean_removed_per_class": [10, 10, 10, 20, 20, 20, 90, 90, 95, 50]}
    rep = Report(None, None, 1000, 0, None, {ensembles_page.ENSEMBLES: DefenseReport(details=details)})
    fig, texts = ensembles_page.composition_figure(rep, CLASSES)
    assert len(fig.axes) >= 2
    # scarce: under a quarter of an even share (100 / 4 = 25 images): the 10s, at 5 % accuracy; ample: >= 100 images
    assert texts["skew_acc"].startswith("5 % of the clean images") and "against 85 % on" in texts["skew_acc"]
    assert "between 10 and 300 images" in texts["comp_range"]
    assert texts["removed_range"] == "from 10 % of the clean c0 images to 95 % of the clean c8 images"
    old = Report(None, None, 1000, 0, None, {ensembles_page.ENSEMBLES: DefenseReport(details={"components": [
        {k: v for k, v in comps[0].items() if k not in ("per_label", "learner_accuracy_per_class")}]})})
    _, dashes = ensembles_page.composition_figure(old, CLASSES)
    assert set(dashes.values()) == {"—"}


def test_the_base_reading_names_the_base_its_lead_and_compares_it_with_the_target_tests():
    """Chapter 5's base sentence: the base named, whether it is the attack's, its lead over the runner-up (the
    target itself excluded), that lead beside the target test's, and the clean model's false alarm."""
    from poisoncure.book.pages import detection_page

    def run(m, distances, target, base, spec):
        scan_ = SimpleNamespace(distances=np.asarray(distances, float), target=target)
        b = SimpleNamespace(m=np.asarray(m, float), base=base, target=target)
        return SimpleNamespace(result=SimpleNamespace(scan=scan_, base=b),
                               trained=SimpleNamespace(train_set=SimpleNamespace(spec=spec)))

    dist = [1.0, 1.0, 1.0, 1.0, 1.0, 6.0, 1.5, 1.0, 1.0, 1.0]  # target 5 leads the runner-up 6 by 4x
    m = [0.2, 0.5, 0.3, 0.3, 0.3, 0.9, 0.3, 0.4, 0.3, 0.3]  # base 1 leads 7 by 1.25x (the target 5 excluded)
    spec = SimpleNamespace(base=1, target=5)
    text = detection_page.base_reading({"blend": run(m, dist, 5, 1, spec)}, list(CLASSES))
    assert "names c1, the attack's base" in text and "0.500 against 0.400 for c7" in text
    assert "1.25 times as large" in text and "4.00 times the next class's" in text
    assert "least robust step" in text
    wrong = detection_page.base_reading({"pixel": run(m, dist, 5, 1, SimpleNamespace(base=3, target=5))},
                                        list(CLASSES))
    assert "not the attack's base c3" in wrong
    close = [1.0, 1.0, 1.0, 1.0, 1.0, 6.0, 5.5, 1.0, 1.0, 1.0]  # the target leads by 1.09x only
    assert "not all smaller" in detection_page.base_reading({"blend": run(m, close, 5, 1, spec)}, list(CLASSES))
    clean = detection_page.base_reading({"clean": run(m, dist, 5, 1, None)}, list(CLASSES))
    assert clean.startswith("The clean model was flagged (c5)") and "attack that is not there: c1" in clean
    nothing = SimpleNamespace(result=SimpleNamespace(scan=None, base=None))
    assert detection_page.base_reading({"clean": nothing}, list(CLASSES)).startswith("No model was flagged")
