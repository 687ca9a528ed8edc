"""Self-Instruct: the filters, the round loop, and the stage on a tiny trained model."""

from __future__ import annotations

import json
import random

import mlflow
import pandas as pd
import pytest
import torch
from helpers import stage_result
from pydantic import ValidationError

from alignflow.data.self_instruct import (
    RULES,
    InstructionPool,
    Line,
    check_blocklist,
    check_duplicate,
    check_length,
    check_parseable,
    check_similarity,
    instruction_prompt,
    normalize_instruction,
    pool_from_table,
    sample_in_context,
    screen_instruction,
)
from alignflow.data.tables import read_table, write_table
from alignflow.demo.corpus import generate_streams
from alignflow.demo.model import build_llama
from alignflow.demo.pretraining import LoopSettings, pack_blocks, train_causal_lm
from alignflow.demo.tokenizer import train_tokenizer
from alignflow.pipeline.runner import StageCall, run_stage_task
from alignflow.pipeline.stage import ModelRef
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.instruction import InstructionRow, RejectedRow
from alignflow.schemas.stages.self_instruct import SelfInstructConfig
from alignflow.tasks.self_instruct import Candidate, Writers, bootstrap, self_instruct, validated_rows
from alignflow.tracking import runs as tracking

HUMAN = ["写一首关于秋天的诗", "把句子翻译成英文", "总结这段文字的要点", "判断数字是不是质数", "给文章起一个标题",
         "列出三个同义词", "纠正句子里的错别字", "把句子改写成问句", "把单词的字母倒过来写"]


def build_table(instructions: list[str], source: str = "seed:human") -> pd.DataFrame:
    rows = [{"id": f"{source}-{i}", "task": "seed", "format": "basic", "instruction": text, "input": "",
             "output": "好的", "messages": json.dumps([{"role": "user", "content": text},
                                                       {"role": "assistant", "content": "好的"}], ensure_ascii=False),
             "source": source} for i, text in enumerate(instructions)]
    return pd.DataFrame(rows).astype("str")


# filters

def test_parseable_needs_a_finished_nonempty_line():
    assert check_parseable(Line("给句子分类", True), "instruction", 16) is None
    unfinished = check_parseable(Line("列出五种水果的", False), "instruction", 16)
    assert unfinished.rule == "unparseable" and "max_new_tokens=16" in unfinished.reason
    assert check_parseable(Line("  ", True), "output", 16).rule == "unparseable"
    assert check_parseable(Line("", True), "input", 16, allow_empty=True) is None
    assert check_parseable(Line("", False), "input", 16, allow_empty=True).rule == "unparseable"
    broken = check_parseable(Line("情导\ufffd\ufffd成大写字母", True), "instruction", 16)
    assert broken.rule == "unparseable" and "broken byte sequence" in broken.reason


def test_length_bounds_are_inclusive():
    assert check_length("一二三", 3, 5) is None and check_length(" 一二三四五 ", 3, 5) is None
    assert check_length("一二", 3, 5).rule == "too_short"
    assert check_length("一二三四五六", 3, 5).rule == "too_long"


def test_blocklist_matches_latin_whole_words_and_cjk_substrings():
    blocklist = ["image", "go to", "图片"]
    assert check_blocklist("Describe the IMAGE below", blocklist).rule == "blocklisted"
    assert check_blocklist("go to the store and buy milk", blocklist) is not None
    assert check_blocklist("描述这张图片", blocklist).reason == "instruction contains the blocklisted word '图片'"
    assert check_blocklist("Name an imaginative story", blocklist) is None  # 'image' is not a word here
    assert check_blocklist("ego tour planning", blocklist) is None


def test_duplicates_compare_normalised_instructions():
    pool = InstructionPool.from_instructions(["Write the word backwards."])
    assert normalize_instruction("  Write  the WORD backwards ") == "write the word backwards"
    verdict = check_duplicate("write the word backwards", pool)
    assert verdict.rule == "duplicate" and verdict.most_similar == "Write the word backwards."
    assert check_duplicate("写一首诗。", InstructionPool.from_instructions(["写一首诗"])).rule == "duplicate"
    assert check_duplicate("Write the sentence backwards", pool) is None


def test_similarity_threshold_rejects_at_and_above_it():
    pool = InstructionPool.from_instructions(["一二三四五六七八九十", "甲乙丙丁"])
    verdict = check_similarity("一二三四五六七甲乙丙", pool, 0.7)  # ROUGE-L exactly 0.7
    assert verdict.rule == "near_duplicate" and verdict.rouge_l == 0.7
    assert verdict.most_similar == "一二三四五六七八九十"
    assert check_similarity("一二三四五六戊己庚辛", pool, 0.7) is None  # 0.6
    assert pool.closest("一二三四五六戊己庚辛") == (pytest.approx(0.6), "一二三四五六七八九十")


def test_screen_applies_rules_in_order():
    pool = InstructionPool.from_instructions(HUMAN)
    settings = dict(min_chars=3, max_chars=20, blocklist=["图片"], rouge_threshold=0.7, max_new_tokens=8)
    assert screen_instruction(Line("图", False), pool, **settings).rule == "unparseable"
    assert screen_instruction(Line("图片", True), pool, **settings).rule == "too_short"
    assert screen_instruction(Line("把句子翻译成英文的图片", True), pool, **settings).rule == "blocklisted"
    assert screen_instruction(Line("把句子翻译成英文", True), pool, **settings).rule == "duplicate"
    assert screen_instruction(Line("把句子翻译成中文", True), pool, **settings).rule == "near_duplicate"
    assert screen_instruction(Line(" 给句子分类 ", True), pool, **settings) is None


def test_in_context_sampling_uses_generated_slots_once_they_exist():
    pool = InstructionPool.from_instructions(HUMAN)
    rng = random.Random(0)
    first = sample_in_context(pool, 6, 2, rng)
    assert len(first) == 8 and set(first) <= set(HUMAN)  # no generated yet: humans fill every slot
    for text in ["甲", "乙", "丙"]:
        pool.add_generated(text)
    for _ in range(20):
        examples = sample_in_context(pool, 6, 2, rng)
        assert len(set(examples)) == 8 and sum(text in "甲乙丙" for text in examples) == 2
    few = InstructionPool.from_instructions(HUMAN[:3])
    assert sorted(sample_in_context(few, 6, 2, rng)) == sorted(HUMAN[:3])


def test_instruction_prompt_lists_examples_and_ends_with_the_cue():
    prompt = instruction_prompt(["甲", "乙"], "任务：{instruction}\n\n", "任务：")
    assert prompt == "任务：甲\n\n任务：乙\n\n任务："
    assert instruction_prompt(["a"], "Task: {instruction}\n\n", "Task:", "Tasks:\n") == "Tasks:\nTask: a\n\nTask:"


def test_pool_from_table_picks_human_rows_by_source_prefix():
    table = pd.concat([build_table(HUMAN[:2]), build_table(["判断评论的情感", "判断评论的情感"], "dataset:sst")])
    pool = pool_from_table(table.reset_index(drop=True), ["seed:"], "build.parquet")
    assert pool.human == HUMAN[:2]
    assert pool.references == [*HUMAN[:2], "判断评论的情感"]  # converted rows are compared, once
    assert pool_from_table(table, None, "build.parquet").human == [*HUMAN[:2], "判断评论的情感"]
    with pytest.raises(ValueError, match="no human-written instructions"):
        pool_from_table(table, ["human:"], "build.parquet")
    with pytest.raises(ValueError, match="do not satisfy InstructionRow"):
        pool_from_table(table.assign(format="essay"), None, "build.parquet")


def test_config_checks_templates_and_bounds():
    SelfInstructConfig(input_template="Task: {instruction}\n\nInput:")
    with pytest.raises(ValidationError, match="output_template must contain the placeholders"):
        SelfInstructConfig(output_template="任务：{instruction}\n输出：")
    with pytest.raises(ValidationError, match="not a valid template"):
        SelfInstructConfig(input_template="{instruction} {oops}")
    with pytest.raises(ValidationError, match="min_instruction_chars exceeds"):
        SelfInstructConfig(min_instruction_chars=10, max_instruction_chars=5)
    with pytest.raises(ValidationError, match="extra"):
        SelfInstructConfig(rouge=0.5)


# the round loop, with scripted writers (plain functions standing in for a model)

SCRIPT = [
    Line("把单词的字母倒着写", True),  # near_duplicate of a human instruction (ROUGE-L 16/19)
    Line("描述这张图片", True),  # blocklisted
    Line("写", True),  # too_short
    Line("列出五种水果的名", False),  # unparseable: not ended
    Line("给句子分类", True),  # kept
    Line("给句子分类。", True),  # duplicate of the one just accepted
    Line("说出空气的成分", True),  # its input does not end
    Line("保持沉默", True),  # its output is empty
]
ROUND_ONE_RULES = ["near_duplicate", "blocklisted", "too_short", "unparseable", "", "duplicate", "unparseable",
                   "unparseable"]


def scripted_writers(seen: list[list[str]]) -> Writers:
    def instructions(prompts, seed):
        seen.append(prompts)
        return SCRIPT[: len(prompts)]

    def inputs(prompts, seed):
        return [Line("一半", False) if "空气" in p else Line("苹果", True) for p in prompts]

    def outputs(prompts, seed):
        assert all(p.endswith("输入：苹果\n输出：") for p in prompts)
        return [Line("", True) if "沉默" in p else Line("一种水果", True) for p in prompts]

    return Writers(instructions, inputs, outputs)


def test_bootstrap_records_every_candidate_with_its_rule():
    settings = SelfInstructConfig(target_count=5, max_rounds=2, batch_size=len(SCRIPT), blocklist=["图片"])
    pool = InstructionPool.from_instructions(HUMAN)
    prompts: list[list[str]] = []
    candidates, rounds = bootstrap(pool, settings, 0, scripted_writers(prompts))
    assert rounds == 2 and len(candidates) == 2 * len(SCRIPT)
    first = candidates[: len(SCRIPT)]
    assert [c.verdict.rule if c.verdict else "" for c in first] == ROUND_ONE_RULES
    assert [c.verdict.field for c in first if c.verdict and c.verdict.rule == "unparseable"] == [
        "instruction", "input", "output"]
    kept = [c for c in candidates if c.verdict is None]
    assert [(c.id, c.instruction, c.input, c.output) for c in kept] == [
        ("self_instruct-001-004", "给句子分类", "苹果", "一种水果")]
    # instructions that passed the instruction filters joined the pool, so round 2 repeats are duplicates
    assert pool.generated == ["给句子分类", "说出空气的成分", "保持沉默"]
    assert {c.verdict.rule for c in candidates[len(SCRIPT):][4:]} == {"duplicate"}
    # round 1 prompts: human instructions only; round 2: exactly two generated ones in each
    assert all(p.count("任务：") == 9 and p.endswith("\n\n任务：") for p in prompts[0])
    assert all(sum(f"任务：{g}\n\n" in p for g in pool.generated) == 2 for p in prompts[1])


def test_bootstrap_stops_when_the_target_is_reached():
    settings = SelfInstructConfig(target_count=1, max_rounds=5, batch_size=len(SCRIPT), blocklist=["图片"])
    candidates, rounds = bootstrap(InstructionPool.from_instructions(HUMAN), settings, 0, scripted_writers([]))
    assert rounds == 1 and len(candidates) == len(SCRIPT)


def test_a_kept_row_that_breaks_the_schema_becomes_a_schema_reject():
    good = Candidate("self_instruct-001-000", 1, "给句子分类", "今天很好", "积极")
    blank = Candidate("self_instruct-001-001", 1, "说点什么", "", " ")  # whitespace output: invalid messages
    rows = validated_rows([good, blank])
    assert list(rows["id"]) == [good.id] and good.verdict is None
    assert blank.verdict.rule == "schema" and blank.verdict.field == "messages"
    assert json.loads(rows.loc[0, "messages"])[0]["content"] == "给句子分类\n今天很好"


# the stage on a tiny model trained for a few seconds

def train_tiny_model(folder, *, steps: int, seed: int):
    rows = list(generate_streams(n_streams=400, max_items=3, description_prob=1.0, languages=["zh"],
                                 families=None, heldout_percent=20, seed=0))
    tokenizer = train_tokenizer((row["text"] for row in rows), 400)
    blocks = pack_blocks([tokenizer(row["text"])["input_ids"] for row in rows], tokenizer.bos_token_id, 64)
    model = build_llama(tokenizer, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=256, dropout=0.0, seed=seed)
    settings = LoopSettings(max_steps=steps, batch_size=16, learning_rate=1e-2, warmup_steps=10, min_lr_ratio=0.1,
                            weight_decay=0.0, max_grad_norm=1.0, logging_steps=steps, seed=seed)
    train_causal_lm(model, blocks, settings, lambda step, metrics: None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A generator (200 steps) and a different, weaker teacher (60 steps, other seed): ~5 s on an idle core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over shared cores
    root = tmp_path_factory.mktemp("self-instruct-models")
    yield {"generator": train_tiny_model(root / "generator", steps=200, seed=0),
           "teacher": train_tiny_model(root / "teacher", steps=60, seed=1)}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_stage(models, tmp_path_factory):
    """Run the stage's task body (real MLflow store, no Prefect cache) with a faked pretrain/build upstream."""
    root = tmp_path_factory.mktemp("self-instruct-stage")
    table = pd.concat([build_table(HUMAN), build_table(["判断评论的情感"], "dataset:sst")])
    build_path = write_table(table, root / "build.parquet")
    upstream = {"pretrain": stage_result("pretrain", {"model": str(models["generator"])}, "p", "r1", ModelRef),
                "build": stage_result("build", {"instructions": str(build_path)}, "b", "r2")}
    counter = iter(range(100))
    store = f"sqlite:///{root / 'mlflow.db'}"

    def run(**options):
        section = {"target_count": 50, "max_rounds": 2, "batch_size": 8, "max_new_tokens": 24,
                   "human_sources": ["seed:"], "num_human": 3, "num_generated": 1, **options}
        config = PipelineConfig.model_validate({
            "name": "si-test", "base_model": str(models["generator"]),
            "tracking": {"uri": store}, "artifacts_dir": str(root / f"out-{next(counter)}"),
            "stages": {"self_instruct": section}})
        experiment = tracking.setup_tracking(config)
        parent = tracking.start_parent_run(experiment, config, "inline")
        result = run_stage_task(self_instruct, config.stages.self_instruct, upstream,
                                StageCall(config, "run", experiment, parent))
        tables = {name: read_table(path) for name, path in result.outputs.items()}
        return result, tables

    with pytest.MonkeyPatch.context() as patch:
        # MLflow exports the store it is pointed at as $MLFLOW_TRACKING_URI (for subprocesses);
        # setting it here means it is put back afterwards, so later tests use their own store.
        patch.setenv("MLFLOW_TRACKING_URI", store)
        yield run


@pytest.fixture(scope="module")
def plain(run_stage):
    return run_stage()


def test_stage_accounts_for_every_candidate(plain):
    result, tables = plain
    candidates, generated, rejected = tables["candidates"], tables["generated"], tables["rejected"]
    metrics = result.metrics
    assert metrics["rounds"] == 2 and metrics["candidates"] == len(candidates) == 16
    assert len(candidates) == len(generated) + len(rejected) == metrics["kept"] + metrics["rejected"]
    assert metrics["rejected"] == sum(metrics[f"rejected_{rule}"] for rule in RULES)
    assert list(generated["id"]) == list(candidates.loc[candidates["kept"], "id"])
    assert list(rejected["id"]) == list(candidates.loc[~candidates["kept"], "id"])
    assert set(candidates.loc[~candidates["kept"], "rule"]) <= set(RULES)
    assert (candidates.loc[candidates["kept"], "rule"] == "").all()
    # rejected rows point at their line in the candidates table
    assert all(candidates.loc[r.row - 1, "id"] == r.id for r in rejected.itertuples())
    RejectedRow.validate(rejected)
    InstructionRow.validate(generated)
    assert (generated["source"] == "self_instruct").all() and (generated["format"] == "basic").all()
    first = generated.iloc[0]
    assert json.loads(first["messages"])[-1] == {"role": "assistant", "content": first["output"]}
    assert metrics["kept"] >= 1  # the trained model writes some usable examples


def test_stage_logs_tables_with_digests_and_counts(plain):
    result, _ = plain
    run = mlflow.get_run(result.mlflow_run_id)
    datasets = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert {"build-instructions", "self-instruct-generated", "self-instruct-candidates",
            "self-instruct-rejected"} <= set(datasets) and all(datasets.values())
    assert run.data.metrics["candidates"] == 16 and "rejected_near_duplicate" in run.data.metrics
    assert run.data.params["rouge_threshold"] == "0.7"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "kept_total")
    assert [m.step for m in history] == [1, 2]


def test_same_seed_reproduces_the_stage(plain, run_stage):
    result, tables = plain
    again, again_tables = run_stage()
    pd.testing.assert_frame_equal(tables["candidates"], again_tables["candidates"])
    assert again.digest == result.digest


def test_teacher_writes_the_outputs(plain, run_stage, models):
    _, tables = plain
    _, taught = run_stage(teacher=str(models["teacher"]))
    own = tables["candidates"].query("round == 1")
    other = taught["candidates"].query("round == 1")
    # same generator and seed: round 1's instructions and inputs are identical; outputs come from the teacher
    assert list(own["instruction"]) == list(other["instruction"]) and list(own["input"]) == list(other["input"])
    assert list(own["output"]) != list(other["output"])
