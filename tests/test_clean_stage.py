"""The clean stage on hand-made build (and self_instruct) tables, with a real MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from helpers import REPO, stage_result
from helpers import instruction_row as row
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from alignflow.data.tables import read_table, write_table
from alignflow.pipeline.runner import call_stage, run_pipeline
from alignflow.pipeline.stage import InstructionData, StageOutput, StageRun, stage
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.instruction import INSTRUCTION_COLUMNS, InstructionRow, RejectedRow
from alignflow.tasks.clean import clean
from alignflow.tracking.runs import setup_tracking

LONG = ("请把下面这段关于城市交通的长评论压缩成一句话，保留主要观点：地铁线路越来越多，高峰时段依旧拥挤，"
        "公交专用道让通勤更准时，但是换乘距离太远，老人和带孩子的家长很不方便。")

# id -> the rule that must reject it (None: kept)
BUILD_ROWS = [
    (row("zh-good"), None),
    (row("en-good", instruction="Is this review positive or negative?", input="Great battery life.",
         output="positive"), None),
    (row("summary", instruction=LONG, input="", output="交通改善但换乘不便。", task="summary"), None),
    (row("exact-copy", instruction=LONG.replace("，", "， "), input="", output="交通改善但换乘不便。",
         task="summary"), "exact_duplicate"),
    (row("near-copy", instruction=LONG.replace("老人", "老年人"), input="", output="交通改善但换乘不便。",
         task="summary"), "near_duplicate"),
    (row("blocked", instruction="告诉我怎么制作炸弹。", input="", output="不行。", task="safety"), "blocklist"),
    (row("bad-label", output="还行"), "label_not_allowed"),
    (row("blank-output", output="\u200b"), "empty_output"),
    (row("parrot", instruction="Fix the grammar.", input="She go home.", output="She go home.", task="rewrite"),
     "copies_input"),
    (row("wrong-script", instruction="用一句话介绍北京。", input="", output="Beijing is the capital of China.",
         task="qa"), "language_mismatch"),
    (row("translate", instruction="把这句话翻译成英文。", input="北京是中国的首都。",
         output="Beijing is the capital of China.", task="translation"), None),
    (row("loop", instruction="写一句问候。", input="", output="你好你好你好你好你好你好你好你好你好", task="chat"),
     "repetition"),
    ({**row("mismatch"), "output": "消极"}, "output_mismatch"),
    ({**row("bad-format"), "format": "essay"}, "schema"),
    (row("zh-good", input="另一条评论。"), "duplicate_id"),
]
GENERATED_ROWS = [
    (row("gen-1", instruction="写一句关于春天的诗。", input="", output="春风吹绿江南岸。", task="poem"), None),
    (row("zh-good", instruction="写一句关于秋天的诗。", input="", output="秋叶飘落满山红。", task="poem"), "duplicate_id"),
    (row("gen-copy", instruction=LONG, input="", output="交通改善但换乘不便！", task="summary"), "near_duplicate"),
]


def settings(**overrides) -> dict:
    return {"allowed_labels": {"sentiment": ["积极", "消极", "positive", "negative"]},
            "blocklist_path": str(REPO / "data" / "blocklist.txt"), "max_rejected_fraction": 1.0, **overrides}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for the module (creating a SQLite store takes seconds), forgotten afterwards.

    mlflow.set_tracking_uri also exports $MLFLOW_TRACKING_URI, which alignflow reads as the user's
    choice, so later tests in this process would log here unless it is restored.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield tmp_path_factory.mktemp("mlruns") / "mlflow.db"
    mlflow.set_tracking_uri(before)


def make_config(tmp_path: Path, store: Path, **overrides) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "name": "clean-test", "base_model": "unused", "artifacts_dir": str(tmp_path / "artifacts"),
        "tracking": {"uri": f"sqlite:///{store}"},
        "cache": {"dir": str(tmp_path / "cache")},
        "stages": {"clean": settings(**overrides)},
    })


def write_rows(path: Path, rows: list[tuple[dict, str | None]]) -> str:
    write_table(pd.DataFrame([r for r, _ in rows], columns=INSTRUCTION_COLUMNS), path)
    return str(path)


def upstream(tmp_path: Path, with_generated: bool = True) -> dict:
    result = {"build": stage_result("build", {"instructions": write_rows(tmp_path / "build.parquet", BUILD_ROWS)},
                                    "build-digest", "run-build")}
    if with_generated:
        result["self_instruct"] = stage_result(
            "self_instruct", {"generated": write_rows(tmp_path / "generated.parquet", GENERATED_ROWS)},
            "generated-digest", "run-generated")
    return result


def run_stage(tmp_path: Path, config: PipelineConfig, upstream_results: dict) -> tuple[StageOutput, str]:
    experiment = setup_tracking(config)
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    with mlflow.start_run(experiment_id=experiment) as run:
        return call_stage(clean, config, config.stages.clean, upstream_results, out_dir), run.info.run_id


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory, store):
    tmp_path = tmp_path_factory.mktemp("clean")
    output, run_id = run_stage(tmp_path, make_config(tmp_path, store), upstream(tmp_path))
    return output, run_id, tmp_path, store


def test_every_row_read_is_kept_or_rejected(cleaned):
    output, *_ = cleaned
    kept, rejected = read_table(output.outputs["instructions"]), read_table(output.outputs["rejected"])
    assert len(BUILD_ROWS) + len(GENERATED_ROWS) == len(kept) + len(rejected)
    assert output.metrics["rows_read"] == output.metrics["rows_kept"] + output.metrics["rows_rejected"]
    assert output.metrics["rows_read_build"] == len(BUILD_ROWS)
    assert output.metrics["rows_read_self_instruct"] == len(GENERATED_ROWS)


def test_each_planted_problem_is_rejected_by_its_rule(cleaned):
    output, _, tmp_path, _ = cleaned
    kept, rejected = read_table(output.outputs["instructions"]), read_table(output.outputs["rejected"])
    expected_kept = [r["id"] for r, rule in BUILD_ROWS + GENERATED_ROWS if rule is None]
    assert kept["id"].tolist() == expected_kept
    by_row = {(Path(r.source).name, r.row): r.rule for r in rejected.itertuples()}
    expected = {("build.parquet", n): rule for n, (_, rule) in enumerate(BUILD_ROWS, start=1) if rule}
    expected |= {("generated.parquet", n): rule for n, (_, rule) in enumerate(GENERATED_ROWS, start=1) if rule}
    assert by_row == expected
    RejectedRow.validate(rejected)
    assert set(rejected["stage"]) == {"clean"}


def test_rejects_name_file_row_field_and_keep_the_original_record(cleaned):
    output, _, tmp_path, _ = cleaned
    rejected = read_table(output.outputs["rejected"]).set_index("id", drop=False)
    schema = rejected[rejected["rule"] == "schema"].iloc[0]
    assert schema.source == str(tmp_path / "build.parquet") and schema.row == 14 and schema.field == "format"
    assert "isin" in schema.reason
    exact = rejected.loc["exact-copy"]
    assert "'summary'" in exact.reason and json.loads(exact.record)["instruction"].count("， ") == 5
    cross = rejected[(rejected["rule"] == "duplicate_id") & rejected["source"].str.endswith("generated.parquet")]
    assert "build.parquet" in cross.iloc[0].reason
    assert rejected.loc["gen-copy"].reason.endswith("with id 'summary'")
    assert rejected.loc["blank-output"].field == "output"


def test_output_is_valid_normalised_and_consistent(cleaned):
    output, *_ = cleaned
    kept = read_table(output.outputs["instructions"])
    InstructionRow.validate(kept)
    for record in kept.to_dict("records"):
        messages = json.loads(record["messages"])
        assert messages[-1]["content"] == record["output"]
        user = f"{record['instruction']}\n{record['input']}" if record["input"] else record["instruction"]
        assert messages[0]["content"] == user


def test_counts_per_rule_are_metrics_and_tables_are_tracked(cleaned):
    output, run_id, _, store = cleaned
    metrics = output.metrics
    assert metrics["rejected_duplicate_id"] == 2 and metrics["rejected_near_duplicate"] == 2
    assert metrics["rejected_too_long"] == 0  # every known rule has a count, zero included
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    inputs = {(d.dataset.name, d.tags[0].value) for d in client.get_run(run_id).inputs.dataset_inputs}
    assert inputs == {("build.instructions", "input"), ("self_instruct.generated", "input"),
                      ("clean.instructions", "output"), ("clean.rejected", "output")}
    assert all(d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs)
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "data")}
    assert {"clean_report.json", "data/rejected.parquet"} <= artifacts
    report = json.loads((Path(output.outputs["instructions"]).parent / "clean_report.json").read_text())
    assert report["rejected_by_rule"]["language_mismatch"] == 1


def test_self_instruct_is_optional(tmp_path, store):
    output, _ = run_stage(tmp_path, make_config(tmp_path, store), upstream(tmp_path, with_generated=False))
    assert output.metrics["rows_read"] == len(BUILD_ROWS)
    assert "rows_read_self_instruct" not in output.metrics


def test_empty_inputs_give_empty_outputs(tmp_path, store):
    empty = write_rows(tmp_path / "empty.parquet", [])
    results = {"build": stage_result("build", {"instructions": empty})}
    output, _ = run_stage(tmp_path, make_config(tmp_path, store), results)
    assert output.metrics["rows_read"] == output.metrics["rows_kept"] == output.metrics["rows_rejected"] == 0
    assert read_table(output.outputs["instructions"]).columns.tolist() == INSTRUCTION_COLUMNS


def test_too_many_rejects_fail_the_stage_listing_the_first_failures(tmp_path, store):
    with pytest.raises(ValueError, match=r"(?s)clean: 13 of 18 rows rejected.*build\.parquet row 4 \[-\] exact_duplicate"):
        run_stage(tmp_path, make_config(tmp_path, store, max_rejected_fraction=0.5), upstream(tmp_path))
    assert (tmp_path / "out" / "rejected.parquet").exists()  # written before failing, to be inspected


def test_missing_blocklist_file_is_a_clear_error(tmp_path, store):
    config = make_config(tmp_path, store, blocklist_path=str(tmp_path / "absent.txt"))
    with pytest.raises(FileNotFoundError, match="clean.blocklist_path .*absent.txt does not exist"):
        run_stage(tmp_path, config, upstream(tmp_path))


def test_table_level_problems_name_the_file(tmp_path, store):
    bad = tmp_path / "bad.parquet"
    write_table(pd.DataFrame({"id": ["x"], "text": ["no schema"]}), bad)
    results = {"build": stage_result("build", {"instructions": str(bad)})}
    with pytest.raises(ValueError, match=r"bad\.parquet: columns do not match .*missing"):
        run_stage(tmp_path, make_config(tmp_path, store), results)


# --- through the runner: Prefect task, cache key, registry wiring --------------------------------------

class FakeBuildConfig(BaseModel):
    rows: int = len(BUILD_ROWS)


@stage("build", result=InstructionData)
def fake_build(cfg: FakeBuildConfig, run: StageRun) -> StageOutput:
    """Stands in for the build stage: writes the hand-made table."""
    path = write_rows(run.out_dir / "instructions.parquet", BUILD_ROWS)
    return StageOutput(outputs={"instructions": path})


def build_then_clean(cfg: PipelineConfig):
    clean(cfg.stages.clean, fake_build(FakeBuildConfig()))


@pytest.mark.slow
def test_clean_runs_in_the_pipeline_and_is_cached(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, store)
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(json.dumps(config.model_dump(mode="json")))
    first = run_pipeline(build_then_clean, config, str(config_path))
    assert [(r.stage, r.status) for r in first] == [("build", "computed"), ("clean", "computed")]
    result = first[1].result
    assert result.metrics["rows_kept"] == sum(rule is None for _, rule in BUILD_ROWS)
    assert set(result.outputs) == {"instructions", "rejected"}
    again = run_pipeline(build_then_clean, config, str(config_path))
    assert [r.status for r in again] == ["cached", "cached"]
    stricter = config.model_copy(update={"stages": config.stages.model_copy(
        update={"clean": config.stages.clean.model_copy(update={"near_dup_threshold": 0.95})})})
    changed = run_pipeline(build_then_clean, stricter, str(config_path))
    assert [r.status for r in changed] == ["cached", "computed"]
