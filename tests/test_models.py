"""The device policy and the model door's checks, without a pipeline."""

from __future__ import annotations

import pytest

from alignflow.errors import ModelLoadError
from alignflow.models.loading import local_model_problem, resolve_placement, trainer_precision


def test_auto_on_a_cpu_is_float32_and_an_explicit_dtype_is_kept():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    auto = resolve_placement()
    assert (auto.device, auto.dtype, auto.train_dtype) == ("cpu", "float32", "float32")
    bf16 = resolve_placement("cpu", "bfloat16")
    assert (bf16.dtype, bf16.train_dtype) == ("bfloat16", "bfloat16")
    args = trainer_precision(bf16, gradient_checkpointing=True)
    assert args["use_cpu"] and args["bf16"] and not args["fp16"] and args["activation_checkpointing"]
    assert not trainer_precision(auto)["bf16"]
    with pytest.raises(ModelLoadError, match="float16 needs a CUDA device"):
        resolve_placement("cpu", "float16")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        resolve_placement("cuda", "auto")


def test_auto_dtype_is_bfloat16_only_where_a_gpu_computes_in_it_natively():
    from alignflow.models.loading import auto_dtype

    assert auto_dtype(None) == "float32"  # the CPU
    assert auto_dtype((7, 5)) == auto_dtype((7, 0)) == "float32"  # T4, V100: bfloat16 only emulated
    assert auto_dtype((8, 0)) == auto_dtype((8, 6)) == auto_dtype((9, 0)) == "bfloat16"  # A100, A10/3090, H100
    assert auto_dtype((9, 4), rocm=True) == "bfloat16"


def test_float16_trains_float32_weights_with_mixed_precision():
    from alignflow.models.loading import Placement

    placement = Placement("cuda:0", "float16")
    assert placement.train_dtype == "float32"
    args = trainer_precision(placement)
    assert args["fp16"] and not args["bf16"] and not args["use_cpu"]


def test_local_paths_and_hub_ids(tmp_path):
    assert local_model_problem("Qwen/Qwen2-0.5B") is None  # a hub id: known only when loading
    assert local_model_problem(str(tmp_path / "absent")) == "no such folder"
    assert local_model_problem("models/a/b") == "no such folder"  # two slashes: not a hub id
    (tmp_path / "file.bin").write_bytes(b"x")
    assert local_model_problem(str(tmp_path / "file.bin")) == "it is a file, not a model folder"


def test_editing_a_chat_template_file_changes_the_keys_of_model_stages(tmp_path):
    from helpers import stage_result

    from alignflow.pipeline.config import parse_config
    from alignflow.pipeline.runner import stage_key
    from alignflow.tasks.sft import train_sft

    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    config = parse_config({"name": "t", "base_model": "m", "chat_template": str(template), "stages": {"sft": {}}})
    upstream = {"pretrain": stage_result("pretrain", {}, "p"), "validate": stage_result("validate", {}, "v")}
    before = stage_key(train_sft, config.stages.sft, config, upstream)
    template.write_text("{{ messages[-1]['content'] }}", encoding="utf-8")
    assert stage_key(train_sft, config.stages.sft, config, upstream) != before
    launched = parse_config({"name": "t", "base_model": "m", "chat_template": str(template), "stages": {"sft": {}},
                             "execution": {"launcher": "accelerate", "num_processes": 2}})
    assert (stage_key(train_sft, launched.stages.sft, launched, upstream)
            != stage_key(train_sft, config.stages.sft, config, upstream))


def test_a_tokenizer_may_come_from_a_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert local_model_problem(str(tmp_path), weights=False) is None
    assert "no weights" in local_model_problem(str(tmp_path))
