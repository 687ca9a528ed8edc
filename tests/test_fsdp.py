"""FSDP on CPU. accelerate 1.16 selects FSDP only for accelerator devices (on CPU workers it wraps
the model in DDP and ignores the FSDP settings), so TRL's stages cannot be sharded on CPUs; torch's
FSDP2 itself runs over gloo, which lets the one FSDP-specific step of alignflow, saving a sharded
model whole, be checked here: every rank gathers, the main process writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_project
from safetensors.torch import load_file

from alignflow.demo.foreign import build_foreign_model, corpus_texts
from alignflow.pipeline.prefect_server import free_port

pytestmark = pytest.mark.slow


def test_a_model_sharded_by_fsdp2_is_saved_whole_by_the_main_process(tmp_path):
    project = make_project(tmp_path / "project")
    build_foreign_model("qwen2_chatml", tmp_path / "base", corpus_texts(project / "data"))
    worker = Path(__file__).with_name("fsdp_save_worker.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", str(worker), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    base = load_file(tmp_path / "base" / "model.safetensors")
    shards = [torch.load(tmp_path / f"shard-{rank}.pt") for rank in (0, 1)]
    assert set(saved) == set(base)
    for name, weight in saved.items():
        whole = torch.cat([shard[name] for shard in shards])  # FSDP2 shards every parameter on dim 0
        torch.testing.assert_close(weight, whole.reshape(weight.shape), rtol=0, atol=0, msg=name)
    assert any(not torch.equal(saved[n], base[n]) for n in saved), "the saved model is the trained one"
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
