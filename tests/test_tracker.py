"""Tracker + offline reader: one real offline wandb run (module fixture, ~2 s), read back with no network."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wandb
from wandb_offline import BLOCK, HEADER, find_runs, iter_records, read_run

from harness.tracking import tracker as T

REVISIONS = [  # (revision, step, tokens, scalars)
    ("step0", 0, 0, {"selectivity.bos_fraction": 0.123456789012345, "induction.score": -1.5e-7}),
    ("step1000", 1000, 2_097_152_000, {"selectivity.bos_fraction": 0.987654321098765, "induction.score": 3.25}),
]
CONFIG = {"experiment_name": "t", "model": {"name": "tiny", "layers": 4}, "probe": {"selectivity": {"k": 2}}}
T1 = 2_097_152_000
AT1 = {"revision": "step1000", "step": 1000, "tokens": T1}
FINDINGS = {  # the schema harness.analysis writes, filled by hand
    "model": "tiny", "revisions": ["step0", "step1000"], "steps": [0, 1000], "tokens": [0, T1],
    "n_layers": 4, "n_heads": 2, "bos_fraction": [0.125, 0.5], "n_induction": [1, 3], "induction_max": [60.0, 120.0],
    "bos_layer_counts": [[0, 0, 1, 0], [0, 0, 2, 2]],
    "milestones": {"induction_3": AT1, "induction_5": None, "bos_10": {"revision": "step0", "step": 0, "tokens": 0},
                   "bos_30": AT1, "bos_50": AT1, "bos_70": None},
    "lag": 1.0, "bos_free_layers": [0, 1],
    "bos_shape": {"verdict": "sharp", "largest_step_share": 1.0, "between": ["step0", "step1000"], "rise": 0.375},
    "induction_shape": {"verdict": "gradual", "largest_step_share": 0.4, "between": ["step0", "step1000"], "rise": 2},
    "early_screen": {"final_circuit": ["L1H0", "L2H1", "L3H1"], "recall": [1 / 3, 1.0],
                     "first_at": {"1/3": {"revision": "step0", "tokens": 0, "token_fraction": 0.0},
                                  "2/3": {"revision": "step1000", "tokens": T1, "token_fraction": 1.0}, "1": None}},
    "pr_lead": {"L1H0": {"crossing": "step0", "pr_rise": None, "lead_revisions": None, "verdict": "undetermined"},
                "L2H1": {"crossing": "step1000", "pr_rise": "step0", "lead_revisions": 1, "verdict": "lead"}},
    "summary": ["tiny: first sentence.", "tiny: second sentence."],
    "rules": {"bos": 30.0, "induction": 50.0},
}


def heads_frame(shift: float) -> pd.DataFrame:
    layer, head = np.meshgrid(np.arange(4), np.arange(2), indexing="ij")
    return pd.DataFrame({
        "layer": layer.ravel(), "head": head.ravel(),
        "selectivity.bos": np.linspace(0, 1, 8) + shift,
        "induction.score": np.arange(8, dtype=float) * 0.5,
        "selectivity.kind": [f"k{i % 3}" for i in range(8)],  # a string column: table only, no heatmap
    })


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An environment where wandb finds no key: empty HOME, missing NETRC, empty config dir."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two revisions logged to a real offline run, then finished; returns what the checks need."""
    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_CACHE_DIR", str(root / "cache"))
        mp.setenv("WANDB_DATA_DIR", str(root / "data"))
        mp.delenv("WANDB_API_KEY", raising=False)
        tr = T.Tracker(project="circuit-trajectories", group="t", job_type="probe", name="tiny", config=CONFIG,
                       mode="offline", dir=str(root), tags=("test",))
        frames = {}
        for i, (rev, step, tokens, scalars) in enumerate(REVISIONS):
            frames[rev] = heads_frame(i)
            parquet = root / "results" / rev / "heads.parquet"
            parquet.parent.mkdir(parents=True)
            frames[rev].to_parquet(parquet)
            tr.log_revision(revision=rev, step=step, tokens=tokens, scalars=scalars, heads=frames[rev],
                            parquet_path=parquet, provenance={"revision": rev, "layout": {"n_layers": 4},
                                                              "dims": (4, 2), "x": np.float32(0.5)})
        trajectory = pd.concat([heads_frame(i).assign(revision=rev, tokens=pd.array([tokens or None] * 8, "Int64"))
                                for i, (rev, _, tokens, _) in enumerate(REVISIONS)], ignore_index=True)
        tr.log_findings(FINDINGS, trajectory)
        where = tr.url_or_path
        tr.finish()
        tr.finish()  # idempotent
    return {"root": root, "run_dir": tr.run_dir, "where": where, "frames": frames, "run": read_run(tr.run_dir),
            "trajectory": trajectory}


def test_run_folder_and_hint(logged):
    run_dir = logged["run_dir"]
    assert run_dir.name.startswith("offline-run-") and run_dir.parent == logged["root"] / "wandb"
    assert find_runs(logged["root"]) == [run_dir]
    assert str(run_dir) in logged["where"] and f"wandb sync {run_dir}" in logged["where"]
    run = logged["run"]
    assert run.complete and run.exit_code == 0
    assert (run.project, run.group, run.job_type, run.name, run.tags) == ("circuit-trajectories", "t", "probe",
                                                                            "tiny", ["test"])


def test_history_rows_equal_scalars(logged):
    history = [row for row in logged["run"].history if "step" in row]  # not the findings row
    assert len(history) == len(REVISIONS) and len(logged["run"].history) == len(REVISIONS) + 1
    assert logged["run"].history[-1]["tokens"] == REVISIONS[-1][2]  # W&B puts the findings at the last x
    for row, (rev, step, tokens, scalars) in zip(history, REVISIONS):
        assert row["tokens"] == tokens and row["step"] == step
        for key, value in scalars.items():
            assert row[key] == value  # exact: JSON round-trips doubles
    assert logged["run"].summary["selectivity.bos_fraction"] == REVISIONS[-1][3]["selectivity.bos_fraction"]


def test_config_round_trips(logged):
    config = {k: v for k, v in logged["run"].config.items() if k != "_wandb"}
    assert config == CONFIG


def test_media_in_history_and_files(logged):
    files = logged["run_dir"] / "files"
    for row, (rev, *_ ) in zip(logged["run"].history, REVISIONS):
        assert not [k for k in row if k.startswith("heads/")]  # no table key per revision (one panel each)
        assert {k for k in row if k.startswith("heatmap/")} == {"heatmap/selectivity.bos", "heatmap/induction.score"}
        for key in ("heatmap/selectivity.bos", "heatmap/induction.score"):
            image = row[key]
            assert image["_type"] == "image-file" and image["caption"] == rev
            assert (files / image["path"]).is_file() and image["path"].startswith("media/images/")


def table_file(logged, key):
    import json
    ref = logged["run"].history[-1][key]
    assert ref["_type"] == "table-file" and ref["path"].startswith("media/table/")
    return ref, json.loads((logged["run_dir"] / "files" / ref["path"]).read_text())


def test_findings_summary(logged):
    summary = logged["run"].summary
    assert summary["findings/lag"] == 1.0 and summary["findings/bos_free_layers"] == [0, 1]
    assert summary["findings/induction_3_tokens"] == T1 and summary["findings/induction_3_revision"] == "step1000"
    assert summary["findings/bos_10_tokens"] == 0 and summary.get("findings/induction_5_tokens") is None
    assert summary["findings/bos_shape"] == "sharp" and summary["findings/bos_shape_share"] == 1.0
    assert summary["findings/induction_shape"] == "gradual" and summary["findings/induction_shape_share"] == 0.4
    assert summary["findings/final_circuit"] == "L1H0, L2H1, L3H1"
    assert summary["findings/screen_2of3_token_fraction"] == 1.0 and summary["findings/screen_1of3_token_fraction"] == 0
    assert summary["findings/pr_lead_L1H0"] == "undetermined" and summary["findings/pr_lead_L2H1"] == "lead"
    assert summary["findings/summary"] == "tiny: first sentence.\ntiny: second sentence."


def test_findings_table(logged):
    ref, table = table_file(logged, "findings")
    assert table["columns"] == ["finding", "value", "revision", "tokens"]
    rows = {r[0]: r[1:] for r in table["data"]}
    assert rows["induction_3"] == ["reached", "step1000", T1] and rows["induction_5"] == ["never", "", None]
    assert rows["bos_10"] == ["reached", "step0", 0] and rows["lag"] == ["1.0x", "", None]
    assert rows["bos_shape"] == ["sharp (1.00)", "step0 -> step1000", None]
    assert rows["induction_shape"] == ["gradual (0.40)", "step0 -> step1000", None]
    assert rows["bos_free_layers"][0] == "0, 1" and rows["final_circuit"][0] == "L1H0, L2H1, L3H1"
    assert rows["screen 2/3"] == ["100.00% of tokens", "step1000", T1] and rows["screen 1"][0] == "never"
    assert rows["pr_lead L2H1"] == ["lead", "step1000", None]
    assert [r[1] for r in table["data"] if r[0] == "summary"] == FINDINGS["summary"]
    assert ref["nrows"] == 6 + 1 + 2 + 2 + 3 + 2 + 2


def test_one_trajectory_table(logged):
    ref, table = table_file(logged, "trajectory")
    frame = logged["trajectory"]
    assert table["columns"] == list(frame.columns) and ref["nrows"] == 16
    tokens = [r[table["columns"].index("tokens")] for r in table["data"]]
    assert tokens == [None] * 8 + [T1] * 8  # <NA> (here: step0's 0 tokens) -> None
    assert [r[table["columns"].index("selectivity.kind")] for r in table["data"][:3]] == ["k0", "k1", "k2"]
    assert not [a for a in logged["run"].artifacts if a["type"] == "trajectory"]  # small: no artifact needed
    image = logged["run"].history[-1]["findings/bos_layers"]
    assert image["_type"] == "image-file" and image["caption"] == "step0, step1000"
    assert image["height"] > 0 and (logged["run_dir"] / "files" / image["path"]).is_file()


def test_large_trajectory_also_goes_to_an_artifact(tmp_path, monkeypatch):
    """A logged table keeps wandb.Table.MAX_ROWS rows (10,000): a longer trajectory is also logged whole as an
    artifact. MAX_ROWS is lowered to 20 so that 40 rows are 'long'."""
    import json
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 20)
    tr = T.Tracker(project="circuit-trajectories", group="t", job_type="probe", name="big", config={},
                   mode="offline", dir=str(tmp_path))
    frame = pd.concat([heads_frame(i).assign(revision=f"r{i}") for i in range(5)], ignore_index=True)  # 40 rows
    tr.log_findings({**FINDINGS, "summary": []}, frame)
    tr.finish()
    run = read_run(tr.run_dir)
    shown = json.loads((tr.run_dir / "files" / run.history[-1]["trajectory"]["path"]).read_text())
    assert len(shown["data"]) == 20  # truncated (its reference still says nrows 40)
    [art] = [a for a in run.artifacts if a["type"] == "trajectory"]
    assert art["name"] == "t-big-trajectory"
    full = json.loads(Path(art["files"]["trajectory.table.json"]).read_text())
    assert full["columns"] == list(frame.columns) and len(full["data"]) == 40 and full["data"][-1][-1] == "r4"


def test_artifacts_stage_parquet_with_provenance(logged):
    arts = [a for a in logged["run"].artifacts if a["type"] == T.ARTIFACT_TYPE]
    assert [a["name"] for a in arts] == ["t-tiny-step0", "t-tiny-step1000"]
    for art, (rev, *_ ) in zip(arts, REVISIONS):
        assert art["metadata"] == {"revision": rev, "layout": {"n_layers": 4}, "dims": [4, 2], "x": 0.5}
        staged = Path(art["files"]["heads.parquet"])
        assert staged.is_file() and str(staged).startswith(str(logged["root"] / "data"))  # under WANDB_DATA_DIR
        pd.testing.assert_frame_equal(pd.read_parquet(staged), logged["frames"][rev])


def test_artifact_name_sanitized():
    assert T.artifact_name("my exp", "pythia/70m", "step1000:v2") == "my_exp-pythia_70m-step1000_v2"
    assert T.artifact_name(None, "m", "r") == "m-r"
    assert len(T.artifact_name("x" * 300)) == 128


def test_mode_offline_without_key(no_credentials):
    assert T.wandb_mode("auto") == "offline"
    assert T.wandb_mode("online") == "offline"  # no key: never prompt
    assert T.wandb_mode("disabled") == "disabled"
    assert T.wandb_mode("offline") == "offline"
    with pytest.raises(ValueError):
        T.wandb_mode("sometimes")


def test_mode_online_with_env_key(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")  # fake; init is never called
    assert T.wandb_mode("auto") == "online"
    assert T.wandb_mode("offline") == "offline" and T.wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert T.wandb_mode("auto") == "offline"


def test_mode_online_with_netrc(no_credentials):
    (no_credentials / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password fakefakefake\n")
    assert T.wandb_mode("auto") == "online"


def test_null_tracker():
    tr = T.NullTracker(project="p", group="g", job_type="probe", config={"a": 1}, mode="auto", dir="/nonexistent")
    tr.log_revision(revision="r", step=1, tokens=2, scalars={"a": 1.0}, heads=heads_frame(0),
                    parquet_path=Path("/nonexistent"), provenance={})
    tr.log_findings(FINDINGS, heads_frame(0))
    tr.finish()
    tr.finish(exit_code=1)
    assert tr.run_dir is None and "not tracked" in tr.url_or_path


# ------------------------------------------------------------------ the .wandb format, without wandb writing it

def write_log(path: Path, payloads: list[bytes]) -> None:
    """A minimal writer of the format in harness.wandb_offline's docstring (records split across blocks)."""
    out = bytearray(HEADER)
    for data in payloads:
        first = True
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                continue
            n = min(len(data), left - 7)
            last = n == len(data)
            kind = (1 if last else 2) if first else (4 if last else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + data[:n]), n, kind) + data[:n]
            data, first = data[n:], False
            if last:
                break
    path.write_bytes(bytes(out))


def test_reader_spans_blocks_and_stops_at_corrupt_tail(tmp_path):
    from wandb.proto import wandb_internal_pb2 as pb

    payloads = []
    for i, size in enumerate([10, 40_000, 100_000, 5]):  # 40 kB and 100 kB records span 2 and 4 blocks
        rec = pb.Record()
        item = rec.history.item.add()
        item.nested_key.append(f"k{i}")
        item.value_json = '"' + "x" * size + '"'
        payloads.append(rec.SerializeToString())
    path = tmp_path / "run-x.wandb"
    write_log(path, payloads)
    assert list(iter_records(path)) == payloads
    assert [len(r[f"k{i}"]) for i, r in enumerate(read_run(path).history)] == [10, 40_000, 100_000, 5]
    path.write_bytes(path.read_bytes()[:-3])  # cut inside the last record: the others survive
    assert len(read_run(path).history) == 3
