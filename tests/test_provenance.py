"""examples/provenance.py, the study's bookkeeping: a sweep's cells must share one environment (one
machine, one mode, one version) for its record; publishing copies the files, their per-epoch curves
and writes provenance.json, keeping the records of files published before and not remade."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("provenance", ROOT / "examples" / "provenance.py")
provenance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(provenance)

MACHINE = {"cpu": "Some CPU", "vendor": "GenuineIntel", "arch": "x86_64", "isa": ["avx2"],
           "torch_cpu_capability": "AVX2", "mkl_cbwr": "AVX2", "numerics": "portable"}


def sweep(run_dir: Path, name: str, cells: dict[str, dict]) -> Path:
    """A sweep directory with these cells (name -> machine), each with a config.json, metrics.csv."""
    root = run_dir / name
    for cell, machine in cells.items():
        (root / "cells" / cell).mkdir(parents=True)
        env = {"fmae": "0.1.0", "torch": "2.14.1", "device": "cpu", "threads": 1, "engine": "cells",
               "machine": machine}
        (root / "cells" / cell / "config.json").write_text(json.dumps({"environment": env}))
        (root / "cells" / cell / "metrics.csv").write_text(
            "epoch,train_loss,test_loss,seconds\n1,0.5,0.25,1.0\n2,0.4,0.125,1.0\n")
    (root / "results.csv").write_text(f"rank,model\n1,{run_dir}/{name}/cells/x/model.pt\n")
    return root


def test_a_record_names_the_command_the_commit_and_the_one_environment(tmp_path):
    sweep(tmp_path, "grid", {"adam-lr0.001-h8-s0": MACHINE, "adam-lr0.001-h8-s1": MACHINE})
    provenance.record(tmp_path, "grid", "abc1234", ["fmae", "sweep", "--reproducible"])
    rec = json.loads((tmp_path / "grid.provenance.json").read_text())
    assert rec["command"] == "fmae sweep --reproducible" and rec["commit"] == "abc1234" and rec["cells"] == 2
    assert (rec["numerics"], rec["mkl_cbwr"], rec["cpu"], rec["threads"]) == ("portable", "AVX2", "Some CPU", 1)


def test_a_record_says_when_the_sweep_ended_not_when_it_was_recorded(tmp_path):
    import os

    root = sweep(tmp_path, "grid", {"adam-lr0.001-h8-s0": MACHINE})
    (root / "results.json").write_text("{}")
    os.utime(root / "results.json", (1_780_000_000, 1_780_000_000))  # the sweep's last write: 2026-05-28
    provenance.record(tmp_path, "grid", "abc1234", ["fmae", "sweep"])
    assert json.loads((tmp_path / "grid.provenance.json").read_text())["finished"] == "2026-05-28T20:26:40Z"


@pytest.mark.parametrize("key, other", [("numerics", "default"), ("cpu", "Another CPU"), ("mkl_cbwr", "auto")])
def test_a_sweep_made_in_two_environments_has_no_record(tmp_path, key, other):
    sweep(tmp_path, "grid", {"adam-lr0.001-h8-s0": MACHINE, "adam-lr0.001-h8-s1": {**MACHINE, key: other}})
    with pytest.raises(SystemExit, match=f"different environments.*{key}"):
        provenance.record(tmp_path, "grid", "abc1234", ["fmae", "sweep"])
    assert not (tmp_path / "grid.provenance.json").exists()


def test_publishing_copies_the_files_and_curves_with_their_records(tmp_path):
    run, docs = tmp_path / "run", tmp_path / "docs"
    sweep(run, "grid", {"adam-lr0.001-h8-s0": MACHINE, "sgd-lr0.1-h8-s0": MACHINE})
    (run / "grid" / "results_groups.csv").write_text("optim\nadam\n")
    provenance.record(run, "grid", "abc1234", ["fmae", "sweep"])
    sweep(run, "edge-sgd", {"sgd-lr1-h8-s0": MACHINE})  # no record: not published
    docs.mkdir()
    (docs / "provenance.json").write_text(json.dumps({"files": {"old.csv": {"commit": "0ld"}}}))
    provenance.publish(run, docs)
    index = json.loads((docs / "provenance.json").read_text())["files"]
    assert set(index) == {"old.csv", "grid/cells.csv", "grid/groups.csv", "grid/curves.csv"}
    assert index["grid/cells.csv"]["commit"] == "abc1234" and index["old.csv"] == {"commit": "0ld"}
    assert str(run) not in (docs / "grid" / "cells.csv").read_text()  # paths relative to the run directory
    with open(docs / "grid" / "curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cell"], r["epoch"], r["test_loss"]) for r in rows][:2] == [
        ("adam-lr0.001-h8-s0", "1", "0.25"), ("adam-lr0.001-h8-s0", "2", "0.125")]
    assert len(rows) == 4 and "seconds" not in rows[0]
    assert not (docs / "edge").exists()
