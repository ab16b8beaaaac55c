"""W&B (offline) receives what the report compares: every run's final summary.json numbers in the
summary of a ``result`` run, with the row, level set, algorithm and seed as config. Read back from
the offline run files (no account, no network)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from cbpqsnn.pipeline import run
from tests.conftest import TINY, compose

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte file header, 32 KiB blocks,
HEADER = 7  # records of crc32 (4) + length (2) + type (1: full, 2: first, 3: middle, 4: last)


def read_records(path: Path) -> list[Any]:
    """The protobuf ``Record`` messages of an offline ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if pos + HEADER + length > len(data):  # a record the writer has not flushed yet
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def read_run(path: Path) -> dict[str, Any] | None:
    """{"job", "config", "summary"} of one offline run file; None until its ``exit`` record is on
    disk (W&B's writer process may still be flushing when ``run.finish()`` has returned: a CI run
    on a loaded machine read a result file that held only its header)."""
    job, config, summary, ended = None, {}, {}, False
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            job = record.run.job_type
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in record.summary.update})
        ended = ended or kind == "exit"
    return {"job": job, "config": config, "summary": summary} if ended else None


def offline_runs(run_dir: Path, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """job type -> {"config": {...}, "summary": {...}} of every offline W&B run below ``run_dir``,
    waiting up to ``timeout`` seconds for every run file to be complete."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [read_run(path) for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]
        if all(runs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    incomplete = sum(r is None for r in runs)
    assert not incomplete, f"{incomplete} W&B run file(s) still lack their exit record"
    return {r["job"]: {"config": r["config"], "summary": r["summary"]} for r in runs}


def test_the_result_run_holds_the_summary_numbers_and_the_comparison_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in TINY if o != "logger=csv"]
    summary = run(compose([*overrides, "logger=default", "quant=ternary", "seed=7",
                                "variant=try1"]), tmp_path)
    runs = offline_runs(tmp_path)
    assert set(runs) == {"pretrain", "cbp", "result"}
    result = runs["result"]
    for key in ("fp32_acc", "quant_acc", "acc_delta", "latent_acc", "memory_ratio",
                "bits_per_weight", "cfs_final", "levels_ok", "algorithm", "quant", "variant"):
        assert result["summary"][key] == pytest.approx(summary[key]), key
    config = result["config"]
    assert (config["row"], config["level_set"], config["algorithm"], config["seed"],
            config["variant"]) == (summary["row"], "ternary", "cbp", 7, "try1")
    assert config["environment"] == summary["environment"]  # threads, torch, CPU: to reproduce it
