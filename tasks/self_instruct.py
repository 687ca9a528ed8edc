"""Stage `self_instruct`: bootstrap instruction data from the build pool (Wang et al., 2022).

Each round samples in-context instructions (6 human-written, 2 generated earlier), lets the
generator write one new instruction per prompt, screens them (unparseable, length, blocklist,
duplicate, ROUGE-L against the pool), then asks for an input and an output for the survivors;
the output comes from `teacher` when one is configured (distillation). Rounds repeat until
`target_count` examples are kept or `max_rounds` have run. Every candidate lands in the
candidates table with its verdict; rejected ones also in a RejectedRow table.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from alignflow.data.self_instruct import (
    RULES,
    InstructionPool,
    Line,
    Verdict,
    basic_messages,
    check_parseable,
    instruction_prompt,
    pool_from_table,
    sample_in_context,
    screen_instruction,
)
from alignflow.data.tables import (
    instruction_frame,
    read_table,
    record_json,
    rejects,
    validate_instructions,
    write_table,
)
from alignflow.pipeline.caching import folder_fingerprint
from alignflow.pipeline.stage import InstructionData, ModelRef, StageOutput, StageRun, stage
from alignflow.progress import StepProgress
from alignflow.schemas.config import PipelineConfig
from alignflow.schemas.stages.self_instruct import SelfInstructConfig
from alignflow.tracking.runs import log_table_input

STAGE_NAME = "self_instruct"
CANDIDATES_FILE = "candidates.parquet"

# prompts and a seed in, one line per prompt out (LineWriter.complete with fixed settings)
Writer = Callable[[list[str], int], list[Line]]


def model_identity(name_or_path: str | None) -> dict | None:
    """A model reference for the cache key: the name, plus a fingerprint when it is a local folder."""
    if name_or_path is None:
        return None
    local = Path(name_or_path).expanduser()
    return {"name": name_or_path, "fingerprint": folder_fingerprint(local) if local.is_dir() else None}


def resolved_seed(config: PipelineConfig) -> int:
    section = config.stages.self_instruct
    return section.seed if section.seed is not None else config.seed


def self_instruct_key(section: SelfInstructConfig, config: PipelineConfig) -> dict:
    """The section, its resolved seed, and the generator's and teacher's identities."""
    return {**section.model_dump(mode="json"), "seed": resolved_seed(config),
            "models": {"generator": model_identity(section.generator), "teacher": model_identity(section.teacher)}}


def phase_seed(seed: int, round_number: int, phase: str) -> int:
    """A separate, stable seed per (round, phase), so that e.g. a teacher run shares round 1's inputs."""
    text = f"{seed}:{round_number}:{phase}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


@dataclass
class Candidate:
    """One generated instruction and what became of it (verdict None: kept)."""

    id: str
    round: int
    instruction: str
    input: str = ""
    output: str = ""
    verdict: Verdict | None = None
    rouge_l: float = math.nan
    most_similar: str = ""


@dataclass(frozen=True)
class Writers:
    instruction: Writer
    input: Writer
    output: Writer


def run_round(round_number: int, pool: InstructionPool, settings: SelfInstructConfig, seed: int,
              rng: random.Random, writers: Writers) -> list[Candidate]:
    """One Self-Instruct round; accepted instructions join `pool` as they pass the instruction filters."""
    prompts = [
        instruction_prompt(sample_in_context(pool, settings.num_human, settings.num_generated, rng),
                           settings.instruction_template, settings.instruction_cue, settings.instruction_header)
        for _ in range(settings.batch_size)
    ]
    batch = []
    for index, line in enumerate(writers.instruction(prompts, phase_seed(seed, round_number, "instruction"))):
        candidate = Candidate(f"{STAGE_NAME}-{round_number:03d}-{index:03d}", round_number, line.text.strip())
        candidate.verdict = screen_instruction(
            line, pool, min_chars=settings.min_instruction_chars, max_chars=settings.max_instruction_chars,
            blocklist=settings.blocklist, rouge_threshold=settings.rouge_threshold,
            max_new_tokens=settings.max_new_tokens)
        if candidate.verdict is None:
            candidate.rouge_l, candidate.most_similar = pool.closest(candidate.instruction)
            pool.add_generated(candidate.instruction)
        elif candidate.verdict.rouge_l is not None:
            candidate.rouge_l, candidate.most_similar = candidate.verdict.rouge_l, candidate.verdict.most_similar
        batch.append(candidate)

    alive = [c for c in batch if c.verdict is None]
    prompts = [settings.input_template.format(instruction=c.instruction) for c in alive]
    for candidate, line in zip(alive, writers.input(prompts, phase_seed(seed, round_number, "input")), strict=True):
        candidate.input = line.text.strip()
        candidate.verdict = check_parseable(line, "input", settings.max_new_tokens, allow_empty=True)

    alive = [c for c in alive if c.verdict is None]
    prompts = [settings.output_template.format(instruction=c.instruction, input=c.input) for c in alive]
    for candidate, line in zip(alive, writers.output(prompts, phase_seed(seed, round_number, "output")), strict=True):
        candidate.output = line.text.strip()
        candidate.verdict = check_parseable(line, "output", settings.max_new_tokens)
    return batch


def bootstrap(pool: InstructionPool, settings: SelfInstructConfig, seed: int, writers: Writers,
              on_round: Callable[[int, list[Candidate]], None] | None = None) -> tuple[list[Candidate], int]:
    """Rounds until target_count examples are kept or max_rounds ran; returns (candidates, rounds)."""
    rng = random.Random(seed)
    candidates: list[Candidate] = []
    kept, rounds = 0, 0
    while kept < settings.target_count and rounds < settings.max_rounds:
        rounds += 1
        batch = run_round(rounds, pool, settings, seed, rng, writers)
        candidates.extend(batch)
        kept += sum(c.verdict is None for c in batch)
        if on_round:
            on_round(rounds, batch)
    return candidates, rounds


def instruction_rows(candidates: list[Candidate]) -> pd.DataFrame:
    """Kept candidates as InstructionRow rows (format basic, source self_instruct)."""
    rows = [
        {"id": c.id, "task": STAGE_NAME, "format": "basic", "instruction": c.instruction, "input": c.input,
         "output": c.output, "messages": basic_messages(c.instruction, c.input, c.output), "source": STAGE_NAME}
        for c in candidates if c.verdict is None
    ]
    return instruction_frame(rows)


def validated_rows(candidates: list[Candidate]) -> pd.DataFrame:
    """Kept rows that satisfy the schema; a row that does not turns its candidate into a `schema` reject."""
    frame = instruction_rows(candidates)
    numbers = {c.id: number for number, c in enumerate(candidates, start=1)}
    kept, failed = validate_instructions(frame, stage=STAGE_NAME, source=CANDIDATES_FILE,
                                         row_numbers=frame["id"].map(numbers))
    by_id = {c.id: c for c in candidates}
    for failure in failed.itertuples():
        by_id[failure.id].verdict = Verdict("schema", failure.field, failure.reason)
    return kept


def candidates_table(candidates: list[Candidate]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"id": c.id, "round": c.round, "instruction": c.instruction, "input": c.input, "output": c.output,
          "kept": c.verdict is None, "rule": c.verdict.rule if c.verdict else "",
          "reason": c.verdict.reason if c.verdict else "", "rouge_l": c.rouge_l, "most_similar": c.most_similar}
         for c in candidates],
        columns=["id", "round", "instruction", "input", "output", "kept", "rule", "reason", "rouge_l",
                 "most_similar"],
    )


def without_nan(row: dict) -> dict:
    """NaN is not JSON; a missing score is null in a record."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def rejected_table(candidates: pd.DataFrame, verdicts: list[Verdict | None]) -> pd.DataFrame:
    """RejectedRow rows pointing at their line in the candidates table."""
    return rejects(
        {"stage": STAGE_NAME, "source": CANDIDATES_FILE, "row": number, "id": row["id"], "field": verdict.field,
         "rule": verdict.rule, "reason": verdict.reason, "record": record_json(without_nan(row))}
        for number, (row, verdict) in enumerate(zip(candidates.to_dict("records"), verdicts, strict=True), start=1)
        if verdict is not None
    )


def count_metrics(candidates: list[Candidate], rounds: int, pool: InstructionPool, target: int) -> dict[str, float]:
    rules = Counter(c.verdict.rule for c in candidates if c.verdict)
    kept = sum(c.verdict is None for c in candidates)
    return {
        "rounds": rounds, "candidates": len(candidates), "kept": kept, "rejected": len(candidates) - kept,
        "keep_rate": kept / len(candidates) if candidates else 0.0, "target_reached": float(kept >= target),
        "pool_human": len(pool.human), "pool_generated": len(pool.generated),
        **{f"rejected_{rule}": rules.get(rule, 0) for rule in RULES},
    }


def load_writers(generator: str, teacher: str | None, settings: SelfInstructConfig, placement=None) -> Writers:
    """The generator writes instructions and inputs; the teacher, when set, writes the outputs."""
    # torch/transformers load here, not at import: a fully cached run never pays for them.
    from alignflow.models.generation import LineWriter, SamplingSettings
    from alignflow.tracking.runs import log_models

    sampling = SamplingSettings(settings.temperature, settings.top_p, settings.max_new_tokens)
    generator_model = LineWriter(generator, placement)
    output_model = generator_model if teacher is None else LineWriter(teacher, placement)
    log_models(generator=generator_model.model, **({"teacher": output_model.model} if teacher else {}))

    def complete_with(model: LineWriter) -> Writer:
        return lambda prompts, seed: [Line(r.text, r.finished) for r in model.complete(prompts, sampling, seed)]

    return Writers(complete_with(generator_model), complete_with(generator_model), complete_with(output_model))


@stage(STAGE_NAME, result=InstructionData, key=self_instruct_key, loads_models=True)
def self_instruct(cfg: SelfInstructConfig, pretrain: ModelRef, build: InstructionData, run: StageRun) -> StageOutput:
    """Bootstrap instructions, inputs and outputs from the build pool with the generator model."""
    settings = cfg
    seed = resolved_seed(run.config)
    pool_path = Path(build.outputs["instructions"])
    pool_frame = read_table(pool_path)
    pool = pool_from_table(pool_frame, settings.human_sources, source=str(pool_path))
    log_table_input(pool_frame, pool_path, "build-instructions", context="input")

    generator = settings.generator or pretrain.model
    from alignflow.models.loading import stage_placement

    writers = load_writers(generator, settings.teacher, settings, stage_placement(run.config))
    started = time.perf_counter()
    with StepProgress(STAGE_NAME, total=settings.max_rounds) as progress:
        kept_so_far = 0

        def on_round(round_number: int, batch: list[Candidate]) -> None:
            nonlocal kept_so_far
            kept_here = sum(c.verdict is None for c in batch)
            kept_so_far += kept_here
            mlflow.log_metrics({"round_candidates": len(batch), "round_kept": kept_here,
                                "kept_total": kept_so_far}, step=round_number)
            progress.update(round_number, kept=kept_so_far, candidates=round_number * settings.batch_size)

        candidates, rounds = bootstrap(pool, settings, seed, writers, on_round)
    generation_seconds = time.perf_counter() - started

    generated = validated_rows(candidates)
    table = candidates_table(candidates)
    rejected = rejected_table(table, [c.verdict for c in candidates])
    paths = {"generated": run.out_dir / "generated.parquet", "candidates": run.out_dir / CANDIDATES_FILE,
             "rejected": run.out_dir / "rejected.parquet"}
    for name, frame in [("generated", generated), ("candidates", table), ("rejected", rejected)]:
        write_table(frame, paths[name])
        log_table_input(frame, paths[name], f"self-instruct-{name}", context="output")
        mlflow.log_artifact(str(paths[name]), artifact_path="data")
    mlflow.log_table(table, artifact_file="candidates.json")

    metrics = {**count_metrics(candidates, rounds, pool, settings.target_count),
               "generation_seconds": generation_seconds}
    summary = {"generator": generator, "teacher": settings.teacher,
               "examples": generated.head(3)[["instruction", "input", "output"]].to_dict("records")}
    return StageOutput(outputs={name: str(path) for name, path in paths.items()}, metrics=metrics, summary=summary)
