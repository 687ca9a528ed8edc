"""The training stages end to end on one small pipeline (smoke + demo-family rows): LoRA SFT with
mixing, an adaptive curriculum and plateau cuts; preferences -> reward_model and dpo. Outputs,
curves once per step, model cards, registry entries, lineage, cache invalidation (SFT and DPO
hyperparameters), and every bad-input case of a rankings file through the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import (
    TrainedProject,
    config_variant,
    edit_config,
    metric_steps,
    project_store,
    run_in_this_process,
    stage_statuses,
)
from transformers import AutoModelForCausalLM

from alignflow.schemas.preference import PreferencePair
from alignflow.tracking.lineage import parse_upstream
from alignflow.tracking.logged_models import models_of_run
from alignflow.tracking.runs import TAG_CACHE_KEY, TAG_STAGE, TAG_UPSTREAM

pytestmark = pytest.mark.slow


def latest_run(folder: Path, stage: str):
    mlflow = project_store(folder)
    experiment = mlflow.get_experiment_by_name("smoke")
    return mlflow.search_runs([experiment.experiment_id], f"tags.`{TAG_STAGE}` = '{stage}'",
                              order_by=["attributes.start_time DESC"], max_results=1)[0]




@pytest.fixture(scope="module")
def project(training_project):
    return training_project.folder


def first_run(project: TrainedProject, stage: str):
    """`stage`'s run in the project's first, full pipeline run (other test modules add later runs)."""
    mlflow = project_store(project.folder)
    experiment = mlflow.get_experiment_by_name("smoke")
    return mlflow.search_runs([experiment.experiment_id], f"tags.`{TAG_STAGE}` = '{stage}' and "
                              f"tags.`mlflow.parentRunId` = '{project.parent_run_id}'")[0]


def first_dir(project: TrainedProject, stage: str) -> Path:
    """`stage`'s output folder in the project's first pipeline run."""
    return project.folder / "artifacts" / stage / first_run(project, stage).data.tags[TAG_CACHE_KEY]


def output_dir(folder: Path, stage: str) -> Path:
    """The stage's most recently written output folder."""
    return max((folder / "artifacts" / stage).glob(f"{stage}-*"), key=lambda p: p.stat().st_mtime)




def test_lora_stage_exports_a_plain_model_with_card_and_registry_entry(training_project):
    folder = training_project.folder
    model_dir = first_dir(training_project, "sft") / "model"
    assert not (model_dir / "adapter_config.json").exists(), "LoRA is merged into a plain model folder"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in name for name, _ in model.named_parameters())
    run = first_run(training_project, "sft")
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert run.info.run_id in card and "upstream `pretrain`" in card and "upstream `validate`" in card
    assert "train_loss" in card
    versions = project_store(folder).search_model_versions("name='smoke-sft'")
    version = next(v for v in versions if v.run_id == run.info.run_id)  # later modules may add versions
    (logged,) = models_of_run(run.info.run_id, run.info.experiment_id, project_store(folder))
    assert version.source == f"models:/{logged.model_id}"
    import mlflow.transformers

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlruns/mlflow.db")
    try:  # MLflow's own loader, through the registry
        pipe = mlflow.transformers.load_model(f"models:/smoke-sft/{version.version}")
    finally:
        mlflow.set_tracking_uri(before)
    assert torch.equal(next(pipe.model.parameters()), next(model.parameters()))


MODEL_STAGES = ("pretrain", "sft", "reward_model", "dpo", "ppo", "grpo", "rloo")


def test_every_trained_model_is_logged_once_and_read_as_an_input_downstream(training_project):
    store = project_store(training_project.folder)
    # get_run, not search_runs: only it returns a run's model inputs
    runs = {stage: store.get_run(first_run(training_project, stage).info.run_id)
            for stage in (*MODEL_STAGES, "preferences", "evaluate")}

    experiment = runs["sft"].info.experiment_id

    def logged(run_id):
        return [m.model_id for m in models_of_run(run_id, experiment, store)]

    for stage in MODEL_STAGES:
        assert len(logged(runs[stage].info.run_id)) == 1, stage
        # the weights live in the logged model only, not also under the run's artifacts
        assert "model" not in {a.path for a in store.list_artifacts(runs[stage].info.run_id)}, stage
    for stage, run in runs.items():
        upstream = parse_upstream(run.data.tags[TAG_UPSTREAM]).values()
        expected = sorted(m for run_id in upstream for m in logged(run_id))
        inputs = sorted(item.model_id for item in run.inputs.model_inputs)
        assert inputs == expected, stage
    assert len(runs["evaluate"].inputs.model_inputs) >= 5  # SFT and the preference-tuned policies


def test_curves_are_logged_once_per_step(training_project):
    folder = training_project.folder
    run = first_run(training_project, "sft")
    assert metric_steps(folder, run.info.run_id, "loss") == list(range(1, 13))
    for key in ("learning_rate", "grad_norm", "tokens_per_second"):
        assert metric_steps(folder, run.info.run_id, key) == list(range(1, 13)), key
    assert metric_steps(folder, run.info.run_id, "eval_loss") == [2, 4, 6, 8, 10, 12]
    assert all(v.value > 0 for v in project_store(folder).get_metric_history(run.info.run_id, "tokens_per_second"))


def test_effective_mix_and_curriculum_are_recorded(training_project):
    out = first_dir(training_project, "sft")
    mix = pd.read_csv(out / "mixing.csv").set_index("task")
    assert mix["drawn"].sum() == 12 * 4  # steps x batch size of the smoke config
    assert mix["rate"].sum() == pytest.approx(1.0)
    capped = mix[mix["available"] >= 15]
    assert (capped.drop(index="add", errors="ignore")["rate"].nunique() <= 1), "capped tasks share one rate"
    assert mix.loc["add", "rate"] > mix.drop(index="add")["rate"].max(), "task weight 2 raises its rate"
    phases = pd.read_json(out / "curriculum.json")
    assert list(phases["phase"]) == [0, 1, 2] and phases["examples"].sum() == 48
    metrics = first_run(training_project, "sft").data.metrics
    assert metrics["mix_rate/add"] == pytest.approx(mix.loc["add", "rate"])


def test_a_changed_sft_hyperparameter_invalidates_sft_and_what_follows_only(project, capsys):
    path = project / "configs" / "prefs.yaml"
    original = path.read_text(encoding="utf-8")
    edit_config(path, lambda stages: stages["sft"].update(learning_rate=1e-3))
    try:
        result = run_in_this_process(["stages", "configs/prefs.yaml"], project, capsys)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode == 0, result.stdout + result.stderr
    status = {p[0]: p[1] for p in (line.split() for line in result.stdout.splitlines()) if len(p) >= 2}
    assert [status[s] for s in ("pretrain", "build", "clean", "validate")] == ["cached"] * 4
    assert status["sft"] == "will" and all(status[s] == "pending"
                                           for s in ("preferences", "reward_model", "dpo", "ppo"))


def test_pairs_are_valid_and_held_out_by_prompt(training_project):
    out = first_dir(training_project, "preferences")
    train, heldout = pd.read_parquet(out / "pairs_train.parquet"), pd.read_parquet(out / "pairs_heldout.parquet")
    PreferencePair.validate(train)
    PreferencePair.validate(heldout)
    prompt = lambda frame: {i.rsplit("-", 2)[0] for i in frame["id"]}  # noqa: E731
    assert train.size and heldout.size and not prompt(train) & prompt(heldout)
    metrics = first_run(training_project, "preferences").data.metrics
    assert metrics["pairs_train"] == len(train) and metrics["samples"] == 4 * metrics["prompts"]
    samples = pd.read_parquet(out / "samples.parquet")
    assert all(len(json.loads(r)) == 4 for r in samples["responses"])


def test_reward_model_and_dpo_log_metrics_plots_models_and_lineage(training_project):
    project = training_project.folder
    mlflow = project_store(project)
    reward = first_run(training_project, "reward_model")
    assert 0 <= reward.data.metrics["heldout_pair_accuracy"] <= 1
    assert {"reward_mean", "reward_std", "margin_mean"} <= set(reward.data.metrics)
    plots = {a.path for a in mlflow.list_artifacts(reward.info.run_id, "plots")}
    assert "plots/margin_histogram.png" in plots
    dpo = first_run(training_project, "dpo")
    for key in ("heldout_preference_accuracy", "oracle_win_rate_vs_sft", "oracle_score_dpo", "oracle_score_sft"):
        assert key in dpo.data.metrics, key
    assert [m.step for m in mlflow.get_metric_history(dpo.info.run_id, "rewards/margins")] == list(range(1, 7))
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(dpo.data.metrics)
    preferences = first_run(training_project, "preferences").info.run_id
    sft = first_run(training_project, "sft").info.run_id
    for run in (reward, dpo):
        upstream = run.data.tags[TAG_UPSTREAM]
        assert f"sft:{sft}" in upstream and f"preferences:{preferences}" in upstream
        card = (first_dir(training_project, run.data.tags[TAG_STAGE]) / "model" / "README.md").read_text(encoding="utf-8")
        assert preferences in card
    names = {m.name for m in mlflow.search_registered_models()}
    assert {"smoke-sft", "smoke-reward_model", "smoke-dpo"} <= names
    evaluate = first_run(training_project, "evaluate")
    assert f"dpo:{dpo.info.run_id}" in evaluate.data.tags[TAG_UPSTREAM], "the DPO policy is evaluated"


def test_ppo_logs_each_step_samples_held_out_reward_and_lineage(training_project):
    project = training_project.folder
    mlflow = project_store(project)
    run = first_run(training_project, "ppo")
    for key in ("reward_mean", "kl_mean", "kl_per_token", "entropy", "policy_loss", "value_loss",
                "policy_clip_fraction", "approx_kl", "explained_variance", "response_length",
                "rollout_tokens_per_second", "kl_penalty_mean", "sft_loss"):
        assert [m.step for m in mlflow.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    for key in ("heldout_reward_ppo", "heldout_reward_sft", "heldout_kl_to_sft", "oracle_win_rate_vs_sft",
                "heldout_reward_gain_ci_low", "heldout_reward_gain_ci_high", "oracle_win_rate_ci_low"):
        assert key in run.data.metrics, key
    low, high = run.data.metrics["heldout_reward_gain_ci_low"], run.data.metrics["heldout_reward_gain_ci_high"]
    assert low <= run.data.metrics["heldout_reward_ppo"] - run.data.metrics["heldout_reward_sft"] <= high
    samples = {a.path for a in mlflow.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"samples/step_00002.json", "samples/step_00003.json"}
    upstream = run.data.tags[TAG_UPSTREAM]
    assert f"reward_model:{first_run(training_project, 'reward_model').info.run_id}" in upstream
    assert f"instructions:{first_run(training_project, 'validate').info.run_id}" in upstream, "the SFT loss's rows"
    assert "smoke-ppo" in {m.name for m in mlflow.search_registered_models()}
    assert f"ppo:{run.info.run_id}" in first_run(training_project, "evaluate").data.tags[TAG_UPSTREAM]
    assert not any((project / ".alignflow" / "checkpoints" / "ppo").glob("*/step-*")), "finished: deleted"


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_grpo_and_rloo_use_the_same_reward_model_and_held_out_measure(training_project, method):
    mlflow = project_store(training_project.folder)
    run = first_run(training_project, method)
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "reward")] == [1, 2]
    assert (method == "grpo") == bool(mlflow.get_metric_history(run.info.run_id, "sft_loss")), "grpo has sft_loss_coef"
    for key in (f"heldout_reward_{method}", "heldout_reward_sft", "heldout_kl_to_sft"):
        assert key in run.data.metrics, key
    assert f"reward_model:{first_run(training_project, 'reward_model').info.run_id}" in run.data.tags[TAG_UPSTREAM]
    assert f"{method}:{run.info.run_id}" in first_run(training_project, "evaluate").data.tags[TAG_UPSTREAM]
    assert f"smoke-{method}" in {m.name for m in mlflow.search_registered_models()}


def test_sweep_points_run_beside_their_method_and_draw_the_reward_kl_frontier(training_project):
    """sweeps: {dpo: {beta: [0.5]}, grpo: {beta: [0.2]}} adds the stage runs dpo-beta-0.5 and
    grpo-beta-0.2 (not registered), measured as their method is; the parent run holds the frontier."""
    mlflow = project_store(training_project.folder)
    for stage, method, field, value in (("dpo-beta-0.5", "dpo", "beta", "0.5"), ("grpo-beta-0.2", "grpo", "beta", "0.2")):
        run = first_run(training_project, stage)
        assert run.data.params[field] == value and run.data.params["register_model"] == "False"
        for key in (f"heldout_reward_{method}", "heldout_reward_sft", "heldout_kl_to_sft", "oracle_win_rate_vs_sft"):
            assert key in run.data.metrics, (stage, key)
        assert f"reward_model:{first_run(training_project, 'reward_model').info.run_id}" in run.data.tags[TAG_UPSTREAM]
    assert not {"smoke-dpo-beta-0.5", "smoke-grpo-beta-0.2"} & {m.name for m in mlflow.search_registered_models()}
    parent = training_project.parent_run_id
    folder = mlflow.download_artifacts(parent, "frontier.json", str(training_project.folder / "downloaded"))
    points = json.loads(Path(folder).read_text(encoding="utf-8"))
    assert sorted((p["method"], p["stage"]) for p in points) == [
        ("dpo", "dpo"), ("dpo", "dpo-beta-0.5"), ("grpo", "grpo"), ("grpo", "grpo-beta-0.2"), ("ppo", "ppo"),
        ("rloo", "rloo")]
    assert all(p["win_rate"] is not None and p["kl_to_sft"] == p["kl_to_sft"] for p in points)
    assert "frontier.png" in {a.path for a in mlflow.list_artifacts(parent)}
    report = Path(mlflow.download_artifacts(parent, "report.html", str(training_project.folder / "downloaded")))
    assert 'id="frontier"' in report.read_text(encoding="utf-8")


def test_pretrain_sweep_points_are_scored_on_the_icl_tasks_and_drawn_against_size(training_project):
    """sweeps: {pretrain: {model.num_hidden_layers: [2]}} builds a second base model and scores it on the
    recognition and learning tasks (evaluate-model.num_hidden_layers-2, reading that model); the parent
    run holds both base models' curves, and the report draws them."""
    mlflow = project_store(training_project.folder)
    point, scored = (first_run(training_project, f"{stage}-model.num_hidden_layers-2") for stage in ("pretrain",
                                                                                                     "evaluate"))
    configured = first_run(training_project, "pretrain")
    assert point.data.params["model.num_hidden_layers"] == "2" and configured.data.params["model.num_hidden_layers"] == "1"
    assert int(point.data.params["n_parameters"]) > int(configured.data.params["n_parameters"])
    assert parse_upstream(scored.data.tags[TAG_UPSTREAM]) == {"pretrain": point.info.run_id}
    assert json.loads(scored.data.params["categories"]) == ["recognition", "learning"]
    parent = training_project.parent_run_id
    folder = training_project.folder / "downloaded"
    curves = json.loads(Path(mlflow.download_artifacts(parent, "icl_scaling.json", str(folder))).read_text())
    assert sorted((c["model"], c["parameters"]) for c in curves) == sorted(
        (stage, int(run.data.params["n_parameters"])) for stage, run in (("pretrain", configured),
                                                                        ("pretrain-model.num_hidden_layers-2", point)))
    assert {c["category"] for c in curves} <= {"recognition", "learning"}
    assert all([p[0] for p in c["points"]] == [0, 1] for c in curves)
    report = Path(mlflow.download_artifacts(parent, "report.html", str(folder))).read_text(encoding="utf-8")
    assert 'id="icl-scaling"' in report and "pretrain-model.num_hidden_layers-2 (" in report


def test_changing_dpo_beta_recomputes_dpo_and_its_evaluation_only(training_project, project, capsys):
    config = config_variant(training_project, "dpo-beta", "dpo", lambda dpo: dpo.update(beta=0.3))
    result = run_in_this_process(["run", config], project, capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    found = stage_statuses(result.stdout)
    assert {k: found[k] for k in ("sft", "preferences", "reward_model", "ppo", "grpo", "rloo")} == dict.fromkeys(
        ("sft", "preferences", "reward_model", "ppo", "grpo", "rloo"), "cached")
    assert found["dpo"] == "computed" and found["evaluate"] == "computed"


def test_a_recomputed_model_with_the_same_weights_keeps_downstream_cached(project, capsys):
    """The model card holds the run id, so it is not part of the output digest: recomputing the
    reward model gives the same weights, hence the same digest, and its readers stay cached."""
    before = json.loads((output_dir(project, "reward_model") / "manifest.json").read_text())
    result = run_in_this_process(["run", "configs/prefs.yaml", "--refresh", "reward_model"], project, capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    found = stage_statuses(result.stdout)
    after = json.loads((output_dir(project, "reward_model") / "manifest.json").read_text())
    assert found["reward_model"] == "computed"
    assert after["files"]["model/README.md"] != before["files"]["model/README.md"]  # another run id
    assert after["digest"] == before["digest"]
    assert {found[s] for s in ("ppo", "grpo", "rloo", "evaluate")} == {"cached"}


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def test_rankings_file_and_imports_through_the_stage_reject_bad_rows_with_reasons(training_project, project, capsys):
    ids = list(pd.read_parquet(next((project / "artifacts" / "validate").glob("validate-*")) / "train.parquet")["id"])
    rankings = write_jsonl(project / "data" / "rankings.jsonl", [
        {"prompt_id": ids[0], "responses": ["7", "8", "九"], "ranks": [1, 2, 3]},          # good: 3 pairs
        {"prompt_id": ids[1], "responses": ["a", "b"], "scores": [1, 1]},                  # ties only
        {"prompt_id": ids[2], "responses": ["only one"], "scores": [1]},                   # missing responses
        {"prompt_id": "no-such-prompt", "responses": ["a", "b"], "scores": [1, 0]},        # unknown prompt id
        {"prompt_id": ids[3], "responses": ["same", "same "], "scores": [2, 1]},           # chosen == rejected
        {"prompt_id": ids[4], "responses": ["a", "b"], "scores": ["high", "low"]},         # non-numeric
    ])
    hh = write_jsonl(project / "data" / "hh.jsonl", [
        {"chosen": "\n\nHuman: 你好\n\nAssistant: 你好！", "rejected": "\n\nHuman: 你好\n\nAssistant: 走开"}])
    ultrafeedback = write_jsonl(project / "data" / "uf.jsonl", [
        {"prompt": "1+1=?", "completions": [{"response": "2", "overall_score": 9},
                                            {"response": "3", "overall_score": 2}]}])

    def use_rankings(stages):
        stages["preferences"].update(annotator="rankings_file", rankings_file=rankings, max_rejected_fraction=0.9,
                                     heldout_fraction=0.0,
                                     imports=[{"format": "hh", "path": hh}, {"format": "ultrafeedback",
                                                                            "path": ultrafeedback}])

    config = config_variant(training_project, "rankings", None, lambda whole: use_rankings(whole["stages"]))
    result = run_in_this_process(["run", config, "--only", "preferences"], project, capsys)
    assert result.returncode == 0, result.stdout + result.stderr
    out = output_dir(project, "preferences")
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert dict(zip(rejected["rule"], rejected["row"], strict=True)) == {
        "ties_only": 2, "missing_responses": 3, "unknown_prompt_id": 4, "chosen_equals_rejected": 5,
        "non_numeric_score": 6}
    assert set(rejected["source"]) == {rankings}
    pairs = pd.read_parquet(out / "pairs_train.parquet")
    assert len(pairs) == 3 + 1 + 1
    metrics = latest_run(project, "preferences").data.metrics
    assert metrics["rows_rejected"] == 5 and metrics["rejected_ties_only"] == 1
    assert metrics["pairs_from_hh"] == 1 and metrics["pairs_from_ultrafeedback"] == 1


def dataset_inputs(run) -> dict[str, tuple[str, str]]:
    """name -> (digest, context) of the datasets a run logged as inputs."""
    return {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags}.get("mlflow.data.context"))
            for i in run.inputs.dataset_inputs}


def test_every_training_stage_logs_the_tables_it_read_as_the_datasets_its_upstream_logged(training_project):
    """MLflow's own lineage: a stage's inputs are its upstream's outputs, same name and digest."""
    produced = {**dataset_inputs(first_run(training_project, "validate")),
                **dataset_inputs(first_run(training_project, "preferences"))}
    expected = {
        "sft": {"instructions-train", "instructions-validation"},
        "preferences": {"instructions-train", "instructions-validation"},
        "reward_model": {"preferences.pairs_train", "preferences.pairs_heldout"},
        "dpo": {"preferences.pairs_train", "preferences.pairs_heldout", "preferences.eval_prompts"},
        "ppo": {"preferences.pairs_train", "preferences.eval_prompts", "instructions-train"},  # + the SFT loss's rows
        "grpo": {"preferences.pairs_train", "preferences.eval_prompts", "instructions-train"},
        "rloo": {"preferences.pairs_train", "preferences.eval_prompts"},
    }
    for stage, names in expected.items():
        inputs = dataset_inputs(first_run(training_project, stage))
        assert names <= set(inputs), (stage, sorted(inputs))
        for name in names:
            assert inputs[name][0] == produced[name][0], (stage, name, "same digest as its producer logged")
    assert dataset_inputs(first_run(training_project, "sft"))["instructions-train"][1] == "training"


def test_a_diverging_stage_is_one_line_that_says_what_to_change(training_project, project, capsys):
    """A NaN or infinite loss is the user's to fix (learning rate, clipping, dtype, data): one
    `error:` line, exit 2, no traceback, like a bad config. Here SFT starts from a base model whose
    embeddings hold a NaN, as a diverged checkpoint would."""
    base = next((project / "artifacts" / "pretrain").glob("pretrain-*")) / "model"
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = float("nan")
    model.save_pretrained(project / "models" / "diverged")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (base / name).is_file():
            (project / "models" / "diverged" / name).write_bytes((base / name).read_bytes())

    def from_the_diverged_model(config: dict) -> None:
        config["base_model"] = "models/diverged"
        config["stages"] = {name: config["stages"][name] for name in ("build", "clean", "validate", "sft")}
        config.pop("sweeps", None)

    config = config_variant(training_project, "sft-diverges", None, from_the_diverged_model)
    result = run_in_this_process(["run", config], project, capsys)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: sft: non-finite training loss (nan) at step 1"), last
    assert "checkpoints/sft/" in last, "and the stage's checkpoint folder"
    assert "Lower the learning rate" in last
