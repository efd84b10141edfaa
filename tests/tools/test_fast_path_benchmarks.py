"""tools/benchmark_train_step.py, tools/benchmark_inference.py and tools/gpu_benchmark.py run
at toy sizes on the CPU (their full-size figures are in README.md) and report what the
targets are about."""

import json
import math

import pytest
import torch

from reid_plugins.solver.precision import cpu_has_native_bf16
from tests._testing import load_tool


def test_gpu_benchmark_tiny_cpu_fallback_prints_every_row(tmp_path, capsys):
    path = tmp_path / "gpu.json"
    res = load_tool("gpu_benchmark").main(
        ["--device", "cpu", "--threads", "1", "--json", str(path)]
    )
    assert res["tiny"] and res["device"] == "cpu"  # automatic without CUDA
    assert json.loads(path.read_text())["rows"] == res["rows"]
    by_what = {r["what"]: r for r in res["rows"]}
    assert len(by_what) == 11
    assert len([w for w in by_what if " training, " in w]) == 4  # baseline, M3L x fp32, AMP
    m3l_amp = [r for w, r in by_what.items() if w.startswith("m3l training, AMP")][0]
    assert m3l_amp["value"] is None and "float32" in m3l_amp["note"]
    base_amp = [r for w, r in by_what.items() if w.startswith("baseline training, AMP")][0]
    assert (base_amp["value"] is not None) == cpu_has_native_bf16()
    for r in res["rows"]:
        if r is not m3l_amp and r is not base_amp:
            assert r["value"] is not None and r["value"] > 0 and math.isfinite(r["value"]), r
    for name in ("TDN inference, AMP", "OIM* inference, AMP", "feature extraction, AMP"):
        assert any(w.startswith(name) for w in by_what), name
    assert "| what | value | unit |" in capsys.readouterr().out


def test_train_step_benchmark_compares_fast_fp32_and_peer(tmp_path):
    path = tmp_path / "train.json"
    tool = load_tool("benchmark_train_step")
    res = tool.main(
        ["--depth", "18", "--height", "32", "--width", "16", "--batch", "8", "--ids", "2",
         "--num-classes", "4", "--warmup", "0", "--repeats", "1", "--threads", "1",
         "--json", str(path)]
    )  # fmt: skip
    v = json.loads(path.read_text())["variants"]
    assert set(v) == {"fast", "fp32", "peer"}
    assert "float32, contiguous, default Adam" in v["fp32"]["what"]
    assert "torchvision" in v["peer"]["what"] or "fast-reid" in v["peer"]["what"]
    if cpu_has_native_bf16():
        assert "bfloat16, channels-last, fused Adam" in v["fast"]["what"]
    assert v["peer"]["speedup_vs_peer"] == pytest.approx(1.0)
    assert all(x["s_per_iter"] > 0 for x in v.values()) and res["repeats"] == 1
    # the peer is the same architecture: last stride 1 (16x downsampling), BNNeck, 4 classes
    peer = tool.TorchvisionReID(18, 4)
    assert peer.body(torch.zeros(1, 3, 64, 32)).shape[-2:] == (4, 2)
    assert not peer.neck.bias.requires_grad and peer.classifier.bias is None


def test_inference_benchmark_times_fp32_fast_and_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "inf.json"
    load_tool("benchmark_inference").main(
        ["--depth", "18", "--height", "32", "--width", "16", "--batch", "4", "--batches", "1",
         "--warmup", "1", "--repeats", "1", "--threads", "1", "--json", str(path)]
    )  # fmt: skip
    v = json.loads(path.read_text())["variants"]
    assert set(v) == {"fp32", "fast", "onnxruntime"}
    assert v["onnxruntime"]["max_1_minus_cos_vs_fp32"] < 1e-5  # same float32 model
    assert v["fast"]["max_1_minus_cos_vs_fp32"] < 1e-2  # bf16 features stay close
    assert all(x["images_per_s"] > 0 for x in v.values())
