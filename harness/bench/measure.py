"""Benchmark the capture engine against a bare forward, the study's pipeline and TransformerLens.

    python -m harness.bench                     # pythia-70m and pythia-1b shapes, T=256 and T=1024, CPU
    python -m harness.bench quick=true          # pythia-70m shape, T=256 only (under a minute on CPU)
    python -m harness.bench device=cuda dtype=bfloat16
    python -m harness.bench layers_1b=4 repeats=5 batch=8 out=results/bench/x.json methods=suite,bare_base

Models are GPT-NeoX configs with random weights (nothing is downloaded), at full width and, on
CPU, reduced depth (`layers_70m=`, `layers_1b=`; the table says which). One measurement times
one checkpoint-batch: `seconds` is the median over `repeats` timed passes, run round-robin over
the methods, after a tiny warm-up (1 x 32 tokens) and one untimed full pass that measures peak memory (CPU: the process's peak RSS above its RSS before the pass, after
malloc_trim; CUDA: torch.cuda.max_memory_allocated above the allocation before the pass).

Methods (all on the same weights and the same random token ids):
  suite            Engine.run with the default suite's needs, Needs.of(rows=[-1]) (+ rows to host)
  suite_logits     the same plus logits at the last position
  bare_base        model.base_model(ids), SDPA attention, no unembedding: the floor
  bare_full        model(ids), SDPA, full logits
  study            the study's pipeline: eager attention, output_attentions=True, batch 4, every
                   layer's last-query row copied to the host, full logits computed and dropped
  transformerlens  TransformerBridge (built offline from a copy of the same model) run_with_cache
                   with a names_filter for hook_pattern and hook_z

The study always runs at `study_batch` (4); the others at `batch`. Ratios compare time per
sequence (seconds / batch), the fair unit when batches differ. Capture memory is the suite's
peak minus bare_base's; the study's extra memory is its peak minus bare_full's at the study's
batch (both per sequence).
"""
from __future__ import annotations

import copy
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from harness.bench.peakmem import PeakMemory

METHODS = ("suite", "suite_logits", "bare_base", "bare_full", "study", "transformerlens")

# Full-width GPT-NeoX shapes (Pythia). `cpu_layers` is the default depth on CPU.
SHAPES = {
    "pythia-70m": dict(hidden_size=512, num_attention_heads=8, intermediate_size=2048, vocab_size=50304,
                       full_layers=6, cpu_layers=6),
    "pythia-1b": dict(hidden_size=2048, num_attention_heads=8, intermediate_size=8192, vocab_size=50304,
                      full_layers=16, cpu_layers=2),
}
ROW_KEYS = ("method", "shape", "seq_len", "device", "batch", "seconds", "peak_mb", "layers")
TARGETS = {  # name -> (numerator, denominator, comparison, cpu target, cuda target)
    "suite/bare_base": ("suite", "bare_base", "<=", 1.15, 1.15),
    "suite_logits/bare_full": ("suite_logits", "bare_full", "<=", 1.3, 1.3),
    "study/suite": ("study", "suite", ">=", 2.0, 5.0),
    "transformerlens/suite": ("transformerlens", "suite", ">=", 2.0, 2.0),
}
MEMORY_TARGET = 0.10  # capture memory <= 10% of the study's extra memory


# ----------------------------------------------------------------------------- models

def make_config(shape: dict, layers: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"], num_hidden_layers=layers,
        num_attention_heads=shape["num_attention_heads"], intermediate_size=shape["intermediate_size"],
        rotary_pct=0.25, max_position_embeddings=max(2048, shape.get("max_position_embeddings", 0)),
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )


def build_model(config, device="cpu", dtype=torch.float32, seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return model.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- methods

def _names_filter(name: str) -> bool:
    return name.endswith(("attn.hook_pattern", "attn.hook_z"))


def build_bridge(model):
    """A TransformerBridge around a copy of `model` (the bridge rewires the model it wraps)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    twin = copy.deepcopy(model)
    return build_bridge_from_module(twin, "GPTNeoXForCausalLM", hf_config=twin.config)


def prepare(method: str, model, ids: torch.Tensor, bridges: dict):
    """Set the model up for `method`; return a callable doing one checkpoint-batch."""
    from harness.capture.engine import Engine, Needs

    if method in ("suite", "suite_logits"):
        engine = Engine(model)  # switches the model to the capture attention
        needs = Needs.of(rows=[-1], logits=[-1] if method == "suite_logits" else [])

        def run():
            cap = engine.run(ids, needs)
            rows = cap.rows[-1].cpu()  # the probes read rows on the host
            return rows, cap.logits
        return run

    if method in ("bare_base", "bare_full"):
        model.set_attn_implementation("sdpa")

        @torch.inference_mode()
        def run():
            if method == "bare_base":
                return model.base_model(input_ids=ids).last_hidden_state
            return model(input_ids=ids).logits
        return run

    if method == "study":
        model.set_attn_implementation("eager")

        @torch.no_grad()
        def run():
            out = model(input_ids=ids, output_attentions=True)
            rows = [a[:, :, -1, :].float().to("cpu", copy=True) for a in out.attentions]  # every layer's last query
            _ = out.logits  # computed, never used
            return rows
        return run

    if method == "transformerlens":
        key = id(model)
        if key not in bridges:
            bridges.clear()  # one bridge (a full model copy) at a time
            bridges[key] = build_bridge(model)
        bridge = bridges[key]

        @torch.no_grad()
        def run():
            _, cache = bridge.run_with_cache(ids, names_filter=_names_filter)
            return cache
        return run

    raise ValueError(f"unknown method '{method}' (valid: {', '.join(METHODS)})")


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fail(row: dict, method: str, e: Exception):
    """transformer-lens missing or broken is recorded in the row, not fatal; anything else is."""
    if method != "transformerlens":
        raise e
    row.update(error=f"{type(e).__name__}: {e}"[:500], times=[], peak_mb=None, peak_rss_mb=None)


def measure_cell(plan: list[tuple[str, int]], model, *, shape: str, seq_len: int, repeats: int = 3, device="cpu",
                 bridges: dict | None = None, seed: int = 0, full_layers: int | None = None) -> list[dict]:
    """One row per (method, batch) in `plan`: median seconds per checkpoint-batch and peak memory.

    Each method gets a tiny warm-up (1 x 32 tokens: one-time set-up costs) and one untimed full pass
    that measures its peak memory; then the timed passes run round-robin over the methods
    (repeat 1 of every method, repeat 2 of every method, ...), so a change in the machine's load
    during the cell hits all methods alike. All methods see the same token ids (a prefix of one
    random (max batch, T) tensor).
    """
    device = torch.device(device)
    bridges = {} if bridges is None else bridges
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    all_ids = torch.randint(0, cfg.vocab_size, (max(b for _, b in plan), seq_len), generator=g).to(device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    rows = [dict(method=m, shape=shape, seq_len=seq_len, device=str(device), batch=b, seconds=None, peak_mb=None,
                 layers=cfg.num_hidden_layers, full_layers=full_layers or cfg.num_hidden_layers, dtype=dtype,
                 repeats=repeats, threads=torch.get_num_threads(), seconds_per_seq=None, peak_rss_mb=None,
                 times=[], error=None) for m, b in plan]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for row in rows:
                m, ids = row["method"], all_ids[: row["batch"]]
                try:
                    prepare(m, model, ids[:1, : min(seq_len, 32)], bridges)()
                    fn = prepare(m, model, ids, bridges)
                    with PeakMemory(device) as mem:
                        out = fn()
                        _sync(device)
                    del out
                    row["peak_mb"] = None if mem.bytes is None else mem.bytes / 2**20
                    row["peak_rss_mb"] = None if mem.rss_bytes is None else mem.rss_bytes / 2**20
                except Exception as e:  # noqa: BLE001
                    _fail(row, m, e)
            for _ in range(repeats):
                for row in rows:
                    if row["error"]:
                        continue
                    m = row["method"]
                    try:
                        fn = prepare(m, model, all_ids[: row["batch"]], bridges)
                        t0 = time.perf_counter()
                        out = fn()
                        _sync(device)
                        row["times"].append(time.perf_counter() - t0)
                        del out
                    except Exception as e:  # noqa: BLE001
                        _fail(row, m, e)
    finally:
        model.set_attn_implementation("sdpa")
    for row in rows:
        if row["times"]:
            row["seconds"] = statistics.median(row["times"])
            row["seconds_per_seq"] = row["seconds"] / row["batch"]
    return rows


def measure(method: str, model, *, batch: int, **kw) -> dict:
    """One method alone (see measure_cell)."""
    return measure_cell([(method, batch)], model, **kw)[0]


# ----------------------------------------------------------------------------- the bench

def run_bench(*, shapes: dict[str, dict], seq_lens=(256, 1024), methods=METHODS, batch=4, study_batch=4, repeats=3,
              device="cpu", dtype=torch.float32, out: str | Path | None = None, log=print) -> list[dict]:
    """Measure every method for every (shape, seq_len); write the rows to `out` (JSON list) if given.

    `shapes` maps a name to a SHAPES-style dict plus `layers` (the depth to build).
    """
    device = torch.device(device)
    rows: list[dict] = []
    for name, shape in shapes.items():
        layers = shape.get("layers") or shape["cpu_layers"]
        model = build_model(make_config(shape, layers), device, dtype)
        bridges: dict = {}
        for T in seq_lens:
            plan = [(m, study_batch if m == "study" else batch) for m in methods]
            if "study" in methods and "bare_full" in methods and batch != study_batch:
                plan.append(("bare_full", study_batch))  # the study's memory reference at its own batch
            cell = measure_cell(plan, model, shape=name, seq_len=T, repeats=repeats, device=device,
                                bridges=bridges, full_layers=shape.get("full_layers"))
            load = os.getloadavg() if hasattr(os, "getloadavg") else None
            for row in cell:
                row["load_avg_1m"] = load[0] if load else None
                rows.append(row)
                log(f"  {name} L={layers} T={T} {row['method']:<16} batch={row['batch']:<3} " + (
                    f"{row['seconds']:.3f} s  {row['peak_mb']:.1f} MB" if row["seconds"] is not None
                    else f"skipped: {row['error']}"))
        del model, bridges
        gc.collect()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    return rows


def _cells(rows):
    cells: dict[tuple, dict] = {}
    for r in rows:
        cells.setdefault((r["shape"], r["seq_len"], r["device"]), {})[(r["method"], r["batch"])] = r
    return cells


def ratios(rows: list[dict], batch: int | None = None, study_batch: int = 4) -> list[dict]:
    """Per (shape, seq_len, device): the time ratios (per sequence) and the memory ratio vs their targets."""
    out = []
    for (shape, T, dev), cell in _cells(rows).items():
        def get(method, b=None, cell=cell):
            rs = [r for (m, bb), r in cell.items() if m == method and (b is None or bb == b)]
            rs = [r for r in rs if r["seconds"] is not None]
            if not rs:
                return None
            if b is None and method != "study" and batch is not None:  # prefer the main batch
                rs = [r for r in rs if r["batch"] == batch] or rs
            return rs[0]

        gpu = dev.startswith("cuda")
        for name, (num, den, op, cpu_t, gpu_t) in TARGETS.items():
            a, b = get(num), get(den)
            target = gpu_t if gpu else cpu_t
            if a is None or b is None:
                missing = [m for m, r in ((num, a), (den, b)) if r is None]
                why = "; ".join(f"{m}: {cell.get((m, (study_batch if m == 'study' else batch)), {}).get('error') or 'not run'}"
                                for m in missing)
                out.append(dict(shape=shape, seq_len=T, device=dev, name=name, value=None, target=f"{op} {target}",
                                ok=None, note=why))
                continue
            v = a["seconds_per_seq"] / b["seconds_per_seq"]
            ok = v <= target if op == "<=" else v >= target
            out.append(dict(shape=shape, seq_len=T, device=dev, name=name, value=v, target=f"{op} {target}", ok=ok,
                            note=f"per sequence: {a['seconds_per_seq'] * 1e3:.1f} / {b['seconds_per_seq'] * 1e3:.1f} ms"))
        s, bb, st = get("suite"), get("bare_base"), get("study")
        bf = get("bare_full", st["batch"]) if st else None
        if all(r is not None and r["peak_mb"] is not None for r in (s, bb, st, bf)):
            cap = (s["peak_mb"] - bb["peak_mb"]) / s["batch"]
            study = (st["peak_mb"] - bf["peak_mb"]) / st["batch"]
            v = cap / study if study > 0 else float("inf")
            out.append(dict(shape=shape, seq_len=T, device=dev, name="capture_mem/study_extra_mem", value=v,
                            target=f"<= {MEMORY_TARGET}" + ("" if T >= 1024 else " (target at T=1024)"),
                            ok=(v <= MEMORY_TARGET) if T >= 1024 else None,
                            note=f"per sequence: capture {cap:.2f} MB, study extra {study:.2f} MB"))
    return out


def format_table(rows: list[dict], rats: list[dict]) -> str:
    lines = []
    hdr = (f"{'shape':<22} {'T':>5} {'method':<16} {'batch':>5} {'s/batch':>9} {'ms/seq':>9} {'peak MB':>9} "
           f"{'RSS MB':>8}  note")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        shape = f"{r['shape']} ({r['layers']}/{r['full_layers']} L)"
        if r["seconds"] is None:
            lines.append(f"{shape:<22} {r['seq_len']:>5} {r['method']:<16} {r['batch']:>5} {'-':>9} {'-':>9} {'-':>9} "
                         f"{'-':>8}  {r['error']}")
            continue
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        rss = "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"
        lines.append(f"{shape:<22} {r['seq_len']:>5} {r['method']:<16} {r['batch']:>5} {r['seconds']:>9.3f} "
                     f"{r['seconds_per_seq'] * 1e3:>9.1f} {peak:>9} {rss:>8}  {r['device']} {r['dtype']}")
    lines += ["", f"{'shape':<12} {'T':>5} {'ratio':<28} {'value':>7} {'target':<26} {'met':<5} note",
              "-" * 100]
    for q in rats:
        val = "-" if q["value"] is None else f"{q['value']:.3f}"
        met = {True: "yes", False: "MISS", None: "-"}[q["ok"]]
        lines.append(f"{q['shape']:<12} {q['seq_len']:>5} {q['name']:<28} {val:>7} {q['target']:<26} {met:<5} {q['note']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def parse_overrides(argv: list[str]) -> dict:
    opts = dict(quick=False, device="cpu", dtype="float32", out=None, repeats=None, batch=None, study_batch=4,
                threads=1, layers_70m=None, layers_1b=None, methods=",".join(METHODS), shapes=None, seq_lens=None)
    for arg in argv:
        key, sep, val = arg.partition("=")
        key = key.lstrip("-+")
        if not sep or key not in opts:
            raise SystemExit(f"bad override '{arg}' (key=value with key in {', '.join(opts)})")
        opts[key] = val
    opts["quick"] = str(opts["quick"]).lower() in ("1", "true", "yes")
    for k in ("repeats", "batch", "study_batch", "threads", "layers_70m", "layers_1b"):
        opts[k] = None if opts[k] in (None, "", "null") else int(opts[k])
    return opts


def main(argv: list[str] | None = None) -> list[dict]:
    o = parse_overrides(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(o["threads"])
    device = torch.device(o["device"])
    dtype = getattr(torch, o["dtype"])
    names = o["shapes"].split(",") if o["shapes"] else (["pythia-70m"] if o["quick"] else list(SHAPES))
    seq_lens = [int(t) for t in o["seq_lens"].split(",")] if o["seq_lens"] else ([256] if o["quick"] else [256, 1024])
    shapes = {}
    for n in names:
        s = dict(SHAPES[n])
        depth = o["layers_70m"] if n == "pythia-70m" else o["layers_1b"]
        s["layers"] = depth or (s["cpu_layers"] if device.type == "cpu" else s["full_layers"])
        shapes[n] = s
    batch = o["batch"] or (4 if device.type == "cpu" else 64)
    repeats = o["repeats"] or (3 if device.type == "cpu" else 10)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(o["out"] or f"results/bench/bench-{stamp}.json")
    methods = [m for m in o["methods"].split(",") if m]
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"bench: {device} {o['dtype']}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{platform.node()}, load average {' '.join(f'{x:.2f}' for x in load)}; batch {batch} "
          f"(study {o['study_batch']}), median of {repeats}")
    t0 = time.perf_counter()
    rows = run_bench(shapes=shapes, seq_lens=seq_lens, methods=methods, batch=batch, study_batch=o["study_batch"],
                     repeats=repeats, device=device, dtype=dtype, out=out)
    rats = ratios(rows, batch=batch, study_batch=o["study_batch"])
    table = format_table(rows, rats)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    footer = (f"\nratios use time per sequence (seconds / batch). Depth reduced where L < full. "
              f"Took {time.perf_counter() - t0:.0f} s; load average at end "
              f"{' '.join(f'{x:.2f}' for x in load)}.\nrows: {out}")
    print("\n" + table + footer)
    out.with_suffix(".txt").write_text(table + footer + "\n")
    return rows


if __name__ == "__main__":
    main()
