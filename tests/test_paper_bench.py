"""The paper benchmark (benchmarks/paper.py) end to end on a tiny random model and a tiny GLUE folder.

Covers: the report's layout (Table 1 with the chosen layer, Table 2, sweep, protocol, claims), the
derived dev splits of tasks without train.tsv (disjoint, fixed, outside the repo), skipping
finished runs on a rerun, and `--report-only` reproducing the same report from the run folders.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from tiny import WORDS, make_glue

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import paper  # noqa: E402
import paper_report  # noqa: E402

MNLI_HEADER = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
               "sentence2_parse sentence1 sentence2 label1 label2 label3 label4 label5 gold_label").split()
NLI = ("entailment", "neutral", "contradiction")


def _words(rng: random.Random, n: int) -> str:
    """n random words of the tiny tokenizer's vocabulary."""
    return " ".join(rng.choice(WORDS[:20]) for _ in range(n))


def make_dev_only(root: Path, n: int = 48, seed: int = 1) -> None:
    """MNLI (dev_matched, dev_mismatched) and QQP (dev) in GLUE layout, without train.tsv, unique rows."""
    rng = random.Random(seed)
    (root / "MNLI").mkdir(parents=True, exist_ok=True)
    for name in ("dev_matched", "dev_mismatched"):
        rows = ["\t".join(MNLI_HEADER)]
        for i in range(n):
            label = rng.randrange(3)
            texts = [f"{_words(rng, 4)} {name} {i}", f"{('yes', 'maybe', 'no')[label]} {_words(rng, 3)}"]
            rows.append("\t".join([str(i), *[""] * 7, *texts, *[""] * 5, NLI[label]]))
        (root / "MNLI" / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    (root / "QQP").mkdir(parents=True, exist_ok=True)
    rows = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
    for i in range(n):
        label = rng.randint(0, 1)
        rows.append(f"\t\t\t{_words(rng, 4)} q{i}\t{'yes' if label else 'no'} {_words(rng, 3)}\t{label}")
    (root / "QQP" / "dev.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def bench(model_dirs, tmp_path_factory):
    """One benchmark run: SST-2, RTE, MNLI-m/-mm and QQP, 1 seed, sweep on RTE, paper protocol on RTE."""
    root = tmp_path_factory.mktemp("paper")
    glue = make_glue(root / "glue", n_train=48, n_dev=24)
    make_dev_only(root / "glue")
    argv = ["--model", str(model_dirs["llama"]), "--glue-dir", str(glue), "--work-dir", str(root / "work"),
            "--results-dir", str(root / "results"), "--tasks", "sst2,rte,mnli,mnli-mm,qqp", "--sweep", "rte",
            "--sweep-full", "--paper-protocol", "rte", "--seeds", "0", "--max-train-samples", "24",
            "--max-eval-samples", "16", "--max-length", "16", "--epochs", "1", "--batch-size", "8",
            "--selection-train-samples", "12", "--selection-eval-samples", "8", "--threads", "1"]
    assert paper.main(argv) == 0
    return {"root": root, "argv": argv, "work": root / "work" / "llama-adapter", "results": root / "results"}


def test_report_layout(bench):
    md = (bench["results"] / "llama-adapter.md").read_text()
    data = json.loads((bench["results"] / "llama-adapter.json").read_text())
    assert "Status: complete." in md
    header = next(line for line in md.splitlines() if line.startswith("| | SST-2"))
    assert header == "| | SST-2 | RTE | MNLI-m† | MNLI-mm† | QQP† | Avg |"
    olft_row = next(line for line in md.splitlines() if line.startswith("| OLFT |"))
    assert olft_row.count(" l-") == 5  # the chosen layer beside every score
    for label in ("| final-layer |", "| all-layer |", "| single-layer (OLFT) |", "**Selection time**"):
        assert label in md
    assert data["table1"]["mrpc" if "mrpc" in data["table1"] else "rte"]["strategies"]["olft"]["n"] == 1
    assert data["middle_bucket"] == [1, 2] and data["num_layers"] == 4
    # every run saves its training state (default every 50 steps), so a stopped strategy resumes mid-way
    assert json.loads((bench["work"] / "sst2-s0" / "config.json").read_text())["train"]["checkpoint_every"] == 50
    t2 = data["table2"]
    assert t2["full"]["time_percent"] == pytest.approx(100) and t2["olft"]["param_percent"] == pytest.approx(25)
    for col, share in t2["stack_share_percent_per_task"].items():  # (L - k) / L of OLFT's chosen layer k, L = 4
        assert share == pytest.approx(100 * (4 - data["table1"][col]["strategies"]["olft"]["layers"]["0"][0]) / 4)
    assert set(t2["stack_share_percent_per_task"]) == set(t2["whole_run_vs_all_layer_per_task"]) and "(L - k) / L" in md
    assert set(data["sweep"]["rte"]["holdout"]) == {0, 1, 2, 3} or set(data["sweep"]["rte"]["holdout"]) == {"0", "1", "2", "3"}
    assert len(data["sweep"]["rte"]["validation"]) == 4
    assert set(data["paper_protocol"]["validation"]["layers"]) == {"0"}
    assert set(data["claims"]) == {"claim1", "claim2", "claim3", "claim4"}
    assert (bench["results"] / "llama-adapter.png").stat().st_size > 1000
    readme = (bench["results"] / "README.md").read_text()
    assert "llama, adapter (complete" in readme
    assert all(row in readme for row in ("| OLFT beats", "| OLFT is comparable", "| the best single layer", "| OLFT trains in"))
    glance = next(line for line in readme.splitlines() if line.startswith("| ") and "llama, adapter | 8/8 |" in line)
    gain = data["paper_average"]["olft"]["mean"] - data["paper_average"]["final"]["mean"]
    assert f"{data['claims']['claim1']['verdict']} ({gain:+.1f})" in glance


def test_derived_splits_are_disjoint_and_fixed(bench):
    data = bench["work"] / "data"

    def rows(path):
        """The records of a JSONL file."""
        return [json.loads(line) for line in path.read_text().splitlines()]

    for task, fields in (("mnli", ("premise", "hypothesis")), ("qqp", ("question1", "question2"))):
        train, rest = rows(data / task / "train.jsonl"), rows(data / task / "validation.jsonl")
        assert len(train) == len(rest) == 24  # half of 48 dev rows each
        assert {tuple(r[f] for f in fields) for r in train}.isdisjoint({tuple(r[f] for f in fields) for r in rest})
    mm = rows(data / "mnli-mm" / "validation.jsonl")
    assert len(mm) == 48 and all("dev_mismatched" in r["premise"] for r in mm)
    manifest = json.loads((bench["work"] / "bench.json").read_text())
    assert manifest["plans"]["mnli-mm"]["train_file"] == manifest["plans"]["mnli"]["train_file"]
    assert manifest["plans"]["sst2"]["source"] == "glue"
    cfg = json.loads((bench["work"] / "qqp-s0" / "config.json").read_text())
    assert cfg["data"]["data_source"] == "file" and cfg["data"]["validation_file"].endswith("qqp/validation.jsonl")
    assert (bench["root"] / "work" / ".gitignore").read_text() == "*\n"


def test_summary_table_quotes_the_report(bench):
    """The README's short table: each cell is the report's mean, the average the verdicts use, Table 2's time %."""
    data = json.loads((bench["results"] / "llama-adapter.json").read_text())
    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in paper_report.summary_md(data).splitlines()
            if line.startswith("| ") and not line.startswith("| |")}
    assert list(rows) == ["OLFT", "final-layer", "all-layer"]
    for name, label in paper_report.STRATEGIES:
        cells = rows[label][1:]
        assert cells[0] == f"{data['table1']['sst2']['strategies'][name]['mean']:.1f}"
        assert cells[-2] == f"{data['paper_average'][name]['mean']:.1f}"
        assert cells[-1].split(" ")[0] == f"{data['table2'][name]['time_percent']:.0f}"
    assert "with selection" in rows["OLFT"][-1] and rows["all-layer"][-1] == "100"


def test_rerun_skips_finished_work_and_report_only_reproduces(bench, capsys):
    md_path, json_path = bench["results"] / "llama-adapter.md", bench["results"] / "llama-adapter.json"
    before = md_path.read_text(), json_path.read_text()
    stamps = {p: p.stat().st_mtime_ns for p in bench["work"].glob("*/results.json")}
    capsys.readouterr()
    assert paper.main(bench["argv"]) == 0
    assert "8 of 8 runs already finished; 0 to go" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    md_path.unlink()
    json_path.unlink()
    assert paper.main(["--model", bench["argv"][1], "--work-dir", str(bench["root"] / "work"),
                       "--results-dir", str(bench["results"]), "--report-only"]) == 0
    assert (md_path.read_text(), json_path.read_text()) == before


def test_plan_estimate_is_measured_on_finished_runs(bench, capsys):
    """After runs finish, --plan-only times the plan at the speed they took (the fallback profile
    has no probe at all), marks them finished, and the extra seed left is costed at that speed."""
    manifest = json.loads((bench["work"] / "bench.json").read_text())
    capsys.readouterr()
    assert paper.main([*bench["argv"], "--seeds", "0,1", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "measured on the 8 finished runs of this work dir" in out and "for the 5 unfinished runs" in out
    assert out.count("(finished)") == 8 and "rte-s1" in out and "rte-s1                    0.00 h  (finished)" not in out
    walls = manifest["wall_seconds"]
    by_task = {p.run_task: p for p in (paper.Plan(**v) for v in manifest["plans"].values())}
    caps = paper.Caps(**manifest["caps"])
    jobs = [j for j in paper.plan_jobs(manifest["columns"], {c: by_task[v["run_task"]] for c, v in manifest["plans"].items()},
                                       caps, manifest["sweep"], manifest["sweep_full"], manifest["paper_protocol"], 1)]
    finished = [j for j in jobs if paper.is_finished(bench["work"] / j.name)]
    speed, runs = paper.measured_speed(finished, by_task, caps, 4, paper.FALLBACK, walls)
    units = sum(paper.job_units(j, by_task.get(j.task), caps, 4) for j in jobs)
    assert runs == 8 and speed == pytest.approx(sum(walls[j.name] for j in jobs) * 1000 / units)


def test_partial_report_names_what_is_missing(bench, tmp_path):
    import shutil

    work = tmp_path / "work" / "llama-adapter"
    shutil.copytree(bench["work"], work)
    shutil.rmtree(work / "qqp-s0")
    (work / "rte-s0" / "pieces" / "strategy-full.json").unlink()
    results = json.loads((work / "rte-s0" / "results.json").read_text())
    del results["strategies"]["full"]
    results.update(complete=False, status="interrupted")
    (work / "rte-s0" / "results.json").write_text(json.dumps(results))
    # A run killed mid-selection: its selection is unfinished (no time recorded yet) and no strategy has a score.
    results = json.loads((work / "sst2-s0" / "results.json").read_text())
    results["selection"] = {k: v for k, v in results["selection"].items() if k not in ("seconds", "cpu_seconds")}
    results["selection"].update(status="unfinished", selected_layer=None)
    results.update(complete=False, status="interrupted", strategies={})
    (work / "sst2-s0" / "results.json").write_text(json.dumps(results))
    assert paper.main(["--model", "llama", "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "r"), "--report-only"]) == 0
    md = (tmp_path / "r" / "llama-adapter.md").read_text()
    assert "**PARTIAL**: 5 of 8 runs finished" in md
    assert "- qqp-s0: not started" in md and "- rte-s0: interrupted (finished: olft, final)" in md
    assert "- sst2-s0: interrupted" in md
    assert "Avg over 2 of 5 tasks (MNLI-m, MNLI-mm)" in md


def test_sweep_ties_are_no_evidence_for_the_best_layer():
    """A sweep where every layer scores the same says nothing about claim 3; a partial tie keeps every best layer."""
    import paper_report

    def verdict(scores: dict[int, float], losses: dict[int, float] | None = None) -> dict:
        runs = {"sweep-rte-s0": {"middle_bucket": [2, 3], "selection": {"candidates": [
            {"layer": k, "score": v, "metrics": {} if losses is None else {"loss": losses[k]}} for k, v in scores.items()]}}}
        manifest = {"sweep": ["rte"], "plans": {"rte": {"run_task": "rte"}}}
        table = {"rte": {"strategies": {"olft": {"layers": {"0": [3]}}}}}
        sweep = paper_report._sweep(manifest, runs, table)
        avg = {s: {"mean": None, "std": None} for s in ("olft", "final", "full")} | {"tasks": []}
        costs = {"olft": {"time_percent": None, "param_percent": None}}
        return sweep["rte"], paper_report._verdicts(avg, costs, sweep, 6).get("claim3")

    entry, claim = verdict({k: 0.5 for k in range(6)})
    assert entry["best_holdout_in_middle"] is None and entry["olft_matches_best"] is None and "no signal" in claim["ours"]
    assert claim["verdict"].startswith("not measured")
    entry, claim = verdict({0: 0.5, 1: 0.5, 2: 0.5, 3: 0.7, 4: 0.7, 5: 0.6})
    assert entry["best_holdout_tied"] == [3, 4] and entry["best_holdout_in_middle"] is True
    assert entry["olft_matches_best"] is True and claim["verdict"] == "confirmed"
    entry, claim = verdict({0: 0.9, 1: 0.5, 2: 0.5, 3: 0.7, 4: 0.7, 5: 0.6})
    assert entry["best_holdout_in_middle"] is False and claim["verdict"] == "not confirmed"


def test_sweep_falls_back_to_heldout_loss_only_when_scores_all_tie():
    import paper_report

    def entry(scores: dict[int, float], losses: dict[int, float]) -> tuple[dict, dict]:
        runs = {"sweep-rte-s0": {"middle_bucket": [2, 3], "selection": {"candidates": [
            {"layer": k, "score": v, "metrics": {"loss": losses[k]}} for k, v in scores.items()]}}}
        manifest = {"sweep": ["rte"], "plans": {"rte": {"run_task": "rte"}}}
        sweep = paper_report._sweep(manifest, runs, {"rte": {"strategies": {"olft": {"layers": {"0": [3]}}}}})
        avg = {s: {"mean": None, "std": None} for s in ("olft", "final", "full")} | {"tasks": []}
        costs = {"olft": {"time_percent": None, "param_percent": None}}
        return sweep["rte"], paper_report._verdicts(avg, costs, sweep, 6)["claim3"]

    losses = {0: 0.70, 1: 0.69, 2: 0.71, 3: 0.68, 4: 0.72, 5: 0.73}
    e, claim = entry({k: 0.5 for k in range(6)}, losses)
    assert e["evidence"] == "holdout_loss" and e["best_holdout_loss"] == 3 and e["best_holdout_loss_in_middle"] is True
    assert e["olft_matches_best"] is True and claim["verdict"] == "confirmed" and "by held-out loss" in claim["ours"]
    e, claim = entry({0: 0.6, 1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5}, losses)  # scores separate: they decide
    assert e["evidence"] == "holdout" and e["best_holdout"] == 0 and claim["verdict"] == "not confirmed"


def test_shards_partition_the_plan_and_share_wall_times(tmp_path):
    jobs = [paper.Job("main", t, 0) for t in ("sst2", "mrpc", "rte", "qqp", "wnli")] + [paper.Job("sweep", "rte", 0)]
    weights = dict(zip(jobs, [5.0, 3.0, 4.0, 2.0, 1.0, 6.0], strict=True))
    shards = [paper.shard_jobs(jobs, weights, k, 2) for k in range(2)]
    assert sorted(j.name for s in shards for j in s) == sorted(j.name for j in jobs)  # each run in exactly one shard
    assert all(s == [j for j in jobs if j in s] for s in shards)  # plan order kept
    assert abs(sum(weights[j] for j in shards[0]) - sum(weights[j] for j in shards[1])) <= max(weights.values())
    assert paper.shard_jobs(jobs, weights, 0, 1) == jobs
    # Two shards writing the shared manifest: neither loses the other's wall times.
    a, b = ({"command": "c", "jobs": [], "wall_seconds": {}} for _ in range(2))
    a["wall_seconds"]["sst2-s0"] = 10.0
    paper.write_manifest(tmp_path, a, updated={"sst2-s0"})
    b["wall_seconds"]["mrpc-s0"] = 7.0
    paper.write_manifest(tmp_path, b, updated={"mrpc-s0"})
    a["wall_seconds"]["rte-s0"] = 3.0
    paper.write_manifest(tmp_path, a, updated={"rte-s0"})
    saved = json.loads((tmp_path / "bench.json").read_text())["wall_seconds"]
    assert saved == {"sst2-s0": 10.0, "mrpc-s0": 7.0, "rte-s0": 3.0}
    assert paper.recorded_args(["--model", "m", "--shard", "1/2", "--seeds", "0", "--work-dir", "/w", "--results-dir=/r",
                                "--glue-dir", "/home/me/glue"]) == ["--model", "m", "--seeds", "0"]
    with pytest.raises(SystemExit):
        paper.parse_args(["--shard", "2/2"])


def test_selection_budget_study_scores_picks_against_the_sweep(bench, model_dirs):
    """benchmarks/selection_budget.py on the bench's finished full-train sweep: runs, resumes, reports."""
    import selection_budget

    argv = ["--model", str(model_dirs["llama"]), "--glue-dir", str(bench["root"] / "glue"), "--work-dir",
            str(bench["root"] / "work"), "--results-dir", str(bench["results"]), "--tasks", "rte", "--seeds", "0,1",
            "--budgets", "8x1-8,12x1-8", "--max-length", "16"]  # as the bench's sweep (the tiny model has 64 positions)
    assert selection_budget.main(argv) == 0
    data = json.loads((bench["results"] / "selection-budget-llama-adapter.json").read_text())
    sweep = json.loads((bench["work"] / "sweepfull-rte-s0" / "results.json").read_text())
    truth = {s["layers"][0]: 100 * s["score"] for s in sweep["strategies"].values()}
    rte = data["tasks"]["rte"]
    assert rte["truth"] == {str(k): v for k, v in truth.items()} or rte["truth"] == truth
    assert set(rte["budgets"]) == {"8x1-8", "12x1-8"} and all(b["summary"]["runs"] == 2 for b in rte["budgets"].values())
    for name, budget in rte["budgets"].items():
        for seed, run in budget["runs"].items():
            sel = json.loads((bench["root"] / "work" / "selection-budget-llama-adapter" / f"rte-{name}-s{seed}" /
                              "results.json").read_text())["selection"]
            scores = {c["layer"]: c["score"] for c in sel["candidates"]}
            losses = {c["layer"]: c["metrics"]["loss"] for c in sel["candidates"]}
            pick = min((1, 2), key=lambda k: (-scores[k], losses[k], k))  # middle third of 4 layers; loss breaks ties
            assert run["score"]["pick_middle"] == pick and run["score"]["pick_all"] == sel["selected_layer"]
            assert run["score"]["regret_middle"] == pytest.approx(max(truth[1], truth[2]) - truth[pick])
            assert run["loss"]["pick_all"] == min(losses, key=lambda k: (losses[k], k))
            assert run["loss"]["regret_all"] == pytest.approx(max(truth.values()) - truth[run["loss"]["pick_all"]])
    md = (bench["results"] / "selection-budget-llama-adapter.md").read_text()
    assert "| 12x1-8 | loss |" in md
    assert "Does selection find the best layer? llama, adapter" in (bench["results"] / "README.md").read_text()
    assert selection_budget.main(argv) == 0  # a rerun finds everything finished and rewrites the same report
    assert json.loads((bench["results"] / "selection-budget-llama-adapter.json").read_text())["tasks"] == data["tasks"]
    assert selection_budget.main([*argv, "--report-only"]) == 0  # the report names the command that made the runs
    assert json.loads((bench["results"] / "selection-budget-llama-adapter.json").read_text())["command"] == data["command"]
    assert "--report-only" not in data["command"] and "--seeds 0,1" in data["command"]


def test_selection_budget_bad_glue_dir_fails_cleanly(model_dirs, tmp_path, capsys):
    import selection_budget

    code = selection_budget.main(["--model", str(model_dirs["llama"]), "--glue-dir", str(tmp_path / "missing"), "--work-dir",
                                  str(tmp_path / "work"), "--results-dir", str(tmp_path / "results"), "--tasks", "rte"])
    assert code == 2 and "--glue-dir" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_sweep_gap_within_noise_is_no_evidence():
    """Held-out scores on 100 examples: a 2-point edge outside the middle is noise; a 30-point one is not."""
    import paper_report

    def claim(scores: dict[int, float], n: int) -> tuple[dict, dict]:
        runs = {"sweep-rte-s0": {"middle_bucket": [2, 3], "selection": {"score_examples": n, "candidates": [
            {"layer": k, "score": v, "metrics": {}} for k, v in scores.items()]}}}
        manifest = {"sweep": ["rte"], "plans": {"rte": {"run_task": "rte"}}}
        sweep = paper_report._sweep(manifest, runs, {"rte": {"strategies": {"olft": {"layers": {"0": [3]}}}}})
        avg = {s: {"mean": None, "std": None} for s in ("olft", "final", "full")} | {"tasks": []}
        costs = {"olft": {"time_percent": None, "param_percent": None}}
        return sweep["rte"], paper_report._verdicts(avg, costs, sweep, 6)["claim3"]

    entry, c = claim({0: 0.52, 1: 0.5, 2: 0.5, 3: 0.5, 4: 0.49, 5: 0.5}, 100)
    assert entry["noise_holdout"] == pytest.approx(200 * (0.52 * 0.48 / 100) ** 0.5)
    assert entry["best_holdout_in_middle"] is None and "within noise" in c["ours"] and c["verdict"].startswith("not measured")
    entry, c = claim({0: 0.8, 1: 0.5, 2: 0.5, 3: 0.5, 4: 0.49, 5: 0.5}, 100)
    assert entry["best_holdout_in_middle"] is False and c["verdict"] == "not confirmed"
    entry, c = claim({0: 0.52, 1: 0.5, 2: 0.5, 3: 0.5, 4: 0.49, 5: 0.5}, 100_000)  # the same gap on a huge set counts
    assert entry["best_holdout_in_middle"] is False


def test_sweep_noise_of_a_correlation_is_not_binomial():
    """MCC / Pearson: two standard errors are 2(1 - r^2)/sqrt(n - 1), not a binomial error of r as a
    proportion. At r = 0.13 on 1,000 examples that is 6.2 points (binomial: 4.3), so a 5-point edge
    outside the middle is noise for MCC but would count for accuracy."""
    import paper_report

    assert paper_report._two_se(13.0, 1000, "mcc") == pytest.approx(200 * (1 - 0.13 ** 2) / 999 ** 0.5)
    assert paper_report._two_se(-20.0, 1000, "pearson") == pytest.approx(200 * (1 - 0.04) / 999 ** 0.5)
    assert paper_report._two_se(13.0, 1000, "accuracy") == pytest.approx(200 * (0.13 * 0.87 / 1000) ** 0.5)
    scores = {0: 18.0, 1: 10.0, 2: 13.0, 3: 12.0, 4: 9.0, 5: 8.0}
    for metric, in_middle in (("mcc", None), ("accuracy", False)):
        runs = {"cola-s0": {"metric": metric}}
        entry = paper_report._oracle_entry("cola", {"scores": scores, "seeds": ["0"]}, [2, 3], 1000, [2],
                                           paper_report._metric_of("cola", runs))
        assert entry["metric"] == metric and entry["best_validation_in_middle"] is in_middle


def test_claim3_needs_most_sweeps_to_separate_the_layers():
    import paper_report

    def task(inside):
        return {"evidence": "validation", "best_validation": 3, "best_validation_tied": [3], "best_validation_in_middle": inside,
                "middle_bucket": [2, 3], "olft_chose": [3], "olft_matches_best": None, "validation": {3: 1.0}}

    avg = {s: {"mean": None, "std": None} for s in ("olft", "final", "full")} | {"tasks": []}
    costs = {"olft": {"time_percent": None, "param_percent": None}}
    verdict = paper_report._verdicts(avg, costs, {"rte": task(None), "mrpc": task(None), "qnli": task(True)}, 6)["claim3"]["verdict"]
    assert verdict.startswith("partly")
    verdict = paper_report._verdicts(avg, costs, {"rte": task(None), "qnli": task(True)}, 6)["claim3"]["verdict"]
    assert verdict == "confirmed"


def _write_results(folder: Path, scores: dict[str, float]) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"status": "complete", "strategies": {
        name: {"score": score} for name, score in scores.items()}}))


def test_grid_choice_is_each_strategys_best_mean_with_ties_to_the_lower_rate(tmp_path):
    from paper_report import grid_results

    caps = {"lr_grid": "1e-4,1e-3", "grid_tasks": "sst2,mrpc", "grid_train_samples": 10, "grid_holdout_samples": 5}
    _write_results(tmp_path / "lr0.0001-sst2-s0", {"olft": 0.70, "full": 0.80})
    _write_results(tmp_path / "lr0.001-sst2-s0", {"olft": 0.90, "full": 0.80})
    _write_results(tmp_path / "lr0.0001-mrpc-s0", {"olft": 0.70, "full": 0.60})
    g = grid_results(tmp_path, caps)
    assert g["chosen"] is None and g["missing"] == ["lr0.001-mrpc-s0"]  # no choice from a partial grid
    _write_results(tmp_path / "lr0.001-mrpc-s0", {"olft": 0.60, "full": 0.60})
    g = grid_results(tmp_path, caps)
    assert g["means"]["olft"] == pytest.approx({"0.0001": 70.0, "0.001": 75.0})
    assert g["chosen"] == {"olft": 1e-3, "full": 1e-4}  # full: 70.0 at both rates, the lower one wins


@pytest.fixture(scope="module")
def grid_bench(model_dirs, tmp_path_factory):
    """A benchmark with a two-rate grid on SST-2, then one main SST-2 run at the chosen rates."""
    root = tmp_path_factory.mktemp("grid")
    glue = make_glue(root / "glue", n_train=48, n_dev=24)
    argv = ["--model", str(model_dirs["gpt2"]), "--glue-dir", str(glue), "--work-dir", str(root / "work"),
            "--results-dir", str(root / "results"), "--tasks", "sst2", "--sweep", "", "--paper-protocol", "",
            "--seeds", "0", "--max-train-samples", "24", "--max-eval-samples", "16", "--max-length", "16",
            "--epochs", "1", "--batch-size", "8", "--selection-train-samples", "12", "--selection-eval-samples", "8",
            "--lr-grid", "1e-4,3e-2", "--grid-tasks", "sst2", "--grid-train-samples", "24", "--grid-holdout-samples", "12"]
    assert paper.main(argv) == 0
    return {"glue": glue, "work": root / "work" / "gpt2-adapter", "results": root / "results"}


def test_grid_runs_on_held_out_train_data_and_main_runs_take_its_choice(grid_bench):
    work = grid_bench["work"]
    data = work / "data" / "grid" / "sst2"
    rows = lambda f: [json.loads(line)["sentence"] for line in (data / f).read_text().splitlines()]  # noqa: E731
    train, held = rows("train.jsonl"), rows("validation.jsonl")
    glue_train = {line.split("\t")[0] for line in (grid_bench["glue"] / "SST-2" / "train.tsv").read_text().splitlines()[1:]}
    assert len(held) == 12 and len(train) == 24 and not set(train) & set(held) and set(train + held) <= glue_train
    chosen = {}
    for name in ("olft", "final", "full"):
        by_lr = {lr: json.loads((work / f"lr{lr}-sst2-s0" / "results.json").read_text())["strategies"][name]["score"]
                 for lr in ("0.0001", "0.03")}
        chosen[name] = float(max(by_lr, key=lambda lr: (by_lr[lr], -float(lr))))
    main_run = json.loads((work / "sst2-s0" / "results.json").read_text())
    assert {n: main_run["strategies"][n]["lr"] for n in chosen} == chosen
    report = (grid_bench["results"] / "gpt2-adapter.md").read_text()
    assert "## Learning rates" in report and "| OLFT | " in report and "Grid unfinished" not in report


@pytest.mark.parametrize("grid", ["abc", "0", "1e-3,1e-3"])
def test_a_malformed_lr_grid_is_refused_before_anything_is_written(grid, tmp_path, capsys):
    argv = ["--model", "minilm-l6", "--work-dir", str(tmp_path / "work"), "--lr-grid", grid, "--plan-only"]
    assert paper.main(argv) == 2
    assert "--lr-grid" in capsys.readouterr().err and not (tmp_path / "work").exists()


def test_commands_on_one_work_dir_add_up_at_one_budget(tmp_path):
    """`--tasks rte` then `--tasks mrpc --seeds 1` on one work dir: the report covers both; a command at
    another budget starts a fresh manifest (its tables never mix two budgets)."""
    def manifest(cmd, columns, seeds, jobs, cap=2000):
        return {"command": cmd, "model": "m", "method": "adapter", "threads": 1, "columns": columns,
                "caps": {"seeds": seeds, "max_train_samples": cap}, "sweep": [], "sweep_full": False,
                "paper_protocol": None, "plans": {c: {"run_task": c} for c in columns}, "jobs": jobs}

    first = paper.merged_manifest({}, manifest("a", ["rte"], "0", ["rte-s0"]))
    assert first["commands"] == ["a"]
    both = paper.merged_manifest(first, manifest("b", ["mrpc"], "1", ["mrpc-s1"]))
    assert both["columns"] == ["rte", "mrpc"] and both["caps"]["seeds"] == "0,1"
    same = paper.merged_manifest(both, manifest("b2", ["mrpc"], "1", ["mrpc-s1"]))  # b spelled otherwise: the later stays
    assert same["commands"] == ["a", "b2"]
    wider = paper.merged_manifest(same, manifest("d", ["mrpc", "rte"], "0,1", ["mrpc-s0", "rte-s0", "mrpc-s1", "rte-s1"]))
    assert wider["columns"] == ["mrpc", "rte"] and wider["commands"] == ["d"]  # d alone reruns every job
    assert both["jobs"] == ["rte-s0", "mrpc-s1"] and both["commands"] == ["a", "b"] and set(both["plans"]) == {"rte", "mrpc"}
    assert paper.merged_manifest(both, manifest("b", ["mrpc"], "1", ["mrpc-s1"])) == both  # a rerun (or a second shard) adds nothing
    # Two commands at one budget running at once: each write merges the file's plan, so neither drops the other's.
    # Each writes again as its runs finish: a command's jobs stay its own, so neither claims the other's.
    a, b = manifest("a", ["rte"], "0", ["rte-s0"]), manifest("b", ["mrpc"], "1", ["mrpc-s1"])
    for m in (a, b, a, b, a):
        paper.write_manifest(tmp_path, m)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["jobs"] == ["rte-s0", "mrpc-s1"] and on_disk["commands"] == ["a", "b"]
    assert on_disk["command_jobs"] == {"a": ["rte-s0"], "b": ["mrpc-s1"]}
    # A narrower command run again and again on a work dir of a wider one: the wider stays the one that reruns all.
    (tmp_path / "bench.json").unlink()
    wide, narrow = manifest("w", ["rte", "mrpc"], "0", ["rte-s0", "mrpc-s0"]), manifest("n", ["mrpc"], "0", ["mrpc-s0"])
    wide["estimate"], narrow["estimate"] = "2 h for all 2 runs", "1 h for all 1 runs"
    for m in (wide, narrow, narrow, narrow):
        paper.write_manifest(tmp_path, m)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["commands"] == ["w"] and on_disk["command_jobs"] == {"w": ["rte-s0", "mrpc-s0"]}
    assert (on_disk["command"], on_disk["estimate"]) == ("w", "2 h for all 2 runs")  # the report's "estimated before the run"
    legacy = {**manifest("y", ["rte"], "0", ["rte-s0", "rte-s1"]), "commands": ["x", "y"]}  # older: no jobs per command
    assert paper.merged_manifest(legacy, manifest("y", ["rte"], "0", ["rte-s0"]))["commands"] == ["x", "y"]
    # One listed command whose manifest holds other commands' jobs too: its jobs are unknown, so it drops nothing.
    single = {**manifest("y", ["rte"], "0,1", ["rte-s0", "rte-s1"]), "commands": ["y"]}
    assert paper.merged_manifest(single, manifest("z", ["rte"], "0", ["rte-s0"]))["commands"] == ["y", "z"]
    other = paper.merged_manifest(both, manifest("c", ["mrpc"], "1", ["mrpc-s1"], cap=500))
    assert other["columns"] == ["mrpc"] and other["commands"] == ["c"] and other["jobs"] == ["mrpc-s1"]


def test_full_plan_gap_names_each_tasks_missing_seeds():
    import paper_report

    d = {"model": "minilm-l6", "caps": {"seeds": "0,1"}, "table1": {c: {} for c, _ in paper.COLUMNS + paper.EXTRA_COLUMNS}}
    d["planned_seeds"] = {c: ["0", "1", "2"] for c in d["table1"]}
    assert paper_report.full_plan_gap(d) is None
    d["planned_seeds"] = {c: ["0"] for c in d["table1"]}
    assert paper_report.full_plan_gap(d) == "the model's full plan also has seeds 1, 2"
    d["planned_seeds"]["rte"] = ["0", "1", "2"]
    del d["table1"]["wnli"]
    gap = paper_report.full_plan_gap(d)
    assert gap.startswith("the model's full plan also has tasks WNLI, SST-2 seeds 1, 2;") and "RTE" not in gap


def test_table2_cpu_basis_needs_one_cpu_scope_and_takes_selection_cpu():
    """CPU seconds counted two ways (an older olft also counted building the evaluation caches) never
    mix: the table falls back to wall seconds and says so; selection's CPU seconds join the CPU basis."""
    import paper_report

    def cell(scope, cpu_scale=1.0):
        st = {name: {"train_seconds": {"0": wall}, "train_cpu_seconds": {"0": wall * cpu_scale}, "layers": {"0": [k]},
                     "load_average": {"0": [1.0, 1.0, 1.0]}, "cpu_scope": {"0": scope}}
              for name, wall, k in (("olft", 60.0, 3), ("final", 30.0, 5), ("full", 100.0, 0))}
        return {"strategies": st, "selection_seconds": {"0": 10.0}, "selection_cpu_seconds": {"0": 5.0}}

    new = "training + training split's cache build"
    costs = paper_report._costs({"rte": cell(new, 0.5), "mrpc": cell(new, 0.5)}, 6)
    assert costs["basis"] == "cpu" and costs["selection_basis"] == "cpu" and not costs["cpu_scopes_differ"]
    assert costs["whole_run_vs_all_layer_per_task"]["rte"] == pytest.approx(100 * (30 + 5) / 50)
    assert costs["stack_share_percent_per_task"]["rte"] == pytest.approx(50)
    assert costs["cpu_scope"] == new and paper_report._costs({"rte": cell(None)}, 6)["cpu_scope"] is None  # old: caveat shown
    mixed = paper_report._costs({"rte": cell(new, 0.5), "mrpc": cell(None, 0.5)}, 6)
    assert mixed["basis"] == "wall" and mixed["cpu_scopes_differ"]
    assert mixed["whole_run_vs_all_layer_per_task"]["rte"] == pytest.approx(100 * (60 + 10) / 100)
    no_sel_cpu = {"rte": cell(new, 0.5)}
    del no_sel_cpu["rte"]["selection_cpu_seconds"]
    costs = paper_report._costs(no_sel_cpu, 6)
    assert costs["basis"] == "cpu" and costs["selection_basis"] == "wall"
    assert costs["whole_run_vs_all_layer_per_task"]["rte"] == pytest.approx(100 * (30 + 10) / 50)


def test_a_strategy_resumed_mid_training_is_left_out_of_table2_times():
    """A strategy resumed from a checkpoint recorded only the steps after it (QNLI's all-layer tuning:
    25 of 375 steps made OLFT's time 694 % of it): its run is left out of the time means and named;
    its score still counts in Table 1."""
    import paper_report

    def run(full_resumed):
        entry = {"score": 0.8, "layers": [3], "peft_params": 10, "timed_by": {"cpu_scope": "x"}}
        st = {"olft": {**entry, "train_seconds": 60.0, "train_cpu_seconds": 60.0, "resumed_at": 0},
              "final": {**entry, "train_seconds": 30.0, "train_cpu_seconds": 30.0, "resumed_at": 0},
              "full": {**entry, "layers": [0, 1], "train_seconds": 100.0 if not full_resumed else 5.0,
                       "train_cpu_seconds": 100.0 if not full_resumed else 5.0, "resumed_at": 350 if full_resumed else 0}}
        return {"strategies": st, "metric": "accuracy", "all_layer_peft_params": 60,
                "selection": {"seconds": 10.0, "cpu_seconds": 10.0, "chosen": 3, "candidates": []}}

    runs = {"rte-s0": run(False), "mrpc-s0": run(True), "cola-s0": run(True)}
    # a newer olft's checkpoint carries the earlier run's time: the whole time, kept
    runs["cola-s0"]["strategies"]["full"].update(train_seconds=100.0, train_cpu_seconds=100.0, seconds_before_resume=95.0)
    plan = {"note": "", "source": "glue", "split": None}
    table = {t: paper_report._column({**plan, "run_task": t}, [0], runs) for t in ("rte", "mrpc", "cola")}
    assert table["mrpc"]["strategies"]["full"]["mean"] == pytest.approx(80.0)  # scored as any run
    costs = paper_report._costs(table, 6)
    assert costs["runs"] == 2 and costs["partial_time"] == ["mrpc-s0 full"]
    assert costs["olft"]["time_percent"] == pytest.approx(60.0) and list(costs["olft_time_percent_per_task"]) == ["rte", "cola"]
    shown = "\n".join(paper_report._table2({"table2": costs, "average": {n: {"mean": 80.0} for n in ("olft", "final", "full")}}))
    assert "over the 2 runs where all three strategies finished with whole timings (left out: mrpc-s0 full, resumed " \
           "from a checkpoint, so its recorded time counts only the steps after it)" in shown


def test_glance_shows_the_average_the_verdict_rests_on():
    """With CoLA / STS-B beside the paper's tasks, the overview cell quotes the paper-task average its
    verdict is judged on, not the average over every column."""
    import paper_report

    def means(olft, final, full):
        return {"olft": {"mean": olft}, "final": {"mean": final}, "full": {"mean": full}}

    d = {"average": means(60.0, 57.7, 57.2), "paper_average": means(50.0, 53.9, 60.2), "table2": {"olft": {}}}
    assert paper_report._glance("claim1", d) == "-3.9" and paper_report._glance("claim2", d) == "-10.2"


def test_command_line_caps_override_the_profile_and_its_reasons(capsys, tmp_path, model_dirs):
    """--max-train-samples alone caps every task (the profile's SST-2 8,000 would silently train more);
    the report's reasons then name the changed caps; the default paper protocol rides only with its task."""
    args = paper.parse_args(["--model", "minilm-l6", "--max-train-samples", "64"])
    caps = paper.resolve_caps(args)
    assert caps.train_cap("sst2") == 64 and caps.train_cap("rte") == 64
    assert paper.resolve_caps(paper.parse_args(["--model", "minilm-l6"])).train_cap("sst2") == 8000
    profile = paper.PROFILES["minilm-l6"]
    assert paper.caps_notes(profile, paper.resolve_caps(paper.parse_args(["--model", "minilm-l6", "--seeds", "0"]))) == profile.notes
    notes = paper.caps_notes(profile, caps)
    assert notes.startswith("set on the command line: --max-train-samples, --task-train-caps differ")
    assert paper._dur(0.02) == "1.2 min" and paper._dur(0.5) == "30 min" and paper._dur(2.04) == "2.0 h"
    glue = make_glue(tmp_path / "glue", n_train=16, n_dev=8)
    capsys.readouterr()
    base = ["--model", str(model_dirs["llama"]), "--seeds", "0", "--sweep", "", "--work-dir", str(tmp_path / "w"), "--glue-dir", str(glue), "--plan-only"]
    assert paper.main([*base, "--tasks", "sst2"]) == 0
    out = capsys.readouterr().out
    assert "sst2-s0" in out and "paper-rte" not in out  # the default protocol task (RTE) is not among --tasks
    assert paper.main([*base, "--tasks", "sst2,rte"]) == 0 and "paper-rte-s0" in capsys.readouterr().out


def test_keep_pieces_copies_finished_runs_small_files_only(tmp_path):
    """What the report and a resume need, of finished runs only: an unfinished run's pieces would
    claim weights that are not kept."""
    import keep_pieces

    work = tmp_path / "work" / "m-adapter"
    for name, status in (("rte-s0", "complete"), ("mrpc-s0", "running")):
        (work / name / "pieces").mkdir(parents=True)
        (work / name / "weights").mkdir()
        (work / name / "results.json").write_text(json.dumps({"status": status}))
        (work / name / "config.json").write_text("{}")
        (work / name / "pieces" / "strategy-olft.json").write_text("{}")
        (work / name / "weights" / "olft.safetensors").write_bytes(b"x")
    (work / "bench.json").write_text("{}")
    assert keep_pieces.keep(tmp_path / "work", tmp_path / "kept") == {"m-adapter": 1}
    kept = sorted(str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*") if p.is_file())
    assert kept == ["m-adapter/bench.json", "m-adapter/rte-s0/config.json", "m-adapter/rte-s0/pieces/strategy-olft.json",
                    "m-adapter/rte-s0/results.json"]
    assert paper.is_finished(tmp_path / "kept" / "m-adapter" / "rte-s0")


@pytest.mark.parametrize("selector", ["auto", "probe", "gradient", "exhaustive", "halving", "probe-halving"])
def test_jobs_tell_olft_of_no_option_their_selector_ignores(selector, tmp_path, caplog):
    """Every job sets --selection-adaptive 0 (no retraining), and config.json records it as before
    whatever the selector, so earlier folders continue; but olft is told it was set only where the
    selector reads it: under auto or a proxy its log carries no "--selection-adaptive is ignored".
    (A cap the fallback profile sets off olft's default, --selection-epochs 1, is unused by a proxy
    and rightly named so: not this test's business.)"""
    import argparse
    from dataclasses import replace

    from olft import api
    from olft.config import ignored_options
    from olft.errors import OlftError

    caps = replace(paper.FALLBACK.caps, selector=selector)
    plan = paper.Plan("rte", "rte", None, "glue")
    args = argparse.Namespace(glue_dir=str(tmp_path), model="none", method="adapter")
    for kind in ("main", "paper", "sweep", "sweepfull", "lr"):
        cfg = paper.job_config(paper.Job(kind, "rte", 0, 1e-3 if kind == "lr" else None), plan, args, caps, tmp_path / kind, 4)
        assert cfg.selection.selection_adaptive == 0  # what every earlier run folder's config.json holds
        given = paper.olft_given(cfg)
        lines = ignored_options(cfg, given, "select" if kind == "sweep" else "run")
        assert not lines, (kind, selector, lines)  # the benchmark's own settings: no warning in its logs
        if kind == "sweepfull":
            continue  # tunes given layers: no selection option is read
        trains = cfg.selection.selector in ("exhaustive", "halving", "probe-halving")
        assert (paper.ADAPTIVE in given) == trains  # still named where it does something
    caplog.clear()  # as the benchmark calls olft: no warning before the (missing) model fails to load
    cfg = paper.job_config(paper.Job("main", "rte", 0), plan, args, caps, tmp_path / "call", 4)
    with pytest.raises(OlftError):
        api.run(cfg, quiet=True, given=paper.olft_given(cfg))
    assert "--selection-adaptive" not in caplog.text, caplog.text


def test_a_sweep_of_the_middle_third_alone_is_no_evidence_for_claim_3():
    """The selection benchmark's oracle on smollm2-135m tunes its candidates, layers 10-19 (the
    middle third) only: its best layer is in the middle by construction, so it must not count."""
    import paper_report

    middle = list(range(10, 20))
    scores = {k: 50.0 + k for k in middle}  # a clear best (19), far outside any noise
    entry = paper_report._oracle_entry("cola", {"scores": scores, "seeds": ["0", "1"]}, middle, 1000, [], "accuracy")
    assert entry["best_validation_in_middle"] is None and entry["middle_only_validation"] is True
    assert "middle third only" in paper_report._noise_text(entry)
    wider = paper_report._oracle_entry("cola", {"scores": {**scores, 5: 40.0}, "seeds": ["0"]}, middle, 1000, [], "accuracy")
    assert wider["best_validation_in_middle"] is True
