"""Network backends and `aepose export`: round trips, the ONNX cache, `auto`, and their errors.

Golden parity of each backend (stages and end-to-end cases) lives in test_golden_cases.py;
here: the exported files run by their target runtime agree with the PyTorch network on a shape
other than the export shape (to 1e-4), the cache is written once and atomically, and a missing
package or a failing export is one error line.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from aepose_cli.backends import create_backend, is_installed, resolve_backend
from aepose_cli.backends.onnx_export import graph_label, onnx_cache_path
from aepose_cli.model import build_from_checkpoint
from aepose_cli.zoo import checkpoint_sha256

from cli_helpers import (
    FAST,
    TINY_CHECKPOINT,
    ZIDANE,
    assert_ok,
    assert_one_line_error,
    cli_env,
    describe,
    load_json,
    run_in_process,
    run_main_after,
)

needs_ort = pytest.mark.skipif(not is_installed("onnxruntime"), reason="onnxruntime is not installed")
needs_openvino = pytest.mark.skipif(not is_installed("openvino"), reason="openvino is not installed")

# Not the traced shape (256x256) nor the static export shape: batch 2, a landscape 640x480-like canvas.
CHECK_SHAPE = (2, 3, 192, 320)


@pytest.fixture(scope="module")
def tiny_net():
    return build_from_checkpoint(TINY_CHECKPOINT)[0]


@pytest.fixture(scope="module")
def check_input():
    # A real photo, normalised as aepose feeds the network, at CHECK_SHAPE.
    import cv2

    from aepose_cli.preprocess import to_normalised_tensor

    bgr = cv2.resize(cv2.imread(str(ZIDANE)), (CHECK_SHAPE[3], CHECK_SHAPE[2]), interpolation=cv2.INTER_AREA)
    x = to_normalised_tensor(np.ascontiguousarray(bgr[:, :, ::-1]))
    return torch.stack([x, torch.flip(x, [2])])


@pytest.fixture(scope="module")
def torch_out(tiny_net, check_input):
    with torch.inference_mode():
        return tiny_net(check_input).numpy()


# -- aepose export -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    proc = run_in_process("export", "--checkpoint", TINY_CHECKPOINT, "--format", "onnx", "--out", out)
    assert_ok(proc)
    assert "wrote" in proc.stderr and out.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["tiny.onnx"]  # no temp file left
    return out


@needs_ort
def test_export_onnx_runs_in_onnxruntime_on_another_shape(exported_onnx, check_input, torch_out):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("image", "maps")
    (got,) = session.run(None, {"image": check_input.numpy()})
    assert got.shape == (2, 34, CHECK_SHAPE[2] // 4, CHECK_SHAPE[3] // 4) == torch_out.shape
    np.testing.assert_allclose(got, torch_out, rtol=0, atol=1e-4)


@needs_openvino
def test_export_onnx_runs_in_openvino_on_another_shape(exported_onnx, check_input, torch_out):
    import openvino as ov

    compiled = ov.Core().compile_model(str(exported_onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled(check_input.numpy())[0]
    np.testing.assert_allclose(got, torch_out, rtol=0, atol=1e-4)


@needs_ort
def test_export_onnx_static_shape(tmp_path, tiny_net):
    out = tmp_path / "static.onnx"
    assert_ok(run_in_process("export", "--checkpoint", TINY_CHECKPOINT, "--format", "onnx", "--static", "128,192", "--opset", "13", "--out", out))
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(out))
    assert model.opset_import[0].version == 13
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 192]
    x = torch.randn(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(got, tiny_net(x).numpy(), rtol=0, atol=1e-4)


def test_export_torchscript_runs_on_another_shape(tmp_path, check_input, torch_out):
    out = tmp_path / "tiny.pt"
    assert_ok(run_in_process("export", "--checkpoint", TINY_CHECKPOINT, "--format", "torchscript", "--out", out))
    scripted = torch.jit.load(str(out))
    with torch.inference_mode():
        got = scripted(check_input).numpy()
    np.testing.assert_allclose(got, torch_out, rtol=0, atol=1e-4)


def test_export_errors_are_one_line(tmp_path):
    base = ["export", "--checkpoint", TINY_CHECKPOINT, "--format", "onnx"]
    assert_one_line_error(run_in_process(*base, "--static", "100,200", "--out", tmp_path / "a.onnx"), "multiples of 32", code=2)
    # An output that cannot be written (README: exit 6), as the other commands' output plan says it.
    assert_one_line_error(run_in_process(*base, "--out", tmp_path / "no" / "a.onnx"), "does not exist", code=6)
    assert_one_line_error(run_in_process(*base, "--out", TINY_CHECKPOINT), "is the input checkpoint", code=2)
    # A real exporter failure: torch.onnx cannot write this network with opset 6.
    line = assert_one_line_error(run_in_process(*base, "--opset", "6", "--out", tmp_path / "old.onnx"), "cannot export the network to ONNX (opset 6)", code=5)
    assert len(line) < 400
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- backends inside aepose ----------------------------------------------------------------
def test_auto_resolution():
    expected_cpu = next((b for b in ("openvino", "onnxruntime") if is_installed(b)), "torch")
    assert resolve_backend("auto", "cpu") == expected_cpu
    assert resolve_backend("auto", "cpu", precision="bf16") == "torch"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("openvino", "cpu") == "openvino"


def test_importing_aepose_does_not_import_runtimes():
    code = "import sys, aepose_cli, aepose_cli.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'openvino', 'onnx')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip() == "[]"


@needs_ort
def test_onnx_cache_written_once_atomically(tmp_path, monkeypatch, tiny_net):
    monkeypatch.setenv("AEPOSE_HOME", str(tmp_path))
    sha = checkpoint_sha256(TINY_CHECKPOINT)
    cached = onnx_cache_path(sha, network=graph_label(tiny_net))
    assert cached.parent == tmp_path / "onnx" and sha[:32] in cached.name and torch.__version__.split("+")[0] in cached.name
    assert "-hrnet-1out-" in cached.name
    create_backend("onnxruntime", tiny_net, device=torch.device("cpu"), threads=1, checkpoint_sha256=sha)
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name, cached.name + ".digest"]  # the graph and its digest
    stamp = cached.stat().st_mtime_ns
    backend = create_backend("onnxruntime", tiny_net, device=torch.device("cpu"), threads=1, checkpoint_sha256=sha)
    assert cached.stat().st_mtime_ns == stamp  # reused, not exported again
    # One session serves every shape (dynamic axes).
    for h, w in ((128, 128), (192, 320)):
        (maps,) = backend(torch.zeros(1, 3, h, w))
        assert maps.shape == (1, 34, h // 4, w // 4)


@needs_ort
def test_cli_onnxruntime_matches_torch_end_to_end(tmp_path):
    """`aepose image` through ONNX Runtime finds the same people as the exact torch path."""
    results = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.json"
        proc = run_in_process("image", ZIDANE, *FAST, "--no-images", "--json", out, "--backend", backend, "--threads", "1", env_extra={"AEPOSE_HOME": str(tmp_path / "home")})
        assert_ok(proc)
        results[backend] = load_json(out)["annotations"]
    assert len(results["torch"]) == len(results["onnxruntime"]) > 0
    for a, b in zip(results["torch"], results["onnxruntime"]):
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], rtol=0, atol=1e-3)
    assert list((tmp_path / "home" / "onnx").glob("*.onnx"))


def _own_home(tmp_path) -> dict[str, str]:
    """$AEPOSE_HOME of the test's own (so no cached ONNX graph of another run is reused)."""
    return {"AEPOSE_HOME": str(tmp_path / "home")}


def test_missing_openvino_is_one_line(tmp_path):
    # sys.modules[name] = None is how Python spells "this package cannot be imported".
    proc = run_main_after("import sys; sys.modules['openvino'] = None", "image", ZIDANE, *FAST, "--backend", "openvino", "--out", tmp_path / "z.jpg", "--json", tmp_path / "z.json", env_extra=_own_home(tmp_path))
    assert_one_line_error(proc, "--backend openvino", "aepose-cli[openvino]", code=5)
    assert list(tmp_path.glob("z.*")) == []


def test_auto_falls_back_to_torch_without_the_runtimes(tmp_path):
    proc = run_main_after("import sys; sys.modules['onnxruntime'] = None; sys.modules['openvino'] = None", "image", ZIDANE, *FAST, "--backend", "auto", "--no-images", "--json", tmp_path / "z.json", env_extra=_own_home(tmp_path))
    assert_ok(proc)
    assert (tmp_path / "z.json").is_file()
    assert not (tmp_path / "home" / "onnx").exists()  # torch ran: nothing was exported


@needs_ort
def test_failing_export_is_one_line(tmp_path):
    prelude = (
        "import torch.onnx\n"
        "def broken(*a, **k): raise RuntimeError('Unsupported: ONNX export of operator foo\\nmore detail')\n"
        "torch.onnx.export = broken"
    )
    proc = run_main_after(prelude, "image", ZIDANE, *FAST, "--backend", "onnxruntime", "--no-images", "--json", tmp_path / "z.json", env_extra=_own_home(tmp_path))
    assert_one_line_error(proc, "cannot export the network to ONNX", "Unsupported: ONNX export of operator foo", code=5)
    assert list(tmp_path.glob("z.*")) == []
    assert not list(tmp_path.glob("home/onnx/*"))  # no half-written graph in the cache
