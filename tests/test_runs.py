import json
import os
from pathlib import Path

import pytest
import torch

from fmae import atomic, checkpoints, engine, evaluation, runs
from fmae.config import ModelConfig, TrainConfig
from fmae.errors import CheckpointError, RunDirError

CONFIG = TrainConfig(model=ModelConfig(hidden=8), epochs=2)


def trained(tiny_data):
    return engine.train(dataclasses_replace(CONFIG, batch_size=16), tiny_data, torch.device("cpu"))


def dataclasses_replace(config, **kw):
    import dataclasses

    return dataclasses.replace(config, **kw)


def test_model_checkpoint_round_trip_with_weights_only(tmp_path, tiny_data):
    result = trained(tiny_data)
    run = runs.RunDir(tmp_path / "r")
    run.reset()
    run.save_model(result.config, result.model.state_dict(), result.history, result.status, {"device": "cpu"})
    raw = torch.load(run.file("model.pt"), weights_only=True)  # plain data only
    assert raw["format"] == "fmae-checkpoint" and raw["version"] == 1 and raw["kind"] == "model"
    model, ckpt = checkpoints.load_model(run.file("model.pt"))
    assert ckpt["config"] == result.config
    assert ckpt["metrics"]["test_loss"] == [m.test_loss for m in result.history]
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    assert evaluation.evaluate(model, tiny_data.test_images) == result.history[-1].test_loss


def test_resume_checkpoint_round_trip(tmp_path, tiny_data):
    saved = {}
    engine.train(dataclasses_replace(CONFIG, batch_size=16), tiny_data, torch.device("cpu"),
                 on_epoch=lambda cell, m, rng: saved.update(cell.resume_state(rng)))
    run = runs.RunDir(tmp_path / "r")
    run.save_last(CONFIG, saved)
    state = run.load_last()
    assert state["epoch"] == 2 and torch.equal(state["rng"]["data"], saved["rng"]["data"])


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/fmae-pwned-by-test",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = Path("/tmp/fmae-pwned-by-test")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"format": "fmae-checkpoint", "version": 1, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "truncated or corrupted"),
    (b"garbage" * 10, "not a torch checkpoint"),
    (b"# fmae\n\nTrain autoencoders\n", "not a torch checkpoint"),  # a README given to --ckpt
    (__import__("gzip").compress(b"\0" * 64), "not a torch checkpoint"),  # a .gz (the dataset's)
    (b"PK\x03\x04" + b"\0" * 40, "truncated or corrupted"),  # a zip cut short: damaged, not foreign
])
def test_bad_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        checkpoints.load_model(path)


def test_foreign_newer_truncated_and_missing_checkpoints(tmp_path, tiny_data):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an fmae checkpoint"):
        checkpoints.load_model(tmp_path / "foreign.pt")
    torch.save({"format": "fmae-checkpoint", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        checkpoints.load_model(tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="holds no model.pt or best.pt"):
        checkpoints.load_model(tmp_path)
    result = trained(tiny_data)
    run = runs.RunDir(tmp_path / "r")
    run.save_model(result.config, result.model.state_dict(), result.history, "completed", {})
    blob = run.file("model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoints.load_model(tmp_path / "cut.pt")
    state = dict(result.model.state_dict())
    state["encoder.weight"] = torch.zeros(3, 3)
    run.save_model(result.config, state, result.history, "completed", {})
    with pytest.raises(CheckpointError, match="do not fit"):
        checkpoints.load_model(run.file("model.pt"))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic.write_json(path, {"v": 1})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(RunDirError, match="No space left"):
        atomic.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_run_dir_refuses_another_run(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    assert run.check(CONFIG) is None
    run.reset()
    run.write_config(CONFIG, {})
    with pytest.raises(RunDirError, match="already holds a run"):
        run.check(CONFIG)
    with pytest.raises(RunDirError, match="other settings"):
        run.check(dataclasses_replace(CONFIG, seed=5), resume=True)
    assert run.check(dataclasses_replace(CONFIG, epochs=9), resume=True) is None  # no last.pt yet
    assert run.check(dataclasses_replace(CONFIG, seed=5), overwrite=True) is None
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        runs.RunDir(tmp_path / "f").check(CONFIG)


def test_cell_name():
    assert runs.cell_name(TrainConfig(optim="sgd", model=ModelConfig(hidden=64))) == "sgd-lr0.1-h64-s0"
    assert runs.cell_name(TrainConfig(lr=1e-4, seed=2)) == "adam-lr0.0001-h512-s2"
