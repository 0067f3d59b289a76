"""The benchmark's measurement runs on a tiny shape and writes well-formed rows (no timing assertions)."""
from __future__ import annotations

import json

from harness.bench import measure as bench

TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=256, vocab_size=97, full_layers=4, cpu_layers=2)
TYPES = {"method": str, "shape": str, "seq_len": int, "device": str, "batch": int, "seconds": float,
         "peak_mb": float, "layers": int}


def test_bench_rows_schema(tmp_path):
    out = tmp_path / "bench.json"
    rows = bench.run_bench(shapes={"tiny": TINY}, seq_lens=(48,), methods=("suite", "bare_base"), repeats=2,
                           out=out, log=lambda *a: None)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(rows))
    assert sorted(r["method"] for r in data) == ["bare_base", "suite"]  # one row per method
    for r in data:
        assert set(bench.ROW_KEYS) <= set(r)
        for key, typ in TYPES.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert (r["shape"], r["seq_len"], r["device"], r["batch"], r["layers"]) == ("tiny", 48, "cpu", 4, 2)
        assert r["seconds"] > 0 and r["peak_mb"] >= 0 and len(r["times"]) == 2 and r["error"] is None
    rats = bench.ratios(rows, batch=4)
    (sb,) = [q for q in rats if q["name"] == "suite/bare_base"]
    assert sb["value"] > 0
    table = bench.format_table(rows, rats)
    assert "suite/bare_base" in table and "bare_base" in table


def test_transformerlens_failure_is_recorded_not_raised(monkeypatch):
    def broken(model):
        raise ImportError("transformer_lens is not installed")

    monkeypatch.setattr(bench, "build_bridge", broken)
    model = bench.build_model(bench.make_config(TINY, 1))
    row = bench.measure("transformerlens", model, shape="tiny", seq_len=48, batch=2, repeats=1)
    assert row["seconds"] is None and row["peak_mb"] is None and "not installed" in row["error"]
    assert model.config._attn_implementation == "sdpa"  # left as found
    rats = bench.ratios([row], batch=2)
    (tl,) = [q for q in rats if q["name"] == "transformerlens/suite"]
    assert tl["value"] is None and "not installed" in tl["note"]


def test_overrides():
    o = bench.parse_overrides(["quick=true", "device=cpu", "repeats=2", "out=x.json"])
    assert o["quick"] is True and o["repeats"] == 2 and o["out"] == "x.json" and o["study_batch"] == 4
