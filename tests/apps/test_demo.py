"""`nanolens demo --quick` end to end (the README's first command, at test size), and the
`nanolens steer` variants that read the demo's run."""

from __future__ import annotations

import json

import pytest
import torch

from nanolens.cli import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "--quick", "--out", str(out), "--quiet", "--device", "cpu"])
    torch.set_num_threads(before)
    assert rc == 0
    return out


@pytest.mark.slow
def test_demo_quick_writes_the_report_plots_and_vectors(demo):
    report = (demo / "report.md").read_text(encoding="utf-8")
    for section in ("## Model and training", "## Probes", "## Directions", "## Steering held-out openings", "### Samples",
                    "### Confirmation on fresh openings", "## Vector arithmetic: two directions at once"):
        assert section in report
    for column in ("frac_pos_at_neg", "frac_pos_unsteered", "frac_pos_at_pos", "ppl_at_pos", "max_move"):
        assert column in report
    for method in ("contrast_pair", "mean_difference", "pca", "probe", "random"):
        assert f"| {method} |" in report
    for png in ("probe_accuracy.png", "steering_vs_coeff.png", "heatmap_mean_difference.png", "run/loss_curve.png"):
        assert (demo / png).stat().st_size > 1000, png
    summary = json.loads((demo / "summary.json").read_text(encoding="utf-8"))
    assert summary["best"]["method"] in ("contrast_pair", "mean_difference", "pca", "probe")
    assert {row["method"] for row in summary["summary"]} >= {"mean_difference", "random"}
    assert summary["seconds"] > 0 and summary["train"]["iters"] > 0
    # the confirmation: unsteered, the best method at both coefficients, 2 random draws at both, the pooled draws
    confirm = summary["confirmation"]
    assert [r["setting"] for r in confirm][:3] == ["unsteered", f"{summary['best']['method']} {summary['best']['neg_coeff']:+g}",
                                                   f"{summary['best']['method']} {summary['best']['pos_coeff']:+g}"]
    assert len(confirm) == 3 + 2 * 2 + 2 and confirm[-1]["setting"] == "random (mean of 2)"
    assert 0 <= summary["control_move_at_best_coeffs"] <= 1
    two = summary["two_directions"]
    assert len(two["table"]) == 9 and abs(two["cos_after"]) < 1e-5
    assert {"positive_frac_positive", "female_frac_positive", "perplexity"} <= set(two["table"][0])
    assert len(two["swings"]) == 6 and all(-1 <= row["change"] <= 1 for row in two["swings"])
    assert list((demo / "vectors").glob("mean_difference_L1.safetensors"))
    assert (demo / "run" / "last" / "config.json").is_file()


@pytest.mark.slow
def test_steer_reads_the_demo_run(demo, tmp_path, capsys):
    from nanolens.steering import SteeringVector

    vec = SteeringVector.load(demo / "vectors" / "mean_difference_L1")
    assert vec.provenance["method"] == "mean_difference" and vec.hooks == ["blocks.1.hook_resid_pre"]
    base = ["steer", "--ckpt", str(demo / "run"), "--quiet", "--device", "cpu", "--max-new-tokens", "12"]
    rc = main(base + ["--vector", str(demo / "vectors" / "mean_difference_L1"), "--coeff", "0.5", "--relative"])
    out = capsys.readouterr()
    assert rc == 0 and out.out.count("=== prompt") == 3 and "touched" in out.err
    rc = main(base + ["--method", "mean-diff", "--dataset", "sentiment", "--n", "8", "--layer", "1", "--sweep",
                      "--coeffs=-0.5,0,0.5", "--relative", "--num-samples", "1", "--out", str(tmp_path / "sweep")])
    out = capsys.readouterr()
    assert rc == 0 and "frac_positive" in out.out and (tmp_path / "sweep" / "steer_heatmap.png").is_file()
    rc = main(base + ["--positive", "happy", "--negative", "sad", "--layer", "1", "--coeff", "2", "--read", "mean"])
    assert rc == 0 and "steered: coeff +2" in capsys.readouterr().out


def test_demo_rejects_unknown_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--data", "wikipedia", "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err


SHAKESPEARE = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.slow
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"tiny Shakespeare is not at {SHAKESPEARE}")
def test_demo_quick_on_shakespeare_scores_with_vader(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOLENS_DATA", str(SHAKESPEARE))
    before = torch.get_num_threads()
    try:
        rc = main(["demo", "--quick", "--data", "shakespeare", "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    methods = {row["method"] for row in summary["summary"]}
    assert {"mean_difference", "pca", "random"} <= methods, (methods, summary["notes"])  # read as the mean over each line
    assert "vader" in (tmp_path / "report.md").read_text(encoding="utf-8")
