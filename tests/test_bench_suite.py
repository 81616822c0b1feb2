"""The benchmark suite runner (with a fake benchmark package: ok, crash, no output, timeout, missing) and the
self-contained GPU check script (CPU smoke run; tower shapes against open_clip's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suite import SPECS, BenchSpec, SuiteContext, run_suite, select
from benchmarks.summary import headline, write_outputs

REPO = Path(__file__).resolve().parents[1]

FAKES = {
    # Declares --quick and --out: must receive both.
    "good": (
        "import argparse, json, sys\n"
        "ap = argparse.ArgumentParser()\n"
        'ap.add_argument("--quick", action="store_true")\n'
        'ap.add_argument("--out")\n'
        "a = ap.parse_args()\n"
        "if not a.quick:\n    sys.exit(5)\n"
        'open(a.out, "w").write(json.dumps({"results": [{"model": "m", "images_per_s": 12.5, "batch": 4}]}))\n'
    ),
    # Declares neither: gets the spec's quick_args, and its JSON is read from --results only if it writes there.
    "plain": "import sys\nsys.exit(0 if sys.argv[1:] == ['--n', '3'] else 4)\n",
    "crash": "import sys\nprint('working...')\nprint('ValueError: boom', file=sys.stderr)\nsys.exit(3)\n",
    "slow": "import time\ntime.sleep(30)\n",
}


@pytest.fixture()
def fake_suite(tmp_path: Path) -> SuiteContext:
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, code in FAKES.items():
        (pkg / f"{name}.py").write_text(code)
    return SuiteContext(results=tmp_path / "results", quick=True, package="fakebench", package_dir=pkg)


def test_outcomes_are_recorded_and_one_failure_does_not_stop_the_rest(fake_suite: SuiteContext) -> None:
    specs = [
        BenchSpec("crash", "fails"),
        BenchSpec("good", "works"),
        BenchSpec("absent", "not written"),
        BenchSpec("plain", "no --out", quick_args=("--n", "3")),
        BenchSpec("slow", "hangs", quick_timeout_s=2.0),
        BenchSpec("good", "needs a missing package", requires=("no_such_module_xyz",)),
    ]
    entries = run_suite(specs, fake_suite)
    got = [(e.name, e.status) for e in entries]
    assert got == [
        ("crash", "failed"),
        ("good", "ok"),
        ("absent", "skipped"),
        ("plain", "failed"),
        ("slow", "timeout"),
        ("good", "skipped"),
    ]
    crash, good, absent, plain, slow, needs = entries
    assert crash.reason == "exit code 3: ValueError: boom" and "working..." in crash.output_tail
    assert good.payload["results"][0]["images_per_s"] == 12.5 and good.result == "good.json"
    assert good.command[-2:] == ("--out", str(fake_suite.results / "good.json")) and "--quick" in good.command
    assert "not written yet" in absent.reason and absent.seconds == 0
    assert plain.reason == "exited 0 but wrote no plain.json"  # quick_args reached it (else exit 4)
    assert "after 2 s" in slow.reason
    assert "no_such_module_xyz" in needs.reason
    log = (fake_suite.results / crash.log).read_text()
    assert log.startswith("python -m fakebench.crash") and "boom" in log

    paths = write_outputs(entries, fake_suite.results, {"cpus": 2, "machine": "x86_64", "python": "3"}, quick=True)
    summary = paths["markdown"].read_text()
    assert "| good | works | ok |" in summary and "images_per_s 12.5" in summary
    assert "| slow | hangs | timeout |" in summary and "| absent | not written | skipped | - |" in summary
    suite = json.loads(paths["json"].read_text())
    assert [e["status"] for e in suite["entries"]] == [s for _, s in got] and suite["quick"] is True
    assert "payload" not in suite["entries"][1]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_stale_result_from_an_earlier_run_is_a_failure(fake_suite: SuiteContext) -> None:
    fake_suite.results.mkdir(parents=True)
    old = fake_suite.results / "plain.json"
    old.write_text("{}")
    import os

    os.utime(old, (1_000_000, 1_000_000))
    [entry] = run_suite([BenchSpec("plain", "x", quick_args=("--n", "3"))], fake_suite)
    assert entry.status == "failed" and "earlier run" in entry.reason


def test_headlines() -> None:
    retrieval = {"results": {"text->image": {"metrics": {"recall@1": {"value": 0.25}, "mAP": {"value": 0.5}}}}}
    assert headline(retrieval) == "text->image: recall@1 0.25, mAP 0.5"
    nested = {"machine": {"cpus": 2}, "results": [{"batch": 64, "images_per_s": 1234.5, "volume_cost_ratio": 1.05}]}
    assert headline(nested) == "0.images_per_s 1,234, 0.volume_cost_ratio 1.05"
    assert headline({"headline": "said by the benchmark"}) == "said by the benchmark"


def test_select_and_the_real_spec_list() -> None:
    names = [s.name for s in SPECS]
    for wanted in (
        "encode_throughput",
        "index_throughput",
        "read_throughput",
        "search",
        "train_quality",
        "retrieval_vqa_rad",
        "pooling_ablation",
    ):
        assert wanted in names
    assert [s.name for s in select(SPECS, ["search"])] == ["search"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        select(SPECS, ["nope"])


def test_bench_all_list_through_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "bench", "all", "--list", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert set(lines) == {s.name for s in SPECS}
    assert "python -m benchmarks.retrieval_vqa_rad --quick --out" in lines["retrieval_vqa_rad"]


# ---------------------------------------------------------------- gpu_check
def test_gpu_check_script_runs_on_cpu_tiny(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--device", "cpu", "--tiny", "--min-s", "0.05"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").read_text().strip().endswith("gpu_check.json")
    assert data["reference"]["ViT-B-16"] == 1100 and data["reference"]["ViT-L-14"] == 312
    assert [(r["model"], r["compiled"], r["dtype"]) for r in data["encode"]] == [
        ("tiny-B", False, "bfloat16"),
        ("tiny-L", False, "bfloat16"),
    ]
    assert all(r["images_per_s"] > 0 for r in data["encode"])
    [vol] = data["volume"]
    assert vol["slices_per_volume"] == 32 and vol["slices_per_s"] == pytest.approx(32 * vol["volumes_per_s"], rel=0.01)
    [torch_search] = [s for s in data["search"] if s["backend"] == "torch-matmul-topk"]
    assert torch_search["n"] == 10_000 and torch_search["recall@10_vs_fp32"] > 0.9
    [backend] = [s for s in data["search"] if s["backend"] == "radretrieve-torch-exact"]  # indexers/torch_exact.py
    assert backend["dtype"] == "float32" and backend["recall@10_vs_fp32"] == 1.0  # fp32 on the CPU: exact
    assert [b["query_batch"] for b in backend["batches"]] == [1, 16, 256, 1024]
    assert all(b["qps"] > 0 and b["bound_qps"] > 0 for b in backend["batches"])
    assert {e["phase"] for e in data["errors"]} <= {"search faiss"}  # faiss-cpu here: no GPU index
    assert data["machine"]["gpu"] is None and data["settings"]["compile"] is False


def test_gpu_check_towers_have_clip_shapes() -> None:
    """Parameter counts equal open_clip's CLIP image towers (built on the meta device: no memory)."""
    import torch
    from open_clip import get_model_config
    from open_clip.transformer import VisionTransformer

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_check import SHAPES, VisionTower
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    for name, shape in SHAPES.items():
        cfg = get_model_config(name)
        v = cfg["vision_cfg"]
        with torch.device("meta"):
            ref = VisionTransformer(
                image_size=v["image_size"],
                patch_size=v["patch_size"],
                width=v["width"],
                layers=v["layers"],
                heads=v["width"] // 64,
                mlp_ratio=4.0,
                output_dim=cfg["embed_dim"],
            )
            mine = VisionTower(shape)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert count(mine) == count(ref), name
        assert (shape.width, shape.layers, shape.patch, shape.embed_dim) == (
            v["width"],
            v["layers"],
            v["patch_size"],
            cfg["embed_dim"],
        )
