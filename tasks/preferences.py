"""Stage `preferences`: the notes' RLHF stage 2 data, as validated preference pairs.

For each prompt (validated instruction rows of the chosen tasks, rendered as SFT showed them) the
SFT model samples K responses; an annotator scores them (the reference-based oracle, a model as
judge) or a file of human rankings replaces the sampling; rankings become pairs (all pairs or
best against the rest, ties dropped and counted). Public datasets in Anthropic-HH or UltraFeedback
form can be added. Prompts are split (seeded, by prompt) into training and held-out pairs, and
validation-split rows of the same tasks, with the prompts whose pairs were held out, become the
held-out prompts with references on which the policies' win rates are measured.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import mlflow
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.data import preferences as prefs
from alignflow.data.tables import check_rejected_fraction, read_table, rejects, write_table
from alignflow.errors import DataError
from alignflow.pipeline.fanout import batch_shards, fan_out
from alignflow.pipeline.stage import InstructionData, ModelRef, PreferenceData, StageOutput, StageRun, stage
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.preferences import PreferencesConfig
from alignflow.tracking.runs import log_table_input, read_input


def preferences_key(settings: PreferencesConfig, config: PipelineConfig) -> dict:
    """The section, the content of the files it reads, and the SFT prompt format its prompts use."""
    files = [settings.rankings_file] if settings.annotator == "rankings_file" else []
    files += [entry.path for entry in settings.imports]
    digests = {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file() else "missing"
               for f in files}
    sft = config.stages.sft
    prompt_format = sft.model_dump(include={"prompt_with_input", "prompt_without_input", "add_bos"}) if sft else {}
    return {"seed": config.seed, **settings.model_dump(mode="json"), "files": digests, "prompt_format": prompt_format}


def select_rows(frame: pd.DataFrame, tasks: list[str] | None, limit: int, seed: int) -> pd.DataFrame:
    """Rows of the chosen tasks in a seeded order, at most `limit`."""
    if tasks is not None:
        unknown = sorted(set(tasks) - set(frame["task"]))
        if unknown:
            raise DataError(f"preferences.tasks: no validated rows of tasks {unknown}; present: "
                             f"{sorted(frame['task'].unique())}")
        frame = frame[frame["task"].isin(tasks)]
    order = list(range(len(frame)))
    random.Random(seed).shuffle(order)
    return frame.iloc[order[:limit]].reset_index(drop=True)


def is_heldout_prompt(prompt_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def prompt_id_of(pair_id: str) -> str:
    """Pair ids are '<prompt id>-<chosen>-<rejected>' (alignflow.data.preferences)."""
    return pair_id.rsplit("-", 2)[0]


@task(name="preferences: sample shard", task_run_name="preferences: sample from prompt {first_index}",
      cache_policy=NO_CACHE, persist_result=False)
def sample_shard(policy_path: str, device: str, dtype: str, prompts: list[str], first_index: int, seed: int,
                 settings: dict) -> list:
    """K responses for each prompt of one shard, in a task-runner worker: rows `first_index`... of the
    whole prompt list, with the per-row seeds one process would use."""
    from alignflow.models.generation import generate_responses
    from alignflow.models.loading import load_causal_lm, load_tokenizer, resolve_placement
    from alignflow.pipeline.environment import configure_environment

    configure_environment()
    model = load_causal_lm(policy_path, resolve_placement(device, dtype))
    return generate_responses(model, load_tokenizer(policy_path), prompts, num_samples=settings["num_samples"],
                              temperature=settings["temperature"], top_p=settings["top_p"],
                              max_new_tokens=settings["max_new_tokens"], batch_size=settings["batch_size"],
                              seed=seed, first_index=first_index, progress=f"preferences: sample {first_index}..")


def sampled_rankings(run: StageRun, policy_path: str, rows: pd.DataFrame, prompts: list[str]) -> list[dict]:
    """K responses per prompt from the SFT model, scored by the oracle or the judge."""
    from alignflow.data.annotation import judge_scores
    from alignflow.models.generation import generate_responses
    from alignflow.models.loading import load_causal_lm, load_tokenizer, pinned_model, stage_placement
    from alignflow.tracking.runs import log_models

    settings: PreferencesConfig = run.section
    placement = stage_placement(run.config)
    tokenizer = load_tokenizer(policy_path)
    model = load_causal_lm(policy_path, placement)
    log_models(policy=model)
    execution = run.config.execution
    shards = [{"policy_path": policy_path, "device": execution.device, "dtype": execution.dtype,
               "prompts": prompts[start:end], "first_index": start, "seed": run.config.seed,
               "settings": settings.model_dump(mode="json")}
              for start, end in batch_shards(len(prompts), settings.batch_size,
                                             1 if execution.task_runner == "inline" else execution.data_workers)]
    if execution.task_runner == "inline":  # the model loaded above samples
        sampled = generate_responses(model, tokenizer, prompts, num_samples=settings.num_samples,
                                     temperature=settings.temperature, top_p=settings.top_p,
                                     max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                                     seed=run.config.seed, progress="preferences: sample")
    else:
        sampled = [responses for shard in fan_out(execution, sample_shard, shards) for responses in shard]
    judge = None
    if settings.annotator == "judge":
        judge_path = policy_path
        if settings.judge.model:  # a hub judge's commit is logged, as the base model's is
            judge_path, commit = pinned_model(settings.judge.model, settings.judge.revision)
            if commit:
                mlflow.log_params({"judge.commit": commit})
        judge = (model, tokenizer) if judge_path == policy_path else (
            load_causal_lm(judge_path, placement), load_tokenizer(judge_path))
        log_models(judge=judge[0])
    rankings = []
    for row, prompt, responses in zip(rows.to_dict("records"), prompts, sampled, strict=True):
        texts = [r.text for r in responses]
        if judge is None:
            scores = [prefs.oracle_score(text, row["output"]) for text in texts]
        else:
            scores = judge_scores(judge[0], judge[1], [prompt] * len(texts), texts, rubric=settings.judge.rubric,
                                  yes=settings.judge.yes, no=settings.judge.no)
        rankings.append({"prompt_id": row["id"], "prompt": prompt, "task": row["task"], "responses": texts,
                         "scores": scores, "finished": [r.finished for r in responses]})
    return rankings


@stage("preferences", result=PreferenceData, key=preferences_key, loads_models=True)
def build_preferences(cfg: PreferencesConfig, sft: ModelRef, validate: InstructionData, run: StageRun) -> StageOutput:
    """Sample K responses per prompt from the SFT model, annotate, and build preference pairs."""
    from alignflow.models.loading import load_tokenizer
    from alignflow.tracking.runs import log_tokenizer_setup
    from alignflow.training.sft_data import prompt_template, prompt_text

    settings, seed, out = cfg, run.config.seed, run.out_dir
    data = validate.outputs
    tokenizer = load_tokenizer(sft.model)
    log_tokenizer_setup(tokenizer)
    template = prompt_template(run.config.stages.sft, tokenizer)
    train_rows = read_input(data, "train", "training")
    prompt_of = {row["id"]: prompt_text(row, tokenizer, template) for row in train_rows.to_dict("records")}
    task_of = dict(zip(train_rows["id"], train_rows["task"], strict=True))

    pairs: list[dict] = []
    refused: list[dict] = []
    counts = {"ties": 0, "identical": 0, "empty": 0}
    file_rows = 0
    metrics: dict[str, float] = {}
    rankings: list[dict] = []
    if settings.annotator in ("oracle", "judge"):
        rows = select_rows(train_rows, settings.tasks, settings.max_prompts, seed)
        rankings = sampled_rankings(run, sft.model, rows, [prompt_of[i] for i in rows["id"]])
        scores = [s for r in rankings for s in r["scores"]]
        metrics |= {"prompts": len(rankings), "samples": len(scores),
                    "mean_sample_score": sum(scores) / max(len(scores), 1),
                    "unfinished_samples": sum(not f for r in rankings for f in r["finished"]),
                    "prompts_without_signal": sum(len(set(r["scores"])) == 1 for r in rankings)}
    elif settings.annotator == "rankings_file":
        read, bad = prefs.read_rankings(settings.rankings_file, prompt_of)
        file_rows += len(read) + len(bad)
        refused += bad
        rankings = [{**r, "prompt": prompt_of[r["prompt_id"]], "task": task_of[r["prompt_id"]]} for r in read]
    source = settings.annotator if settings.annotator != "rankings_file" else f"rankings:{settings.rankings_file}"
    for ranking in rankings:
        made, ranking_counts = prefs.pairs_from_scores(ranking["prompt_id"], ranking["prompt"], ranking["responses"],
                                                       ranking["scores"], strategy=settings.pairing, source=source,
                                                       task=ranking["task"])
        pairs += made
        for key, value in ranking_counts.items():
            counts[key] += value
    for entry in settings.imports:
        reader = prefs.import_hh if entry.format == "hh" else (
            lambda path: prefs.import_ultrafeedback(path, settings.pairing))
        imported, bad = reader(entry.path)
        file_rows += len(imported) + len(bad)
        pairs += imported
        refused += bad
        metrics[f"pairs_from_{entry.format}"] = len(imported)

    rejected = rejects(refused)
    write_table(rejected, out / "rejected.parquet")
    check_rejected_fraction(file_rows, rejected, settings.max_rejected_fraction, "preferences")
    table = prefs.pairs_table(pairs)
    if table.empty:
        raise DataError("preferences: no preference pair was made (every ranking tied or was rejected); see "
                         f"{out / 'rejected.parquet'}")
    heldout = table["id"].map(lambda i: is_heldout_prompt(prompt_id_of(i), settings.heldout_fraction, seed))
    if heldout.all():
        # Every training stage after this one needs training pairs; TRL's trainers stop with a bare
        # StopIteration on an empty dataset (what a tiny Qwen2 run hit in reward_model).
        raise DataError(f"preferences: all {len(table)} pairs come from held-out prompts "
                        f"(heldout_fraction={settings.heldout_fraction}), none is left to train on; sample more "
                        "prompts (max_prompts, tasks) or lower heldout_fraction")
    write_table(table[~heldout], out / "pairs_train.parquet")
    write_table(table[heldout], out / "pairs_heldout.parquet")
    held_rows = train_rows[train_rows["id"].isin({r["prompt_id"] for r in rankings
                                                   if is_heldout_prompt(r["prompt_id"], settings.heldout_fraction,
                                                                        seed)})]
    candidates = pd.concat([read_input(data, "validation", "evaluation"), held_rows], ignore_index=True)
    eval_prompts = held_out_prompts(candidates, settings, tokenizer, template, seed)
    write_table(eval_prompts, out / "eval_prompts.parquet")
    if rankings:
        samples = pd.DataFrame([{"prompt_id": r["prompt_id"], "task": r["task"], "prompt": r["prompt"],
                                 "responses": json.dumps(r["responses"], ensure_ascii=False),
                                 "scores": json.dumps(r["scores"]), "finished": json.dumps(r.get("finished"))}
                                for r in rankings])
        write_table(samples, out / "samples.parquet")
        mlflow.log_table(samples.head(50), artifact_file="samples.json")
    # logged as the stages after it read them back (same digest: MLflow links them as one dataset)
    for name, context in (("pairs_train", "training"), ("pairs_heldout", "evaluation"), ("eval_prompts", "evaluation")):
        log_table_input(read_table(out / f"{name}.parquet"), out / f"{name}.parquet", f"preferences.{name}",
                        context=context)
    mlflow.log_artifact(str(out / "rejected.parquet"), artifact_path="data")
    metrics |= {"pairs_train": int((~heldout).sum()), "pairs_heldout": int(heldout.sum()),
                "ties_dropped": counts["ties"], "identical_dropped": counts["identical"],
                "empty_dropped": counts["empty"],
                "rows_rejected": len(rejected), "eval_prompts": len(eval_prompts),
                "mean_margin": float(table["margin"].mean())}
    for rule, count in rejected["rule"].value_counts().items():
        metrics[f"rejected_{rule}"] = int(count)
    print(f"[preferences] {len(table)} pairs ({metrics['pairs_heldout']} held out), {counts['ties']} ties, "
          f"{counts['identical']} identical and {counts['empty']} with an empty response dropped, "
          f"{len(rejected)} rows rejected", flush=True)
    return StageOutput(outputs={"pairs_train": str(out / "pairs_train.parquet"),
                                "pairs_heldout": str(out / "pairs_heldout.parquet"),
                                "eval_prompts": str(out / "eval_prompts.parquet"),
                                "rejected": str(out / "rejected.parquet")}, metrics=metrics)


def held_out_prompts(validation: pd.DataFrame, settings: PreferencesConfig, tokenizer, template,
                     seed: int) -> pd.DataFrame:
    """Rows of the preference tasks that no preference training saw (the validation split, and the
    prompts whose pairs were held out): prompt, reference, task."""
    from alignflow.training.sft_data import prompt_text

    rows = validation if settings.tasks is None else validation[validation["task"].isin(settings.tasks)]
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    rows = rows.iloc[order[: settings.eval_prompts]]
    return pd.DataFrame({"id": rows["id"].astype(str), "task": rows["task"].astype(str),
                         "prompt": [prompt_text(r, tokenizer, template) for r in rows.to_dict("records")],
                         "reference": rows["output"].astype(str)})
