"""Groups over seeds (mean, sample std, Student t interval) and collapsed models."""

import json
import math
import statistics

import pytest
import torch

from fmae import evaluation, model, stats
from fmae.config import ModelConfig
from tests.helpers import cli


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(df) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("df,quantile,p_at_1_7", [(2.5, 3.5746548420036817, 0.20561221715988381),
                                                   (3.283676, 3.0324267728013523, 0.17974247239566937),
                                                   (7.1, 2.3578895382290934, 0.1323249369509428),
                                                   (40.0, 2.021075390306273, 0.09689545762357454)])
def test_t_at_real_df_matches_scipy(df, quantile, p_at_1_7):
    # reference values from scipy.stats.t (ppf(0.975, df), 2 * sf(1.7, df)); scipy is no dependency
    assert stats.t_quantile_real(df) == pytest.approx(quantile, rel=1e-9)
    assert stats.t_p_two_sided(1.7, df) == pytest.approx(p_at_1_7, rel=1e-9)
    assert stats.t_quantile_real(4.0) == pytest.approx(stats.t_quantile(4), rel=1e-9)


def test_welch_matches_scipy_and_paired_t_too():
    a, b = [0.005761, 0.006036, 0.006846], [0.006969, 0.007046, 0.007987, 0.0071]
    w = stats.welch(a, b)  # scipy.stats.ttest_ind(a, b, equal_var=False) and its confidence_interval()
    assert w["t"] == pytest.approx(-2.6282029596864787, rel=1e-9)
    assert w["df"] == pytest.approx(3.9634140708503525, rel=1e-9)
    assert w["p"] == pytest.approx(0.05884400962499358, rel=1e-8)
    assert (w["low"], w["high"]) == pytest.approx((-0.002186280657225675, 6.394732389233956e-05), rel=1e-8)
    assert w["diff"] == pytest.approx(statistics.mean(a) - statistics.mean(b))
    pt = stats.paired_t([1.0, 2.0, 3.5], [0.5, 1.9, 2.0])  # scipy.stats.ttest_rel
    assert (pt["t"], pt["p"], pt["df"]) == pytest.approx((1.6813456149534152, 0.2347174570670461, 2), rel=1e-9)
    assert stats.sign_test_min_p(3) == 0.25 and stats.sign_test_min_p(5) == 0.0625
    with pytest.raises(ValueError):
        stats.welch([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        stats.welch([1.0, 1.0], [2.0, 2.0])


def test_spread_is_the_sample_std_and_t_interval():
    values = [0.0123, 0.0131, 0.0119]
    mean, std, ci = stats.spread(values)
    assert mean == pytest.approx(statistics.fmean(values)) and std == pytest.approx(statistics.stdev(values))
    assert ci == pytest.approx(4.302653 * std / math.sqrt(3), rel=1e-6)
    assert stats.spread([0.5]) == (0.5, None, None) and stats.spread([]) == (None, None, None)


def _row(optim, lr, hidden, seed, loss, status="completed"):
    return {"optim": optim, "lr": lr, "hidden": hidden, "seed": seed, "status": status, "final_test_loss": loss}


def test_groups_rank_by_mean_and_never_rank_a_group_with_a_lost_seed():
    rows = [_row("adam", 0.001, 16, s, v) for s, v in enumerate([0.03, 0.031, 0.032])]
    rows += [_row("adam", 0.001, 32, s, v) for s, v in enumerate([0.02, 0.021, 0.022])]
    rows += [_row("adam", 0.1, 16, 0, 0.2065, "collapsed"), _row("adam", 0.1, 16, 1, 0.01),
             _row("adam", 0.1, 16, 2, 0.01)]
    groups = stats.groups(rows)
    assert [(g["hidden"], g["lr"], g["rank"]) for g in groups] == [(32, 0.001, 1), (16, 0.001, 2), (16, 0.1, None)]
    lost = groups[2]
    assert lost["n"] == 3 and lost["n_used"] == 2 and lost["statuses"] == {"collapsed": 1, "completed": 2}
    assert groups[0]["mean_final_test_loss"] == pytest.approx(0.021)
    assert groups[0]["std_final_test_loss"] == pytest.approx(0.001)
    assert stats.has_seeds(rows) and not stats.has_seeds([r for r in rows if r["seed"] == 0])


def _dead_output_model(hidden=8):
    ae = model.build(ModelConfig(hidden=hidden), seed_generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, p in ae.named_parameters():
            if name.startswith("decoder"):
                p.zero_() if p.dim() > 1 else p.fill_(-1.0)
    return ae


def test_a_model_with_every_output_unit_dead_is_collapsed(tiny_data):
    ae = _dead_output_model()
    assert float(evaluation.reconstruct(ae, tiny_data.test_images).abs().max()) == 0.0  # the fault is real
    assert evaluation.is_collapsed(ae, tiny_data.test_images)
    fresh = model.build(ModelConfig(hidden=8), seed_generator=torch.Generator().manual_seed(0))
    assert not evaluation.is_collapsed(fresh, tiny_data.test_images)


@pytest.mark.dataset
def test_seed_groups_and_collapsed_cells_on_real_data(monkeypatch, tmp_path, real_data_dir):
    """The issue's example: Adam lr 0.001 and 0.1 x h 16, 32 x seeds 0 1 2, 2 epochs."""
    monkeypatch.setenv("FMAE_DATA_DIR", str(real_data_dir))
    out = tmp_path / "s"
    result = cli("sweep", "--optim", "adam", "--lr", "0.001", "0.1", "--hidden", "16", "32",
                 "--seed", "0", "1", "2", "--epochs", "2", "-q", "--json", "--run-dir", str(out))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    cells, groups = doc["cells"], doc["groups"]
    assert len(groups) == 4 and all(g["n"] == 3 for g in groups)
    for g in groups:
        mine = [c for c in cells if (c["optim"], c["lr"], c["hidden"]) == (g["optim"], g["lr"], g["hidden"])]
        if g["lr"] == 0.1:
            assert {c["status"] for c in mine} == {"collapsed"} and all(c["rank"] is None for c in mine)
            assert g["rank"] is None and g["statuses"] == {"collapsed": 3} and g["mean_final_test_loss"] is None
        else:
            losses = [c["final_test_loss"] for c in mine]
            assert g["mean_final_test_loss"] == pytest.approx(statistics.fmean(losses), rel=1e-12)
            assert g["std_final_test_loss"] == pytest.approx(statistics.stdev(losses), rel=1e-9)
            assert g["rank"] in (1, 2)
    assert doc["best"]["lr"] == 0.001 and doc["best_group_per_optim"]["adam"]["lr"] == 0.001
    saved = json.loads((out / "results.json").read_text())
    assert saved["groups"] == groups
    lines = (out / "results_groups.csv").read_text().splitlines()
    assert lines[0].startswith("rank,optim,lr,hidden,n,") and len(lines) == 5
    best_cell = out / "cells" / "adam-lr0.001-h32-s{}".format(doc["best"]["seed"])
    assert (out / "best.pt").read_bytes() == (best_cell / "model.pt").read_bytes()
