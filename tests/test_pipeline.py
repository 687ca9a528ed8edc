"""End to end on configs/smoke.yaml with real Prefect (caching) and a real MLflow store."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import make_project, run_cli, stage_result
from mlflow.tracking import MlflowClient
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignflow.cli import main
from alignflow.flows.pipeline import data_flow, evaluation_flow, training_flow
from alignflow.pipeline.config import load_config
from alignflow.pipeline.runner import PipelineError, _task_key, plan_pipeline, run_pipeline, stage_key
from alignflow.pipeline.stage import ModelRef, StageOutput, StageRun, stage
from alignflow.tasks.pretrain import pretrain
from alignflow.tracking.logged_models import models_of_run
from alignflow.tracking.runs import (
    TAG_CACHE_KEY,
    TAG_CACHED_FROM,
    TAG_STAGE,
    TAG_UPSTREAM,
    default_tracking_uri,
)

pytestmark = pytest.mark.slow
SMOKE = "configs/smoke.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One cold run of the smoke pipeline in a fresh project folder (the current directory)."""
    folder = make_project(tmp_path_factory.mktemp("smoke-project"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["run", SMOKE]) == 0
        yield folder


def client() -> MlflowClient:
    return MlflowClient(tracking_uri=default_tracking_uri())


def stage_runs(stage: str = "pretrain"):
    experiment = client().get_experiment_by_name("smoke")
    return client().search_runs([experiment.experiment_id], f"tags.`{TAG_STAGE}` = '{stage}'",
                                order_by=["attributes.start_time ASC"])


def model_dir(folder: Path) -> Path:
    return next((folder / "artifacts" / "pretrain").glob("pretrain-*")) / "model"


def test_prefect_records_the_stage_graph_as_task_run_edges(smoke):
    """The flow passes upstream futures into each stage task run, so Prefect (and its UI) holds the
    real dependency edges: sft reads pretrain and validate, evaluate reads pretrain and sft."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(limit=200, sort="EXPECTED_START_TIME_DESC")
    stage_of = {run.id: run.name.rsplit("-", 1)[0] for run in task_runs}
    by_flow: dict = {}
    for run in task_runs:
        by_flow.setdefault(run.flow_run_id, {})[stage_of[run.id]] = {
            stage_of.get(ref.id) for ref in run.task_inputs.get("inputs", [])}
    smoke_runs = [edges for edges in by_flow.values()
                  if set(edges) == {"pretrain", "build", "clean", "validate", "sft", "evaluate"}]
    assert smoke_runs, "the smoke pipeline's task runs are in Prefect"
    for edges in smoke_runs:
        assert edges["sft"] == {"pretrain", "validate"} and edges["evaluate"] == {"pretrain", "sft"}
        assert edges["validate"] == {"build", "clean"} and edges["pretrain"] == set()


def test_pretrain_builds_a_loadable_model(smoke):
    tokenizer = AutoTokenizer.from_pretrained(model_dir(smoke))
    model = AutoModelForCausalLM.from_pretrained(model_dir(smoke))
    prompt = tokenizer("输入：apple\n输出：", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4
    assert model.num_parameters() > 10_000


def test_pretrain_run_is_tracked_with_params_metrics_and_artifacts(smoke):
    run = stage_runs()[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["training.max_steps"] == "12"
    assert run.data.params["corpus.languages"] == '["zh", "en"]'
    assert run.data.tags[TAG_CACHE_KEY].startswith("pretrain-")
    assert "mlflow.parentRunId" in run.data.tags
    history = client().get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [4, 8, 12]
    vocab = int(run.data.params["vocab_size"])
    assert run.data.metrics["final_train_loss"] < math.log(vocab)
    artifacts = {a.path for a in client().list_artifacts(run.info.run_id)}
    assert {"loss_curve.png", "data"} <= artifacts
    (model,) = models_of_run(run.info.run_id, run.info.experiment_id, client())
    model_files = {Path(a.path).name for a in client().list_artifacts(run.info.run_id)}
    assert "model" not in model_files and model.model_type == "pretrain"
    stored = {Path(p).name for p in Path(model.artifact_location.removeprefix("file://")).rglob("*")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "MLmodel"} <= stored
    dataset_inputs = client().get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_inputs[0].dataset.name == "demo-corpus" and dataset_inputs[0].dataset.digest
    parent = client().get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["alignflow.pipeline"] == "smoke"
    assert {a.path for a in client().list_artifacts(parent.info.run_id)} == {
        "config.yaml", "lineage.json", "lineage.svg", "report.html"}


def test_second_run_in_a_new_process_is_served_from_cache(smoke, tmp_path):
    weights = model_dir(smoke) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    completed = run_cli(["run", SMOKE], smoke, tmp_path / "prefect")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "pretrain: from cache" in completed.stdout
    assert weights.stat().st_mtime_ns == before
    first, hit = stage_runs()[:2]
    assert hit.data.tags[TAG_CACHED_FROM] == first.info.run_id
    assert hit.data.tags["mlflow.parentRunId"] != first.data.tags["mlflow.parentRunId"]
    assert hit.data.metrics["final_train_loss"] == first.data.metrics["final_train_loss"]


def test_a_run_with_set_logs_the_overrides_and_the_config_they_gave(smoke, capsys):
    assert main(["run", SMOKE, "--set", "seed=0", "--set", "stages.evaluate.limit=3"]) == 0
    out = capsys.readouterr().out
    assert "evaluate        computed" in out and "sft             cached" in out, "only evaluate's section changed"
    evaluate = stage_runs("evaluate")[-1]
    assert evaluate.data.params["limit"] == "3"
    parent = client().get_run(evaluate.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["alignflow.overrides"] == "seed=0 stages.evaluate.limit=3"
    effective = yaml.safe_load(Path(client().download_artifacts(parent.info.run_id, "config_effective.yaml")).read_text(
        encoding="utf-8"))
    assert effective["stages"]["evaluate"]["limit"] == 3 and effective["seed"] == 0


def test_deleted_or_corrupt_artifacts_are_recomputed(smoke, capsys):
    weights = model_dir(smoke) / "model.safetensors"
    weights.unlink()
    assert main(["run", SMOKE]) == 0
    out = capsys.readouterr().out
    assert "cache invalid" in out and "model.safetensors is missing" in out
    assert "pretrain        computed" in out
    assert weights.exists()
    with weights.open("r+b") as handle:  # flip bytes in place: same size, other content
        handle.seek(100)
        handle.write(b"\xff\xfe\xfd")
    assert main(["run", SMOKE]) == 0
    assert "changed content" in capsys.readouterr().out
    AutoModelForCausalLM.from_pretrained(model_dir(smoke))


def test_unreadable_cache_record_is_a_miss(smoke, capsys):
    record = next((smoke / ".alignflow" / "cache").glob("pretrain-*"))
    record.write_text("{broken")
    assert main(["run", SMOKE]) == 0
    out = capsys.readouterr().out
    assert "pretrain        computed" in out


def test_refresh_recomputes_and_changed_config_gets_a_new_key(smoke, capsys):
    runs_before = len(stage_runs())
    assert main(["run", SMOKE, "--refresh", "pretrain"]) == 0
    assert "(forced)" in capsys.readouterr().out
    assert len(stage_runs()) == runs_before + 1 and stage_runs()[-1].data.tags.get(TAG_CACHED_FROM) is None

    data = yaml.safe_load((smoke / SMOKE).read_text())
    data["stages"]["pretrain"]["training"]["max_steps"] = 8
    (smoke / "configs" / "changed.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", "configs/changed.yaml"]) == 0
    out = capsys.readouterr().out
    assert "pretrain        computed" in out and "build           cached" in out
    assert len(list((smoke / "artifacts" / "pretrain").glob("pretrain-*"))) == 2
    assert main(["run", SMOKE]) == 0
    assert "pretrain        cached" in capsys.readouterr().out


class EchoConfig(BaseModel):
    n: int = 1


@stage("echo")
def echo(cfg: EchoConfig, pretrain: ModelRef, run: StageRun) -> StageOutput:
    """A downstream stage that reads its upstream's model folder."""
    model_path = Path(pretrain.model)
    (run.out_dir / "seen.json").write_text(json.dumps(sorted(p.name for p in model_path.iterdir())))
    return StageOutput(outputs={"seen": str(run.out_dir / "seen.json")}, metrics={"files": 1.0})


def graph_with_echo(cfg):
    """The shipped pipeline plus a stage the test adds, written as a flow would write it."""
    base = pretrain(cfg.base_source)
    evaluation_flow(cfg, base, training_flow(cfg, base, data_flow(cfg, base)))
    echo(EchoConfig(), base)


def test_only_and_from_follow_the_graph(smoke, tmp_path):
    config = load_config(SMOKE)
    reports = {r.stage: r for r in run_pipeline(graph_with_echo, config, SMOKE)}
    assert {name: r.status for name, r in reports.items()} == {
        "pretrain": "cached", "build": "cached", "clean": "cached", "validate": "cached", "sft": "cached",
        "evaluate": "cached", "echo": "computed"}
    echo_run = client().get_run(reports["echo"].result.mlflow_run_id)
    assert echo_run.data.tags[TAG_UPSTREAM] == f"pretrain:{reports['pretrain'].result.mlflow_run_id}"

    only = run_pipeline(graph_with_echo, config, SMOKE, only="echo", refresh=("echo",))
    assert [(r.stage, r.status) for r in only] == [("echo", "computed")]
    from_pretrain = run_pipeline(graph_with_echo, config, SMOKE, from_stage="pretrain")
    assert {r.stage: r.status for r in from_pretrain} == {
        "pretrain": "computed", "build": "cached", "clean": "cached", "validate": "cached", "sft": "computed",
        "evaluate": "computed", "echo": "computed"}
    sft_report = next(r for r in from_pretrain if r.stage == "sft")
    assert sft_report.result.metrics["resumed_from_step"] == 0.0, "a forced rerun does not resume a finished run"

    empty_cache = config.model_copy(update={"cache": config.cache.model_copy(update={"dir": str(tmp_path)})})
    with pytest.raises(PipelineError, match="pretrain is needed from cache"):
        run_pipeline(graph_with_echo, empty_cache, SMOKE, only="echo")
    with pytest.raises(PipelineError, match="unknown stage"):
        run_pipeline(graph_with_echo, config, SMOKE, only="no_such_stage")


def test_plan_follows_the_graph_the_flow_writes():
    config = load_config(SMOKE)
    plan = plan_pipeline(graph_with_echo, config, only="echo")
    assert {name: planned.mode for name, planned in plan.items()} == {"pretrain": "cached", "echo": "run"}
    plan = plan_pipeline(graph_with_echo, config, from_stage="clean")
    assert {name: planned.mode for name, planned in plan.items()} == {
        "pretrain": "run", "build": "run", "clean": "refresh", "validate": "refresh", "sft": "refresh",
        "evaluate": "refresh", "echo": "run"}
    assert plan["validate"].inputs == ("build", "clean")  # self_instruct is not configured in smoke


def test_a_graph_that_calls_a_stage_twice_is_an_error():
    def twice(cfg):
        base = pretrain(cfg.base_source)
        echo(EchoConfig(), base)
        echo(EchoConfig(n=2), base)

    with pytest.raises(PipelineError, match="calls stage echo twice"):
        plan_pipeline(twice, load_config(SMOKE))


def test_a_variant_is_the_same_stage_under_its_own_name():
    import pickle

    from alignflow.tasks.dpo import train_dpo

    variant = train_dpo.variant("beta-0.3")
    assert (variant.name, variant.base, variant.inputs, variant.fn) == ("dpo-beta-0.3", "dpo", train_dpo.inputs,
                                                                         train_dpo.fn)
    assert variant.variant("beta-0.5").name == "dpo-beta-0.5"
    restored = pickle.loads(pickle.dumps(variant))  # as a worker process or launched job gets it
    assert (restored.name, restored.base) == ("dpo-beta-0.3", "dpo")
    assert pickle.loads(pickle.dumps(train_dpo)) is train_dpo


def test_the_task_body_takes_the_key_prefect_computed(smoke):
    """stage_task_key's key reaches the body through Prefect's transaction; outside one (or when
    the key function failed) the body computes it."""
    from prefect.transactions import transaction

    config = load_config(SMOKE)
    section, inputs = EchoConfig(), {"pretrain": stage_result("pretrain", {"model": str(smoke)}, kind=ModelRef)}
    own = stage_key(echo, section, config, inputs)
    assert _task_key(echo, section, config, inputs) == own
    with transaction(key="echo-0123"):
        assert _task_key(echo, section, config, inputs) == "echo-0123"
    with transaction(key="echo-unkeyed-0123"):
        assert _task_key(echo, section, config, inputs) == own


def test_data_flow_is_tracked_with_a_data_card(smoke):
    run = stage_runs("validate")[0]
    build_run = stage_runs("build")[0]
    assert f"build:{build_run.info.run_id}" in run.data.tags[TAG_UPSTREAM]
    assert run.data.metrics["rows_train"] + run.data.metrics["rows_validation"] == run.data.metrics["rows_valid"]
    assert build_run.data.metrics["rows_read"] == (build_run.data.metrics["rows_kept"]
                                                   + build_run.data.metrics["rows_rejected"])
    card = {Path(a.path).name for a in client().list_artifacts(run.info.run_id, "data_card")}
    assert {"data_card.md", "data_card.png", "task.json", "rejected.parquet"} <= card
    names = {d.dataset.name for d in client().get_run(run.info.run_id).inputs.dataset_inputs}
    assert names == {"instructions-train", "instructions-validation"}


def test_changing_a_data_setting_recomputes_only_downstream(smoke, capsys):
    data = yaml.safe_load((smoke / SMOKE).read_text())
    data["stages"]["validate"]["validation_fraction"] = 0.3
    (smoke / "configs" / "split.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", "configs/split.yaml"]) == 0
    out = capsys.readouterr().out
    assert "pretrain        cached" in out and "build           cached" in out
    assert "validate        computed" in out
    data["stages"]["build"]["max_chars"] = 5000
    (smoke / "configs" / "split.yaml").write_text(yaml.safe_dump(data))
    assert main(["run", "configs/split.yaml"]) == 0
    out = capsys.readouterr().out
    assert "pretrain        cached" in out
    assert "build           computed" in out
    # same rows as before, so validate's inputs did not change: it stays cached
    assert "validate        cached" in out


def test_cli_reports_bad_stage_names(smoke, capsys):
    assert main(["run", SMOKE, "--only", "nope"]) == 2
    assert "--only nope: unknown stage" in capsys.readouterr().err


def test_base_model_from_a_local_folder(smoke, tmp_path, capsys):
    local = tmp_path / "my-model"
    shutil.copytree(model_dir(smoke), local)
    (smoke / "configs" / "real.yaml").write_text(f"name: smoke\nbase_model: {local}\n")
    assert main(["run", "configs/real.yaml"]) == 0
    run = stage_runs()[-1]
    assert run.data.params["base_model"] == str(local)
    (smoke / "configs" / "missing.yaml").write_text(f"name: smoke\nbase_model: {tmp_path / 'absent'}\n")
    capsys.readouterr()
    assert main(["run", "configs/missing.yaml"]) == 2
    assert f"model '{tmp_path / 'absent'}' cannot be loaded: no such folder" in capsys.readouterr().err


def test_evaluate_stage_tracks_a_results_table_and_reruns_alone_on_cached_models(smoke, capsys):
    run = stage_runs("evaluate")[0]
    history = client().get_metric_history(run.info.run_id, "acc/pretrain/recognize_sentence_zh")
    assert sorted(m.step for m in history) == [0, 1] and all(0 <= m.value <= 1 for m in history)
    assert f"pretrain:{stage_runs()[0].info.run_id}" in run.data.tags[TAG_UPSTREAM]
    assert "sft:" in run.data.tags[TAG_UPSTREAM], "every model the pipeline produced is evaluated"
    plots = {Path(a.path).name for a in client().list_artifacts(run.info.run_id, "plots")}
    assert plots == {"accuracy_vs_k_pretrain.png", "accuracy_vs_k_sft.png", "accuracy_heatmap.png"}
    assert {"results_table.json", "results.csv", "samples"} <= {a.path for a in client().list_artifacts(run.info.run_id)}
    folder = smoke / "artifacts" / "evaluate" / run.data.tags[TAG_CACHE_KEY]
    results = json.loads((folder / "results.json").read_text())
    harness = json.loads(next((folder / "lm_eval" / "sft").glob("results_*.json")).read_text())
    assert harness["results"]["recognize_sentence_zh_1shot"]["acc,none"] == next(
        r["accuracy"] for r in results if (r["model"], r["task"], r["k"]) == ("sft", "recognize_sentence_zh", 1))
    assert {"lm_eval/pretrain", "lm_eval/sft"} == {a.path for a in client().list_artifacts(run.info.run_id, "lm_eval")}
    assert {(r["model"], r["task"], r["k"]) for r in results} == {
        (model, "recognize_sentence_zh", k) for model in ("pretrain", "sft") for k in (0, 1)}
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["n"] == 4 for r in results)

    assert main(["run", SMOKE, "--only", "evaluate", "--refresh", "evaluate"]) == 0
    out = capsys.readouterr().out
    assert "evaluate        computed" in out and "pretrain        computed" not in out
    assert "recognize_sentence_zh" in out and "95% CI" in out  # the stage's terminal summary
