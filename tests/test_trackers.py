"""Live TensorBoard and MLflow logging, and `fmae export` (issue 22), against the real things: a
`mlflow server` (sqlite backend, a free port) read back through MlflowClient, event files read
back with TensorBoard's own reader and, once, served by a real `tensorboard --logdir`. Both
packages come with the [test] extra: without them these tests fail (never skip)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fmae import runs
from tests.helpers import cli, installed_env, one_error_line, reap, tiny

try:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.util import tensor_util
except ImportError as exc:  # a failure, not a skip: CI must run these
    pytest.fail(f"these tests need mlflow and tensorboard: pip install -e '.[test]' ({exc})", pytrace=False)

GRID = ["--optim", "sgd", "adam", "--lr", "0.1", "0.001", "--hidden", "16", "--epochs", "3"]
CELLS = sorted(["sgd-lr0.1-h16-s0", "sgd-lr0.001-h16-s0", "adam-lr0.1-h16-s0", "adam-lr0.001-h16-s0"])
PARAMS = {"optim", "lr", "hidden", "seed", "batch_size", "dropout", "activation", "momentum", "noise", "precision",
          "device", "threads"}


@pytest.fixture(autouse=True)
def _experiment(request, monkeypatch):
    """Each test logs to an MLflow experiment of its own (MLFLOW_EXPERIMENT_NAME, which fmae honours)."""
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds} s")


def tool(name: str) -> str:
    path = shutil.which(name, path=installed_env()["PATH"])
    assert path, f"the `{name}` command is not installed: pip install -e '.[test]'"
    return path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a sqlite database, for the module (it takes seconds to start)."""
    where = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with open(where / "server.log", "w") as log:
        proc = subprocess.Popen([tool("mlflow"), "server", "--backend-store-uri", f"sqlite:///{where}/m.db",
                                 "--artifacts-destination", str(where / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(f"http://127.0.0.1:{port}/health", proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


class Proxy:
    """A stand-in for the MLflow server that can go away mid-sweep: forwards every request to the
    real one until `stop`, then refuses connections (the port closed), as a server that died."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = urllib.request.Request(target + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items() if k != "Host"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as r:
                        status, headers, data = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, data = e.code, e.headers, e.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- reading back what the trackers hold


def mlflow_runs(uri: str, experiment: str) -> dict[str, dict]:
    """Every run of the experiment by name: its id, parent, status, params, tags, metrics' steps."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out = {}
    for r in client.search_runs([exp.experiment_id], max_results=1000):
        assert r.info.run_name not in out, f"two runs named {r.info.run_name}"
        out[r.info.run_name] = {
            "id": r.info.run_id, "parent": r.data.tags.get("mlflow.parentRunId"), "status": r.info.status,
            "params": r.data.params, "tags": r.data.tags, "latest": r.data.metrics,
            "steps": {k: sorted(m.step for m in client.get_metric_history(r.info.run_id, k)) for k in r.data.metrics},
            "values": {k: [m.value for m in sorted(client.get_metric_history(r.info.run_id, k), key=lambda m: m.step)]
                       for k in r.data.metrics},
        }
    return out


def tb_runs(logdir: Path) -> dict[str, dict]:
    """Every TensorBoard run under `logdir` (a directory holding event files), read with TensorBoard's
    own reader: each tag's steps (in the order written, repeats kept) and its HParams summaries."""
    out: dict[str, dict] = {}
    for f in sorted(logdir.rglob("*tfevents*")):
        run = out.setdefault(f.parent.relative_to(logdir).as_posix(), {"steps": {}, "values": {}, "starts": [],
                                                                        "ends": [], "experiments": []})
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                run["steps"].setdefault(v.tag, []).append(event.step)
                if v.metadata.plugin_data.plugin_name == "scalars":  # the reader gives scalars as tensors
                    run["values"].setdefault(v.tag, []).append(tensor_util.make_ndarray(v.tensor).item())
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                if v.tag == metadata.SESSION_START_INFO_TAG:
                    run["starts"].append(data.session_start_info)
                elif v.tag == metadata.SESSION_END_INFO_TAG:
                    run["ends"].append(data.session_end_info.status)
                elif v.tag == metadata.EXPERIMENT_TAG:
                    run["experiments"].append(data.experiment)
    return out


def metrics_csv(run: Path) -> list[dict[str, float]]:
    return runs.RunDir(run).read_metrics()


def check_sweep_in_mlflow(uri: str, experiment: str, sweep: Path, epochs: int = 3,
                          seconds: bool = True) -> dict[str, dict]:
    """1 parent and a child per cell, each epoch once, its values those of metrics.csv (the losses;
    `seconds`: the epochs' times too, which differ where an epoch was trained again after a kill)."""
    found = mlflow_runs(uri, experiment)
    parent = found.pop(sweep.name)
    assert parent["parent"] is None and parent["tags"]["fmae.kind"] == "sweep"
    assert sorted(found) == CELLS
    for name, run in found.items():
        rows = metrics_csv(sweep / "cells" / name)
        assert run["parent"] == parent["id"] and run["tags"]["fmae.kind"] == "cell"
        assert set(run["params"]) == PARAMS
        for key, column in (("test_loss", "test_loss"), ("train_loss", "train_loss"), ("epoch_seconds", "seconds")):
            assert run["steps"][key] == list(range(1, epochs + 1)), (name, key, run["steps"][key])
            if key != "epoch_seconds" or seconds:
                # seconds: 4 decimal places in metrics.csv
                assert run["values"][key] == pytest.approx([r[column] for r in rows], rel=1e-12, abs=6e-5)
    return {"parent": parent, **found}


def check_sweep_in_tensorboard(logdir: Path, sweep: Path, epochs: int = 3) -> dict[str, dict]:
    """A run per cell, each epoch once, an HParams session per cell; the grid as the experiment."""
    found = tb_runs(logdir)
    top = found.pop(sweep.name)
    assert len(top["experiments"]) == 1 and set(found) == {f"{sweep.name}/{c}" for c in CELLS}
    domains = {h.name: [v.string_value or v.number_value for v in h.domain_discrete.values]
               for h in top["experiments"][0].hparam_infos}
    assert domains["optim"] == ["sgd", "adam"] and domains["lr"] == [0.1, 0.001] and set(domains) == PARAMS
    for name, run in found.items():
        assert run["steps"]["test_loss"] == list(range(1, epochs + 1)), (name, run["steps"]["test_loss"])
        assert run["values"]["test_loss"] == pytest.approx(
            [r["test_loss"] for r in metrics_csv(sweep / "cells" / name.split("/")[1])], rel=1e-6)
        assert len(run["starts"]) == 1 and set(run["starts"][0].hparams) == PARAMS
    return found


# ---------------------------------------------------------------- must show


def test_the_issues_sweep_logs_one_parent_four_children_and_four_tensorboard_runs(fake_dataset, tmp_path,
                                                                                  monkeypatch, request):
    """`fmae sweep --optim sgd adam --lr 0.1 0.001 --hidden 16 --epochs 3 --mlflow sqlite:///m.db
    --tensorboard tb`, as the issue writes it (relative paths, in the working directory)."""
    monkeypatch.chdir(tmp_path)
    out = cli("sweep", *GRID, "--mlflow", "sqlite:///m.db", "--tensorboard", "tb",
                                   "--run-dir", "sw", "-q")
    assert out.exit_code == 0, out.output
    assert "warning" not in out.stderr and "INFO" not in out.stderr  # MLflow's own log lines stay off stderr
    found = check_sweep_in_mlflow("sqlite:///m.db", request.node.name, tmp_path / "sw")
    results = json.loads((tmp_path / "sw" / "results.json").read_text())
    best = Path(results["best"]["model"]).parent.name
    assert found["parent"]["tags"]["fmae.best_cell"] == best
    assert found["parent"]["latest"]["best_final_test_loss"] == results["best"]["final_test_loss"]
    for row in results["cells"]:
        cell = f"{row['optim']}-lr{row['lr']!r}-h{row['hidden']}-s{row['seed']}"
        assert found[cell]["tags"]["fmae.status"] == row["status"]
        assert found[cell]["status"] == ("FINISHED" if row["status"] == "completed" else "FAILED")
        assert found[cell]["params"]["optim"] == row["optim"] and float(found[cell]["params"]["lr"]) == row["lr"]
        assert found[cell]["latest"]["final_test_loss"] == row["final_test_loss"]
    tb = check_sweep_in_tensorboard(tmp_path / "tb", tmp_path / "sw")
    assert all(len(run["ends"]) == 1 for run in tb.values())
    ids = json.loads((tmp_path / "sw" / "trackers.json").read_text())
    assert ids["mlflow"]["sqlite:///m.db"] == found["parent"]["id"]  # the ids are kept in the run directory
    record = json.loads((tmp_path / "sw" / "cells" / CELLS[0] / ".fmae.json").read_text())
    assert "trackers.json" in record["files"]  # fmae's own file: --overwrite removes it with the run


RUNNER = """
import json, os, sys
from fmae import data
data.CHECKSUMS = json.loads(os.environ["TEST_SUMS"])
sys.argv = ["fmae", *sys.argv[1:]]
from fmae.cli import main
main()
"""


def fmae_process(tmp_path: Path, data_dir: Path, args: list[str], **env: str) -> subprocess.Popen:
    """`fmae ARGS` in a process of its own, on the tiny dataset (its checksums passed in)."""
    from fmae import data

    script = tmp_path / "run_fmae.py"
    script.write_text(RUNNER)
    return subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=installed_env(FMAE_DATA_DIR=str(data_dir), TEST_SUMS=json.dumps(data.CHECKSUMS),
                                              **env))


def wait_until(done, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if done():
            return
        time.sleep(0.05)
    pytest.fail(f"{what}: not reached while fmae ran (exit {proc.poll()})")


def wait_for_epochs(sweep: Path, proc: subprocess.Popen, at_least: int) -> None:
    wait_until(lambda: (sweep / "cells").is_dir() and sum(
        len(metrics_csv(c)) for c in (sweep / "cells").glob("*") if (c / "metrics.csv").exists()) >= at_least,
        proc, f"{at_least} epochs in metrics.csv")




def test_kill_9_mid_sweep_then_the_rerun_leaves_each_epoch_once_in_both(fake_dataset, tmp_path, mlflow_server,
                                                                        request):
    """--checkpoint-every 3600: no last.pt before the kill, so the rerun trains again every epoch the
    trackers hold already; each must still be there exactly once."""
    args = ["sweep", *GRID, "--run-dir", "sw", "--mlflow", mlflow_server, "--tensorboard", "tb",
            "--checkpoint-every", "3600", "-q"]
    def ahead() -> list[str]:
        """The cells whose epochs both trackers hold beyond what their last.pt saved: the rerun trains
        those epochs again (a cell without last.pt starts anew)."""
        found = {n: len(r["steps"].get("test_loss", []))
                 for n, r in mlflow_runs(mlflow_server, request.node.name).items()}
        tb = {n.split("/")[-1]: len(r["steps"].get("test_loss", [])) for n, r in tb_runs(tmp_path / "tb").items()}
        saved = {c.name: runs.RunDir(c).load_last()["epoch"] if (c / "last.pt").exists() else 0
                 for c in (tmp_path / "sw" / "cells").glob("*")}
        return [c for c, epochs in saved.items() if min(found.get(c, 0), tb.get(c, 0)) > epochs]

    proc = fmae_process(tmp_path, fake_dataset, args, FMAE_TEST_WRITE_DELAY="0.3")
    wait_until(lambda: (tmp_path / "tb").is_dir() and bool(ahead()), proc, "a logged epoch beyond last.pt")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "sw" / "results.json").exists()
    assert ahead()  # the fault this test is about: the rerun logs those epochs again unless it skips them
    before = mlflow_runs(mlflow_server, request.node.name)

    rerun = fmae_process(tmp_path, fake_dataset, args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "warning" not in err
    found = check_sweep_in_mlflow(mlflow_server, request.node.name, tmp_path / "sw", seconds=False)
    assert found["parent"]["id"] == before["sw"]["id"]  # the same runs, continued
    assert all(found[n]["id"] == r["id"] for n, r in before.items() if n != "sw")
    check_sweep_in_tensorboard(tmp_path / "tb", tmp_path / "sw")


def test_export_mlflow_of_a_sweep_twice_gives_the_same_runs_without_duplicates(fake_dataset, tmp_path, monkeypatch,
                                                                              request):
    monkeypatch.chdir(tmp_path)
    assert cli("sweep", *GRID, "--run-dir", "sw", "-q").exit_code == 0
    assert not (tmp_path / "sw" / "trackers.json").exists()  # made before (or without) the flags
    first = cli("export", "mlflow", "sw", "--to", "sqlite:///m.db", "--json")
    assert first.exit_code == 0, first.output
    # 4 cells x 3 epochs x (train_loss, test_loss, epoch_seconds), and each cell's final_test_loss
    assert json.loads(first.stdout)["exported"] == [{"path": "sw", "kind": "sweep", "runs": 4, "epochs": 12,
                                                     "new_values": 40}]
    once = check_sweep_in_mlflow("sqlite:///m.db", request.node.name, tmp_path / "sw")
    again = cli("export", "mlflow", "sw", "--to", "sqlite:///m.db", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["exported"][0]["new_values"] == 0  # the second export says it sent nothing
    twice = check_sweep_in_mlflow("sqlite:///m.db", request.node.name, tmp_path / "sw")
    assert {n: r["id"] for n, r in twice.items()} == {n: r["id"] for n, r in once.items()}
    assert twice["parent"]["steps"] == once["parent"]["steps"]  # the sweep's metrics not logged again either


def test_export_tensorboard_twice_writes_nothing_the_second_time(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("sweep", *GRID, "--run-dir", "sw", "-q").exit_code == 0
    assert cli("export", "tensorboard", "sw", "--to", "tb").exit_code == 0
    files = {p: p.stat().st_size for p in (tmp_path / "tb").rglob("*")}
    out = cli("export", "tensorboard", "sw", "--to", "tb")
    assert out.exit_code == 0, out.output
    assert "none: all there" in out.stdout  # the table says nothing new was sent
    assert {p: p.stat().st_size for p in (tmp_path / "tb").rglob("*")} == files
    check_sweep_in_tensorboard(tmp_path / "tb", tmp_path / "sw")


def test_export_of_a_training_run_twice_and_of_what_is_not_one(fake_dataset, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    assert cli("train", "--hidden", "4", "--epochs", "2", "--run-dir", "r", "-q").exit_code == 0
    (tmp_path / "r" / "trackers.json").write_text('{"uid": "x\' OR 1=1", "mlflow": []}')  # not fmae's: replaced
    for _ in range(2):
        for kind, to in (("mlflow", "sqlite:///m.db"), ("tensorboard", "tb")):
            out = cli("export", kind, "r", "--to", to)
            assert out.exit_code == 0, out.output
    found = mlflow_runs("sqlite:///m.db", request.node.name)
    assert list(found) == ["r"] and found["r"]["parent"] is None and found["r"]["steps"]["test_loss"] == [1, 2]
    assert found["r"]["tags"]["fmae.kind"] == "run" and found["r"]["status"] == "FINISHED"
    assert tb_runs(tmp_path / "tb")["r"]["steps"]["test_loss"] == [1, 2]
    (tmp_path / "empty").mkdir()
    out = cli("export", "mlflow", "empty", "--to", "sqlite:///m.db")
    assert out.exit_code == 1 and out.stderr.startswith("error: empty is neither a training run nor a sweep")


def test_live_then_export_is_one_layout_and_adds_nothing(fake_dataset, tmp_path, monkeypatch, request):
    """Live logging and the export give the same runs: an export after a live sweep adds nothing."""
    monkeypatch.chdir(tmp_path)
    live = ["--mlflow", "sqlite:///m.db", "--tensorboard", "tb"]
    assert cli("sweep", *GRID, "--run-dir", "sw", "-q", *live).exit_code == 0
    before = mlflow_runs("sqlite:///m.db", request.node.name)
    files = sorted((tmp_path / "tb").rglob("*"))
    for kind, to in (("mlflow", "sqlite:///m.db"), ("tensorboard", "tb")):
        assert cli("export", kind, "sw", "--to", to).exit_code == 0
    assert mlflow_runs("sqlite:///m.db", request.node.name) == before
    assert sorted((tmp_path / "tb").rglob("*")) == files


# ---------------------------------------------------------------- the real server, the real TensorBoard


def test_a_real_mlflow_server_gets_every_cell_parameter_and_epoch_once(fake_dataset, tmp_path, mlflow_server,
                                                                       request):
    """Two seeds (so the seed groups' statistics go to the parent), model.pt and best.pt uploaded."""
    out = cli("sweep", "--optim", "sgd", "--lr", "0.1", "--hidden", "8", "16", "--seed", "0",
                                   "1", "--epochs", "2", "--run-dir", str(tmp_path / "sw"), "--mlflow", mlflow_server,
                                   "--mlflow-artifacts", "-q", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    found = mlflow_runs(mlflow_server, request.node.name)
    parent = found.pop("sw")
    assert sorted(found) == sorted(p.name for p in (tmp_path / "sw" / "cells").iterdir()) and len(found) == 4
    for name, run in found.items():
        assert run["parent"] == parent["id"] and run["steps"]["test_loss"] == [1, 2]
        config = runs.RunDir(tmp_path / "sw" / "cells" / name).saved_config()
        assert run["params"]["hidden"] == str(config.model.hidden) and run["params"]["seed"] == str(config.seed)
    for g in doc["groups"]:
        key = f"sgd-lr0.1-h{g['hidden']}"
        assert parent["latest"][f"mean_final_test_loss/{key}"] == pytest.approx(g["mean_final_test_loss"])
        assert parent["latest"][f"std_final_test_loss/{key}"] == pytest.approx(g["std_final_test_loss"])
        assert parent["latest"][f"ci95_final_test_loss/{key}"] == pytest.approx(g["ci95_final_test_loss"])
    client = MlflowClient(mlflow_server)
    assert [a.path for a in client.list_artifacts(parent["id"])] == ["best.pt"]
    for run in found.values():
        assert [a.path for a in client.list_artifacts(run["id"])] == ["model.pt"]
    local = client.download_artifacts(parent["id"], "best.pt", str(tmp_path))
    assert Path(local).read_bytes() == (tmp_path / "sw" / "best.pt").read_bytes()


def test_train_resume_continues_the_same_runs_and_overwrite_starts_new_ones(fake_dataset, tmp_path, mlflow_server,
                                                                            request):
    base = ["train", "--hidden", "8", "--run-dir", str(tmp_path / "r"), "--mlflow", mlflow_server,
            "--tensorboard", str(tmp_path / "tb")]
    assert cli(*base, "--epochs", "2").exit_code == 0
    first = mlflow_runs(mlflow_server, request.node.name)
    assert list(first) == ["r"] and first["r"]["parent"] is None and first["r"]["steps"]["test_loss"] == [1, 2]
    out = cli(*base, "--epochs", "3", "--resume")
    assert out.exit_code == 0, out.output
    resumed = mlflow_runs(mlflow_server, request.node.name)
    assert resumed["r"]["id"] == first["r"]["id"] and resumed["r"]["steps"]["test_loss"] == [1, 2, 3]
    assert resumed["r"]["steps"]["final_test_loss"] == [2, 3] and resumed["r"]["status"] == "FINISHED"
    assert tb_runs(tmp_path / "tb")["r"]["steps"]["test_loss"] == [1, 2, 3]
    out = cli(*base, "--epochs", "1", "--overwrite")
    assert out.exit_code == 0, out.output
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(request.node.name).experiment_id
    replaced = client.search_runs([exp])
    assert len(replaced) == 2  # the replaced run is a new run; the old one stays as it was
    new = next(r for r in replaced if r.info.run_id != first["r"]["id"])
    assert [m.step for m in client.get_metric_history(new.info.run_id, "test_loss")] == [1]
    assert "also holds event files of another run" in out.stderr  # TensorBoard's directory holds both


def test_tensorboard_serves_the_scalars_and_the_hparams(fake_dataset, tmp_path, monkeypatch):
    """The cells train in worker processes (--jobs 2): the driver logs them all the same."""
    monkeypatch.chdir(tmp_path)
    out = cli("sweep", *GRID, "--run-dir", "sw", "--tensorboard", "tb", "--jobs", "2", "-q")
    assert out.exit_code == 0, out.output
    port = free_port()
    proc = subprocess.Popen([tool("tensorboard"), "--logdir", str(tmp_path / "tb"), "--host", "127.0.0.1", "--port",
                             str(port), "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/plugin"
    try:
        wait_for(f"{url}/scalars/tags", proc)
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{url}/scalars/tags", timeout=10) as r:
                tags = json.load(r)
            if len(tags) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sorted(tags) == [f"sw/{c}" for c in CELLS]
        for run, run_tags in tags.items():
            assert set(run_tags) == {"train_loss", "test_loss", "epoch_seconds", "final_test_loss"}
            with urllib.request.urlopen(f"{url}/scalars/scalars?run={run}&tag=test_loss", timeout=10) as r:
                assert [step for _, step, _ in json.load(r)] == [1, 2, 3]
        request = urllib.request.Request(f"{url}/hparams/experiment", data=b'{"experimentName": ""}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            infos = {h["name"]: h.get("domainDiscrete") for h in json.load(r)["hparamInfos"]}
        assert set(infos) == PARAMS and infos["optim"] == ["sgd", "adam"] and infos["lr"] == [0.1, 0.001]
        body = json.dumps({"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                                                     "STATUS_FAILURE", "STATUS_RUNNING"],
                           "colParams": [{"hparam": "optim"}, {"metric": {"tag": "test_loss"}}],
                           "startIndex": 0, "sliceSize": 100}).encode()
        request = urllib.request.Request(f"{url}/hparams/session_groups", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r)["totalSize"] == 4  # an HParams session per cell
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------- faults, and the extras


def test_an_mlflow_server_gone_mid_sweep_is_one_warning_and_export_catches_up(fake_dataset, tmp_path, mlflow_server,
                                                                            request):
    proxy = Proxy(mlflow_server)
    proc = fmae_process(tmp_path, fake_dataset, ["sweep", *GRID, "--run-dir", "sw", "--mlflow", proxy.url],
                        FMAE_TEST_WRITE_DELAY="0.1")
    try:
        wait_for_epochs(tmp_path / "sw", proc, 2)
    finally:
        proxy.stop()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line.lower() or "error" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: mlflow logging stopped"), err
    assert "fmae export mlflow" in warnings[0]
    assert len(json.loads((tmp_path / "sw" / "results.json").read_text())["cells"]) == 4  # the sweep went on
    partial = mlflow_runs(mlflow_server, request.node.name)
    assert sum(len(r["steps"].get("test_loss", [])) for r in partial.values()) < 12  # the fault did happen
    out = cli("export", "mlflow", str(tmp_path / "sw"), "--to", mlflow_server)
    assert out.exit_code == 0, out.output
    found = check_sweep_in_mlflow(mlflow_server, request.node.name, tmp_path / "sw")
    assert all(found[n]["id"] == r["id"] for n, r in partial.items() if n != "sw")  # the same runs, caught up


def test_an_unreachable_mlflow_uri_is_one_error_line_before_any_training(fake_dataset, tmp_path):
    port = free_port()  # nothing listens there
    out = cli("train", "--run-dir", str(tmp_path / "r"), "--mlflow", f"http://127.0.0.1:{port}")
    assert out.exit_code == 1
    assert out.stderr.startswith(f"error: --mlflow http://127.0.0.1:{port}: cannot open the tracking store")
    assert not (tmp_path / "r" / "metrics.csv").exists()


PROGRESS = re.compile(r"(data|note): |sweep \S+: |\S+ epoch \d+/\d+ |cell \d+/\d+ ")  # a sweep's own lines, unquiet


def one_warning(err: str) -> str:
    """The one warning a sweep printed: every other line of its stderr is its progress (none of
    MLflow's, SQLAlchemy's or alembic's log lines, no traceback)."""
    others = [line for line in err.splitlines() if not PROGRESS.match(line)]
    assert len(others) == 1 and others[0].startswith("warning: mlflow logging stopped ("), err
    assert others[0].endswith("the run directories stay complete: `fmae export mlflow` catches up later"), err
    return others[0]


@pytest.mark.parametrize("fault", ["locked", "removed"])
def test_an_sqlite_store_gone_bad_mid_sweep_is_one_warning_with_its_reason(fake_dataset, tmp_path, request, fault):
    """Issue 27, item 3: a store another process locks (or that is deleted) mid-sweep was ~90 lines of
    MLflow's and SQLAlchemy's tracebacks and a reason cut to a remark ("raised as a result of
    Query-invoked autoflush..."); now one warning naming the database's own error, and the sweep goes on."""
    import sqlite3

    store = tmp_path / "m.db"
    proc = fmae_process(tmp_path, fake_dataset, ["sweep", *GRID, "--run-dir", "sw", "--mlflow", "sqlite:///m.db"],
                        FMAE_TEST_WRITE_DELAY="0.2")
    lock = None
    try:
        wait_for_epochs(tmp_path / "sw", proc, 2)
        if fault == "locked":
            lock = sqlite3.connect(store, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # MLflow's writes wait 5 s (sqlite's timeout), then fail
        else:
            store.unlink()
        out, err = proc.communicate(timeout=300)
    finally:
        reap(proc)
        if lock is not None:
            lock.close()
    assert proc.returncode == 0, err
    warning = one_warning(err)
    why = {"locked": "(database is locked)", "removed": "(its database m.db is gone: "}[fault]
    assert warning.startswith(f"warning: mlflow logging stopped {why}"), warning
    assert "autoflush" not in err and "Traceback" not in err and "sqlalchemy" not in err.lower()
    assert len(json.loads((tmp_path / "sw" / "results.json").read_text())["cells"]) == 4  # the sweep went on
    if fault == "locked":  # the fault did happen: the store holds fewer epochs than were trained
        logged = mlflow_runs(f"sqlite:///{store}", request.node.name)
        assert sum(len(r["steps"].get("test_loss", [])) for r in logged.values()) < 12


def test_a_failure_s_reason_is_the_database_s_error_not_sqlalchemy_s_remark():
    import sqlite3

    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    from fmae.trackers.mlflow import reason

    db = sqlalchemy.exc.OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError(
        "attempt to write a readonly database"))
    db.add_detail("raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block if "
                  "this flush is occurring prematurely")
    try:
        try:
            raise db
        except sqlalchemy.exc.OperationalError as e:
            raise MlflowException(message=e) from e  # as MLflow's managed session does
    except MlflowException as wrapped:
        assert str(wrapped).startswith("(raised as a result of Query-invoked autoflush")  # the issue's fragment
        assert reason(wrapped) == "attempt to write a readonly database"
    assert reason(Exception("API request failed. Retries exhausted. See the docs.")) == "API request failed."


def test_mlflow_s_loggers_are_quiet_only_while_fmae_uses_them():
    import logging

    from fmae.trackers.mlflow import quiet_loggers

    names = ("mlflow", "mlflow.store.db.utils", "sqlalchemy", "sqlalchemy.engine", "alembic")
    before = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in names}
    with quiet_loggers():
        for name in names:
            logger = logging.getLogger(name)
            assert all(isinstance(h, logging.NullHandler) for h in logger.handlers)
            if logger.handlers:
                assert not logger.propagate
    assert {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in names} == before


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared",
                                 "sqlite:///m.db?mode=memory"])
@pytest.mark.parametrize("command", ["train", "sweep", "export"])
def test_an_in_memory_store_is_a_usage_error_before_anything_is_written(tmp_path, monkeypatch, uri, command):
    """`--mlflow sqlite:///` passed the start check (its first connection had a database), then every
    later call met an empty one: 66 lines and exit 0. Now one error line, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    args = {"train": ["train", "--mlflow", uri, "--run-dir", "r"],
            "sweep": ["sweep", "--mlflow", uri, "--run-dir", "r"],
            "export": ["export", "mlflow", ".", "--to", uri]}[command]
    out = cli(*args)
    assert out.exit_code == 2, out.output
    one_error_line(out.stderr, f"--mlflow {uri}: an in-memory database, which MLflow cannot keep")
    assert "hint: name a file: --mlflow sqlite:///mlflow.db" in out.stderr and out.stdout == ""
    assert list(tmp_path.iterdir()) == []


# a kill -9 where MLflow's schema creation is least whole: inside a migration that rebuilds a table (the
# second that rebuilds metrics: it made the copy, _alembic_tmp_metrics, and has not yet put it in place)
KILL_MID_SCHEMA = """
import os, re, signal
from sqlalchemy import event
from sqlalchemy.engine import Engine

made = []

@event.listens_for(Engine, "after_cursor_execute")
def _kill(conn, cursor, statement, *args):
    if re.match(r"\\s*CREATE TABLE _alembic_tmp_metrics", statement):
        made.append(statement)
        if len(made) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
"""
SWEEP_1 = ["sweep", "--optim", "sgd", "--lr", "0.1", "--hidden", "8", "--epochs", "1", "-q"]


def tables(db: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as con:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_kill_9_while_fmae_creates_an_sqlite_store_leaves_none_half_made(fake_dataset, tmp_path):
    """Issue 27, item 4: a kill -9 while MLflow made a new store's schema in place left it half-made,
    and every rerun failed. fmae makes it in a file of its own beside it, then links it into place."""
    (tmp_path / "killer.py").write_text(KILL_MID_SCHEMA + RUNNER)
    from fmae import data

    env = installed_env(FMAE_DATA_DIR=str(fake_dataset), TEST_SUMS=json.dumps(data.CHECKSUMS))
    killed = subprocess.run([sys.executable, "killer.py", *SWEEP_1, "--run-dir", "sw", "--mlflow", "sqlite:///m.db"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    made = list(tmp_path.glob(".m.db.fmae-new-*"))
    assert len(made) == 1 and "_alembic_tmp_metrics" in tables(made[0])  # the kill landed mid-schema...
    assert not (tmp_path / "m.db").exists()  # ...and the store itself was never half-made

    rerun = fmae_process(tmp_path, fake_dataset, [*SWEEP_1, "--run-dir", "sw", "--mlflow", "sqlite:///m.db"])
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and err == "", err
    assert not list(tmp_path.glob(".m.db.fmae-new-*"))  # the dead process's file removed
    assert "_alembic_tmp_metrics" not in tables(tmp_path / "m.db")
    found = mlflow_runs(f"sqlite:///{tmp_path / 'm.db'}", os.environ["MLFLOW_EXPERIMENT_NAME"])
    assert found["sgd-lr0.1-h8-s0"]["steps"]["test_loss"] == [1]


def test_a_half_made_sqlite_store_is_one_error_line_with_the_fix_that_works(fake_dataset, tmp_path, monkeypatch):
    """A store MLflow itself (or an fmae before the fix) left half-made: named, with the fix that works."""
    monkeypatch.chdir(tmp_path)
    make = KILL_MID_SCHEMA + "from mlflow.tracking import MlflowClient\nMlflowClient('sqlite:///h.db').search_experiments()\n"
    killed = subprocess.run([sys.executable, "-c", make], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=installed_env(), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "_alembic_tmp_metrics" in tables(tmp_path / "h.db")
    reopen = subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient\n"
                             "MlflowClient('sqlite:///h.db').search_experiments()"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=installed_env(), check=False)
    assert reopen.returncode != 0 and "_alembic_tmp_metrics already exists" in reopen.stderr  # the issue's fault

    for command in (["train", *tiny(1), "--run-dir", "r"], ["export", "mlflow", "r", "--to", "sqlite:///h.db"]):
        args = command if command[0] == "export" else [*command, "--mlflow", "sqlite:///h.db"]
        if command[0] == "export":
            assert cli("train", *tiny(1), "--run-dir", "r").exit_code == 0
        out = cli(*args)
        assert out.exit_code == 1, out.output
        one_error_line(out.stderr, "error: --mlflow sqlite:///h.db: h.db is a half-created MLflow store holding no "
                       "runs (its schema's creation was cut off: table _alembic_tmp_")
        assert "(hint: delete it (rm h.db) and run the same command again: fmae makes a new one)" in out.stderr
    (tmp_path / "h.db").unlink()  # the fix, as the hint says it
    out = cli("export", "mlflow", "r", "--to", "sqlite:///h.db")
    assert out.exit_code == 0, out.output
    assert mlflow_runs("sqlite:///h.db", os.environ["MLFLOW_EXPERIMENT_NAME"])["r"]["steps"]["test_loss"] == [1]


@pytest.mark.parametrize("flag, value, extra", [("--tensorboard", "tb", "tensorboard"),
                                                ("--mlflow", "sqlite:///m.db", "mlflow")])
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_missing_package_is_one_error_line_naming_the_extra(tmp_path, flag, value, extra, command):
    code = (f"import sys\nsys.modules[{extra!r}] = None  # not installed\n"
            f"sys.argv = ['fmae', {command!r}, {flag!r}, {value!r}, '--run-dir', 'r']\n"
            "from fmae.cli import main\nmain()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert out.stderr == (f"error: {flag} needs the {extra} package, which is not installed "
                          f"(hint: install it with: pip install 'fmae-cli[{extra}]')\n")
    assert not (tmp_path / "r").exists() and not (tmp_path / "tb").exists()  # nothing written


@pytest.mark.parametrize("command", ["train", "sweep", "export"])
def test_a_database_store_with_mlflow_skinny_alone_is_one_error_line_naming_the_package(tmp_path, command):
    """mlflow-skinny (the `mlflow` extra) has no SQLAlchemy: an sqlite:/// store is one error line that
    says what to install, not MLflow's paragraph cut mid-word under a hint to check the URI."""
    args = {"train": ["train", "--mlflow", "sqlite:///m.db", "--run-dir", "r"],
            "sweep": ["sweep", "--mlflow", "sqlite:///m.db", "--run-dir", "r"],
            "export": ["export", "mlflow", ".", "--to", "sqlite:///m.db"]}[command]
    code = (f"import sys\nsys.modules['sqlalchemy'] = None  # mlflow-skinny alone\nsys.argv = ['fmae', *{args!r}]\n"
            "from fmae.cli import main\nmain()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert out.stderr == ("error: --mlflow sqlite:///m.db: a sqlite store needs the full mlflow package (SQLAlchemy), "
                          "and only mlflow-skinny is installed (hint: the full package is mlflow on PyPI; "
                          "or log to a server: --mlflow http://host:port, or to a file: store)\n")
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.db").exists()  # nothing written


def test_a_file_store_works_though_mlflow_3_keeps_it_in_maintenance(fake_dataset, tmp_path, monkeypatch):
    """MLflow 3 refuses a file: store unless MLFLOW_ALLOW_FILE_STORE is set; with mlflow-skinny alone it is
    the only store without a server, and the docs offer it: fmae sets it (a user's own value wins)."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = cli("sweep", *GRID, "--run-dir", str(tmp_path / "sw"), "--mlflow", f"file:{tmp_path / 'mlruns'}", "-q")
    assert out.exit_code == 0, out.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name(os.environ["MLFLOW_EXPERIMENT_NAME"])
    found = {r.info.run_name: len(client.get_metric_history(r.info.run_id, "test_loss"))
             for r in client.search_runs([experiment.experiment_id])}
    assert found == {"sw": 0, **{cell.name: 3 for cell in (tmp_path / "sw" / "cells").iterdir()}}


def test_an_mlflow_error_is_its_first_sentence():
    from fmae.trackers.mlflow import first_sentence

    paragraph = ("The filesystem tracking backend (e.g., './mlruns') is in maintenance mode and will not receive "
                 "further updates. Please migrate to a database backend. See https://mlflow.org/docs for more.")
    assert first_sentence(Exception(paragraph)) == paragraph.split(". ")[0] + "."
    assert first_sentence(Exception("x" * 500)) == "x" * 197 + "..."
    assert first_sentence(Exception("")) == "Exception"


def test_training_without_the_flags_imports_neither_package(fake_dataset, tmp_path):
    code = (RUNNER.replace("main()\n", "try:\n    main()\nexcept SystemExit:\n    pass\n")
            + "print('MODULES:' + ','.join(sorted({m.split('.')[0] for m in sys.modules}\n"
              "                                       & {'mlflow', 'tensorboard'})))")
    (tmp_path / "probe.py").write_text(code)
    from fmae import data

    out = subprocess.run([sys.executable, "probe.py", "train", "--hidden", "4", "--epochs", "1", "--run-dir", "r2",
                          "-q"],
                         cwd=tmp_path, capture_output=True, text=True, check=False,
                         env=installed_env(FMAE_DATA_DIR=str(fake_dataset), TEST_SUMS=json.dumps(data.CHECKSUMS)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "MODULES:"
    assert (tmp_path / "r2" / "model.pt").exists() and not (tmp_path / "r2" / "trackers.json").exists()


def test_mlflow_artifacts_needs_mlflow(tmp_path):
    out = cli("train", "--run-dir", str(tmp_path / "r"), "--mlflow-artifacts")
    assert out.exit_code == 2 and "--mlflow-artifacts" in out.stderr and "--mlflow URI" in out.stderr


EMPTY_TB = "--tensorboard needs a directory (hint: e.g. --tensorboard tb)"


@pytest.mark.parametrize("args, message", [
    (["train", "--tensorboard", "", "--run-dir", "r"], EMPTY_TB),
    (["sweep", "--tensorboard", " ", "--run-dir", "r"], EMPTY_TB),
    (["export", "tensorboard", "r", "--to", ""], "--to needs a directory (hint: e.g. --to tb)"),
    (["train", "--mlflow", "", "--run-dir", "r"], "--mlflow needs a tracking URI"),  # the one it is like
])
def test_an_empty_tensorboard_directory_is_a_usage_error_like_an_empty_mlflow_uri(fake_dataset, tmp_path, monkeypatch,
                                                                                   args, message):
    """Issue 27, item 5: `--tensorboard ''` was the working directory (its event files written there, exit 0)."""
    monkeypatch.chdir(tmp_path)
    if args[0] == "export":
        assert cli("train", *tiny(1), "--run-dir", "r").exit_code == 0
    before = sorted(tmp_path.rglob("*"))
    out = cli(*args, *(tiny(1) if args[0] == "train" else ["--epochs", "1", "-q"] if args[0] == "sweep" else []))
    assert out.exit_code == 2, out.output
    assert one_error_line(out.stderr, message) and out.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written: no event file in the working directory


def test_every_end_of_a_run_is_an_hparams_status_that_exists():
    from fmae.status import FINISHED
    from fmae.trackers.mlflow import TERMINAL
    from fmae.trackers.tensorboard import STATUS

    ends = {*FINISHED, "pruned", "interrupted", "failed"}
    assert set(STATUS) == ends and set(TERMINAL) == ends
    assert set(STATUS.values()) <= set(api_pb2.Status.keys())


def test_the_extras_bring_the_packages_and_the_test_extra_brings_both():
    import tomllib

    from fmae.trackers import INSTALL, PACKAGES

    extras = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for kind, extra in INSTALL.items():
        assert any(req.startswith(("tensorboard", "mlflow")) for req in extras[extra]), extra
        assert PACKAGES[kind].split(".")[0] == kind
    assert any(r.startswith("mlflow>") for r in extras["test"])  # the full mlflow: the tests run `mlflow server`
    assert any(r.startswith("tensorboard>") for r in extras["test"])
    assert extras["mlflow"] == [r for r in extras["mlflow"] if r.startswith("mlflow-skinny")]  # enough to log
