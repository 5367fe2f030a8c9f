"""The checkpoint contract: plain data, weights-only loadable, and strangers' files refused safely."""

from __future__ import annotations

import copy
import io
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recon3d.errors import InputError
from recon3d.fit.describe import describe_checkpoint
from recon3d.fit.sdf import SDFOptions, fit_sdf
from recon3d.io.checkpoint import FORMAT, KINDS, REQUIRED_KEYS, VERSION, load_checkpoint, save_checkpoint
from recon3d.synthetic import sample_sphere

CPU = torch.device("cpu")
N_POINTS, STEPS = 300, 2


def make_cloud():
    return sample_sphere(N_POINTS, radius=2.0, center=(10.0, -3.0, 1.0), seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, dict]:
    """A real (tiny) fit: the siren preset has the smallest field, so the file is small."""
    path = tmp_path_factory.mktemp("checkpoint") / "sphere.pt"
    cloud = make_cloud()
    summary = fit_sdf(cloud, SDFOptions(preset="siren", steps=STEPS, batch=64), path, CPU,
                      source="sphere", show_progress=False)
    return path, summary


@pytest.fixture()
def checkpoint(fitted) -> dict:
    return load_checkpoint(fitted[0])


def assert_same(a, b, where="checkpoint"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


def write_torch(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


# ------------------------------------------------------------------------------------ contract


def test_round_trip(tmp_path, checkpoint):
    path = tmp_path / "copy.pt"
    save_checkpoint(path, checkpoint)
    assert_same(checkpoint, load_checkpoint(path))
    assert not [p for p in tmp_path.iterdir() if p.name != "copy.pt"], "temporary files left behind"


def test_save_refuses_incomplete_checkpoint(tmp_path, checkpoint):
    incomplete = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    with pytest.raises(ValueError, match="state_dict"):
        save_checkpoint(tmp_path / "bad.pt", incomplete)
    assert not (tmp_path / "bad.pt").exists()


def test_file_loads_with_plain_torch_weights_only(fitted):
    data = torch.load(fitted[0], map_location="cpu", weights_only=True)
    assert isinstance(data, dict)
    assert data["format"] == FORMAT and data["version"] == VERSION and data["kind"] == "sdf"
    assert set(REQUIRED_KEYS) <= data.keys()
    assert "resume" not in data  # a finished fit carries no optimiser state
    assert all(isinstance(v, torch.Tensor) for v in data["state_dict"].values())


def test_fitted_checkpoint_records_the_fit(fitted, checkpoint):
    _, summary = fitted
    train = checkpoint["train"]
    assert train["steps"] == STEPS and train["complete"] and train["stopped_by"] == "steps"
    assert train["points"] == N_POINTS and train["normals"] == "file"
    assert summary["checkpoint"] == str(fitted[0]) and summary["steps"] == STEPS
    # to_world maps the field cube back onto the data: the data's box centre and half-size / 0.8
    points = make_cloud().points
    lo, hi = points.min(axis=0), points.max(axis=0)
    assert checkpoint["to_world"]["scale"] == pytest.approx((hi - lo).max() / 2 / 0.8, rel=1e-9)
    np.testing.assert_allclose(checkpoint["to_world"]["translation"], (lo + hi) / 2, rtol=1e-12)


# ------------------------------------------------------------------------------------ refusals


class _MakesMarker:
    """Unpickling this calls open(marker, "w"): a file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_payloads(marker: Path, checkpoint: dict) -> dict[str, bytes]:
    wrapped = dict(copy.copy(checkpoint), extra=_MakesMarker(marker))
    zipped, legacy, whole = io.BytesIO(), io.BytesIO(), io.BytesIO()
    torch.save(wrapped, zipped)
    torch.save(_MakesMarker(marker), whole)
    pickle.dump(_MakesMarker(marker), legacy, protocol=2)
    return {"inside a checkpoint": zipped.getvalue(), "bare object": whole.getvalue(),
            "legacy pickle": legacy.getvalue()}


def test_payload_is_live_when_loaded_unsafely(tmp_path, checkpoint):
    """Guards the test below: the crafted files really would create the marker."""
    for name, data in _evil_payloads(tmp_path / "marker", checkpoint).items():
        path = tmp_path / "evil.pt"
        path.write_bytes(data)
        (tmp_path / "marker").unlink(missing_ok=True)
        try:
            torch.load(path, weights_only=False)
        except RuntimeError:  # the legacy loader runs the payload, then finds no magic number
            pass
        assert (tmp_path / "marker").exists(), name


@pytest.mark.parametrize("variant", ["inside a checkpoint", "bare object", "legacy pickle"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, checkpoint, variant):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(_evil_payloads(marker, checkpoint)[variant])
    with pytest.raises(InputError, match="refused") as info:
        load_checkpoint(path)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["info", "extract-mesh", "render", "fit-sdf --resume"])
def test_every_command_refuses_a_code_running_checkpoint(tmp_path, checkpoint, command):
    """Through the CLI: one error line, exit 1, nothing run, nothing written."""
    from typer.testing import CliRunner

    from recon3d.cli import app

    marker = tmp_path / "marker"
    evil = tmp_path / "model.pt"
    evil.write_bytes(_evil_payloads(marker, checkpoint)["inside a checkpoint"])
    before = evil.read_bytes()
    args = {"info": ["info", str(evil)],
            "extract-mesh": ["extract-mesh", str(evil), "-o", str(tmp_path / "m.ply"), "--device", "cpu"],
            "render": ["render", str(evil), "--scene", str(tmp_path / "scene"), "-o", str(tmp_path / "views"),
                       "--device", "cpu"],
            "fit-sdf --resume": ["fit-sdf", str(tmp_path / "scan.ply"), "-o", str(evil), "--resume", "--device", "cpu"],
            }[command]
    result = CliRunner().invoke(app, args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "refused" in errors[0], result.stderr
    assert not marker.exists(), "the payload ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"] and evil.read_bytes() == before


def test_newer_version_is_refused(tmp_path, checkpoint):
    path = write_torch(tmp_path / "future.pt", dict(checkpoint, version=999))
    with pytest.raises(InputError, match="newer"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [None, "1", 1.0])
def test_malformed_version_is_refused(tmp_path, checkpoint, version):
    path = write_torch(tmp_path / "odd.pt", dict(checkpoint, version=version))
    with pytest.raises(InputError):
        load_checkpoint(path)


def test_wrong_kind_is_refused(tmp_path, checkpoint):
    path = write_torch(tmp_path / "nerf.pt", dict(checkpoint, kind="nerf"))
    with pytest.raises(InputError, match="field"):  # any known kind loads by default, if its field is one
        load_checkpoint(path)
    with pytest.raises(InputError, match="nerf"):
        load_checkpoint(path, kinds=("sdf",))
    with pytest.raises(InputError, match="sdf"):
        load_checkpoint(path, kinds=("sdf",))


def test_unknown_kind_is_refused(tmp_path, checkpoint):
    assert "banana" not in KINDS
    path = write_torch(tmp_path / "banana.pt", dict(checkpoint, kind="banana"))
    with pytest.raises(InputError, match="banana"):
        load_checkpoint(path)


def test_other_torch_files_are_refused(tmp_path, checkpoint):
    cases = {
        "plain_dict.pt": {"a": torch.zeros(3)},
        "tensor.pt": torch.zeros(3),
        "other_format.pt": dict(checkpoint, format="nerfstudio"),
    }
    for name, obj in cases.items():
        with pytest.raises(InputError, match="not a recon3d checkpoint"):
            load_checkpoint(write_torch(tmp_path / name, obj))
    missing = {k: v for k, v in checkpoint.items() if k != "bounds"}
    with pytest.raises(InputError, match="bounds"):
        load_checkpoint(write_torch(tmp_path / "missing.pt", missing))


def test_truncated_empty_random_missing_folder(tmp_path, fitted):
    data = fitted[0].read_bytes()
    files = {
        "truncated.pt": data[: len(data) // 2],
        "truncated_tail.pt": data[:-100],
        "header_only.pt": data[:64],
        "empty.pt": b"",
        "random.pt": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text.pt": b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError) as info:
            load_checkpoint(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value), name
    with pytest.raises(InputError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(InputError, match="folder"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------ describe


def test_describe_checkpoint(fitted, checkpoint):
    described = describe_checkpoint(checkpoint)
    assert described["kind"] == "sdf"
    assert described["format_version"] == VERSION
    assert described["level"] == 0.0 and described["inside"] == "below"
    assert described["encoding"] == "none"
    assert described["mlp"].startswith("3x256 sine")
    assert described["parameters"] == sum(t.numel() for t in checkpoint["state_dict"].values())
    assert described["to_world_scale"] == pytest.approx(checkpoint["to_world"]["scale"])
    assert described["to_world_translation"] == pytest.approx(checkpoint["to_world"]["translation"])
    lo, hi = np.asarray(described["bounds_world"])
    # the meshing box holds the data (a sphere of radius 2 around (10, -3, 1)) with a small margin
    assert (lo <= np.array([8.0, -5.0, -1.0]) + 1e-3).all() and (hi >= np.array([12.0, -1.0, 3.0]) - 1e-3).all()
    assert (lo >= np.array([7.5, -5.5, -1.5])).all() and (hi <= np.array([12.5, -0.5, 3.5])).all()
    assert described["steps"] == STEPS and described["complete"] is True
    assert described["resumable"] is False
    assert math.isfinite(described["final_loss"])
    assert described["final_loss"] == checkpoint["train"]["history"][-1][1]
    assert described["points"] == N_POINTS and described["normals"] == "file"
    assert described["device"] == "cpu"
    assert set(described["versions"]) == {"recon3d", "torch"}
    assert described["seconds"] >= 0


def test_describe_marks_resumable(checkpoint):
    partial = dict(checkpoint, resume={"step": 1})
    partial["train"] = dict(checkpoint["train"], complete=False)
    described = describe_checkpoint(partial)
    assert described["resumable"] is True and described["complete"] is False
