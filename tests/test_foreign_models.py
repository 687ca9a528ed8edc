"""Models alignflow did not build, through every stage: Qwen2 with ChatML, GPT-2 without chat template
or pad token, Llama with a WordPiece tokenizer (alignflow.demo.foreign). And the one device policy:
every model every stage loads is where `execution` says, as its logged params show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import REPO, make_project, project_store, run_cli, run_in_this_process, stage_statuses

from alignflow.demo.foreign import KINDS, build_foreign_model, corpus_texts
from alignflow.models.generation import left_padded
from alignflow.models.loading import DEFAULT_CHAT_TEMPLATE, load_tokenizer, stop_token_ids
from alignflow.training.sft_data import PromptTemplate, prompt_text, tokenize_chat

SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text(encoding="utf-8"))["stages"]
# Every stage after pretrain, at the smallest size that still trains, samples and scores.
STAGES = {
    **{name: SMOKE[name] for name in ("build", "clean", "validate")},
    "self_instruct": {"target_count": 4, "max_rounds": 1, "batch_size": 4, "max_new_tokens": 8},
    "sft": {"method": "full", "max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
            "max_length": 96},
    "preferences": {"tasks": ["add", "reverse"], "num_samples": 2, "max_new_tokens": 4, "eval_prompts": 4,
                    "heldout_fraction": 0.25, "max_prompts": 12},
    "reward_model": {"max_steps": 1, "batch_size": 4, "logging_steps": 1, "eval_steps": 1},
    "dpo": {"max_steps": 1, "batch_size": 4, "logging_steps": 1, "eval_steps": 1, "win_rate_max_new_tokens": 4},
    "ppo": {"max_steps": 1, "batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 4, "save_steps": 1,
            "sample_every": 1},
    "grpo": {"max_steps": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 4, "logging_steps": 1},
    "rloo": {"max_steps": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 4, "logging_steps": 1},
    "evaluate": {**SMOKE["evaluate"], "add_bos": False, "limit": 2},
}
MODEL_STAGES = {"self_instruct", "sft", "preferences", "reward_model", "dpo", "ppo", "grpo", "rloo", "evaluate"}


@pytest.fixture(scope="session")
def foreign(tmp_path_factory) -> Path:
    """A project folder with the foreign models (alignflow.demo.foreign.KINDS) under models/ (tokenizers trained on its data)."""
    folder = make_project(tmp_path_factory.mktemp("foreign"))
    texts = corpus_texts(folder / "data")
    for kind in KINDS:
        build_foreign_model(kind, folder / "models" / kind, texts)
    return folder


def write_config(folder: Path, kind: str, **execution) -> str:
    stages = json.loads(json.dumps(STAGES))
    stages["build"]["demo_families"] = {"families": ["add", "reverse"], "per_family": 12}
    # A judge (the base model) scores responses: log-odds never tie the way a random model's oracle
    # scores (all zero) do, and the judge is one more model the device policy must place.
    stages["preferences"] |= {"annotator": "judge", "judge": {"model": f"models/{kind}"}}
    config = {"name": f"foreign-{kind.replace('_', '-')}", "seed": 0, "base_model": f"models/{kind}",
              "execution": execution, "stages": stages}
    path = folder / "configs" / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return f"configs/{kind}.yaml"


def stage_params(folder: Path, name: str) -> dict[str, dict[str, str]]:
    """stage -> params of the latest pipeline run's child runs."""
    client = project_store(folder)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {r.data.tags["alignflow.pipeline.stage"]: {**r.data.params, "cache_key": r.data.tags["alignflow.cache_key"]}
            for r in children}


# --- tokenizers as the stages need them -------------------------------------------------------------

def test_qwen_stops_at_im_end_and_at_endoftext(foreign):
    tokenizer = load_tokenizer(str(foreign / "models" / "qwen2_chatml"))
    im_end, eos = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tokenizer.eos_token == "<|endoftext|>"
    assert set(tokenizer.alignflow_setup.stop_token_ids) == {im_end, eos}
    assert tokenizer.alignflow_setup.chat_template == "own"


def test_gpt2_gets_the_default_template_and_eos_as_pad(foreign):
    tokenizer = load_tokenizer(str(foreign / "models" / "gpt2_plain"))
    setup = tokenizer.alignflow_setup
    assert (setup.chat_template, setup.pad_token) == ("default", "eos")
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE and tokenizer.pad_token_id == tokenizer.eos_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}],
                                         tokenize=False)
    assert text == "User: 1+1\nAssistant: 2<|endoftext|>\n"
    assert setup.stop_token_ids == [tokenizer.eos_token_id]


def test_lfm2_chat_rows_hold_one_bos_and_train_on_the_reply_through_im_end(foreign):
    """LFM2's tokenizer adds its BOS and its template writes it too: a chat row tokenised for SFT
    (and a prompt for sampling) holds it once."""
    tokenizer = load_tokenizer(str(foreign / "models" / "lfm2_hybrid"))
    bos, im_end = tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer("1+1")["input_ids"][0] == bos, "the tokenizer itself adds it"
    assert tokenizer.alignflow_setup.stop_token_ids == [im_end]
    messages = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]
    example = tokenize_chat(messages, tokenizer)
    assert example["input_ids"].count(bos) == 1 and example["input_ids"][0] == bos
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert tokenizer.decode(trained) == "2<|im_end|>"
    row = {"format": "chat", "messages": json.dumps(messages)}
    prompt = prompt_text(row, tokenizer, PromptTemplate())
    assert left_padded(tokenizer, [prompt], "cpu")["input_ids"][0].tolist().count(bos) == 1


def test_a_config_template_wins_inline_or_from_a_file(foreign, tmp_path):
    template = "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    path = tmp_path / "template.jinja"
    path.write_text(template, encoding="utf-8")
    for given in (template, str(path)):
        tokenizer = load_tokenizer(str(foreign / "models" / "qwen2_chatml"), given)
        assert tokenizer.chat_template == template and tokenizer.alignflow_setup.chat_template == "config"


def test_wordpiece_tokenizer_loses_token_type_ids_and_ends_at_sep(foreign):
    tokenizer = load_tokenizer(str(foreign / "models" / "llama_wordpiece"))
    assert set(tokenizer("你好 world")) == {"input_ids", "attention_mask"}
    assert tokenizer.eos_token == "[SEP]" and tokenizer.alignflow_setup.eos_token == "generation_config"
    assert stop_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("[SEP]")]


# --- every stage ------------------------------------------------------------------------------------

# GPT-2 runs with execution.dtype bfloat16 on the CPU, where `auto` means float32: if every model
# of every stage then has bfloat16 weights, no stage loads a model around the one policy.
EXECUTION = {"qwen2_chatml": ({}, "float32"), "gpt2_plain": ({"device": "cpu", "dtype": "bfloat16"}, "bfloat16"),
             "llama_wordpiece": ({}, "float32"), "lfm2_hybrid": ({}, "float32")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_stage_runs_on_a_foreign_model_through_the_device_policy(foreign, kind, capsys):
    """The whole pipeline with full SFT, then SFT again with LoRA (`--only sft`: its upstream comes
    from cache). Every model of every stage is on the CPU in the dtype `execution` asks for, as the
    `model.<role>.*` params read from the loaded weights show."""
    execution, dtype = EXECUTION[kind]
    config = write_config(foreign, kind, **execution)
    result = run_in_this_process(["run", config], foreign, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    statuses = stage_statuses(result.stdout)
    assert set(statuses) == {"pretrain", *STAGES}, statuses
    params = stage_params(foreign, f"foreign-{kind.replace('_', '-')}")
    for stage in MODEL_STAGES:
        placed = {k: v for k, v in params[stage].items() if k.startswith("model.")}
        assert placed, f"{stage} logged no model placement"
        assert {v for k, v in placed.items() if k.endswith(".device")} == {"cpu"}, (stage, placed)
        assert {v for k, v in placed.items() if k.endswith(".dtype")} == {dtype}, (stage, placed)
    stops = json.loads(params["sft"]["tokenizer.stop_token_ids"])
    generation = json.loads((foreign / "artifacts" / "sft" / params["sft"]["cache_key"] / "model" /
                             "generation_config.json").read_text())
    assert stops and generation["eos_token_id"] == stops, "the saved model stops where alignflow does"

    lora = yaml.safe_load((foreign / config).read_text())
    lora["stages"]["sft"] |= {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": "all-linear"}}
    (foreign / "configs" / f"{kind}-lora.yaml").write_text(yaml.safe_dump(lora, allow_unicode=True))
    result = run_in_this_process(["run", f"configs/{kind}-lora.yaml", "--only", "sft"], foreign, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert stage_statuses(result.stdout) == {"sft": "computed"}


# --- a base model that cannot be used -------------------------------------------------------------------

def bad_models(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (base_model value, the cause the error must name)."""
    good = folder / "models" / "gpt2_plain"
    (folder / "bad" / "empty").mkdir(parents=True, exist_ok=True)
    config_only = folder / "bad" / "config-only"
    config_only.mkdir(exist_ok=True)
    shutil.copy(good / "config.json", config_only / "config.json")
    corrupt = folder / "bad" / "corrupt"
    shutil.copytree(good, corrupt, dirs_exist_ok=True)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    not_causal = folder / "bad" / "distilbert"  # an encoder: no causal-LM class (BERT has one, as a decoder)
    if not not_causal.exists():
        from transformers import DistilBertConfig, DistilBertModel

        DistilBertModel(DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=50)
                        ).save_pretrained(not_causal)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(good / name, not_causal / name)
    return {"empty": ("bad/empty", "the folder is empty"),
            "config only": ("bad/config-only", "no weights"),
            "corrupt": ("bad/corrupt", "model.safetensors is not a readable safetensors file"),
            "not a causal LM": ("bad/distilbert", "'distilbert' model, which has no causal-LM head"),
            "missing": ("./bad/absent", "no such folder")}


@pytest.mark.parametrize("case", ["empty", "config only", "corrupt", "not a causal LM", "missing"])
def test_a_bad_base_model_is_one_line_and_exit_code_2(foreign, case, capsys):
    base, cause = bad_models(foreign)[case]
    (foreign / "configs" / "bad.yaml").write_text(f"name: bad\nbase_model: {base}\n", encoding="utf-8")
    for command in (["validate", "configs/bad.yaml"], ["run", "configs/bad.yaml"]):
        result = run_in_this_process(command, foreign, capsys)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr
        assert lines[0].startswith(f"error: model '{base}' cannot be loaded: ") and cause in lines[0], lines[0]


@pytest.mark.slow
def hub_cache_with(cache: Path, repo_id: str, commits: dict[str, tuple[str, Path]]) -> None:
    """A Hugging Face cache holding `repo_id` as downloads leave it: a snapshot folder per commit
    (`ref -> (commit, source folder)`: the source's files copied in) and a ref file naming each."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for ref, (commit, source) in commits.items():
        (root / "refs" / ref).write_text(commit)
        if not (root / "snapshots" / commit).exists():
            shutil.copytree(source, root / "snapshots" / commit)


def test_a_hub_model_is_pinned_to_the_commit_of_its_revision(foreign, monkeypatch, capsys):
    """base_model_revision picks the hub commit (from the cache here: no network); the pretrain stage
    records the commit and hands on the snapshot folder, which SFT trains from. A hub judge is taken
    at its own revision the same way."""
    from huggingface_hub import constants

    main, tagged = "a" * 40, "b" * 40
    hub_cache_with(foreign / "hf-cache", "alignflow-test/tiny", {
        "main": (main, foreign / "models" / "qwen2_chatml"), "v1": (tagged, foreign / "models" / "llama_wordpiece")})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what huggingface_hub and transformers read
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(foreign / "hf-cache"))
    stages = {name: STAGES[name] for name in ("build", "clean", "validate", "sft", "preferences")}
    stages["build"] = {**stages["build"], "demo_families": {"families": ["add", "reverse"], "per_family": 12}}
    stages["preferences"] = {**stages["preferences"], "annotator": "judge",
                             "judge": {"model": "alignflow-test/tiny", "revision": "main"}}
    config = {"name": "hub-pinned", "seed": 0, "base_model": "alignflow-test/tiny", "base_model_revision": "v1",
              "stages": stages}
    (foreign / "configs" / "pinned.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_in_this_process(["run", "configs/pinned.yaml"], foreign, capsys)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert stage_statuses(result.stdout)["sft"] == "computed"
    params = stage_params(foreign, "hub-pinned")
    assert params["pretrain"]["base_model.commit"] == tagged and params["pretrain"]["base_model.revision"] == "v1"
    record = json.loads(next((foreign / "artifacts" / "pretrain").glob(
        f"{params['pretrain']['cache_key']}*/base_model.json")).read_text())
    assert record == {"base_model": "alignflow-test/tiny", "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                      "revision": "v1", "commit": tagged}, "v1's files, not main's Qwen2"
    assert params["preferences"]["judge.commit"] == main, "the judge at its own revision"

    config["base_model_revision"] = "v9"
    (foreign / "configs" / "pinned.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    missing = run_in_this_process(["validate", "configs/pinned.yaml"], foreign, capsys)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
    assert missing.stderr.startswith("error: model 'alignflow-test/tiny@v9' cannot be loaded: ")


def test_a_hub_id_that_cannot_be_reached_is_one_line(foreign, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import: a new process
    (foreign / "configs" / "hub.yaml").write_text("name: hub\nbase_model: some-org/some-model\n", encoding="utf-8")
    result = run_cli(["validate", "configs/hub.yaml"], foreign, foreign / ".prefect")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: model 'some-org/some-model' cannot be loaded: ")
