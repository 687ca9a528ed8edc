"""Typed pipeline configuration, declared in YAML and validated here.

Every model is frozen and forbids unknown keys, so a typo is an error naming its key path
rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Names earlier versions used for the trainer settings: an error says the new one.
RENAMED_FIELDS = {"steps": "max_steps", "grad_clip": "max_grad_norm", "log_every": "logging_steps"}


class TrainerSettings(Section):
    """What every trainer shares (pretraining, SFT, reward model, DPO, PPO, GRPO, RLOO), under the
    names transformers' TrainingArguments gives them; a stage's section holds them flat."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps (PPO: rollout + update rounds).")
    batch_size: int = Field(16, ge=1, description="Examples (pairs, prompts) per device per step.")
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps (PPO: none, its rate is constant).")
    logging_steps: int = Field(5, ge=1, description="Steps between logged metrics (PPO logs every step).")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [key for key in data if key in RENAMED_FIELDS and RENAMED_FIELDS[key] in cls.model_fields]
            if old:
                raise ValueError("; ".join(f"{key} is now called {RENAMED_FIELDS[key]}" for key in old))
        return data


class CheckpointedTrainer(TrainerSettings):
    """A trainer that checkpoints (resumes after an interruption) and can trade compute for memory."""

    save_steps: int = Field(50, ge=1, description="Steps between checkpoints (resume after an interruption).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about a third more compute."
    )
    register_model: bool = Field(True, description="Add the model to the MLflow model registry.")


def default(base: type[BaseModel], name: str, value: Any) -> Any:
    """`base`'s field `name` (its constraints and description) with another default."""
    return FieldInfo.merge_field_infos(base.model_fields[name], default=value)


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI. Unset: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name. Unset: the pipeline's name.")


class CacheConfig(Section):
    dir: str = Field(".alignflow/cache", description="Prefect result storage: one file per stage cache key.")
    verify: str = Field(
        "sha256",
        pattern="^(sha256|size)$",
        description="How a cached stage's files are checked before reuse: full content hash, or sizes only "
        "(for multi-GB checkpoints).",
    )


class ExecutionConfig(Section):
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Where every stage's models live: auto (the current CUDA device when there is one, else "
        "the CPU), cpu, cuda or cuda:N. Logged with each model's dtype as params of every stage.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Dtype frozen models (reference, reward, judge, evaluation) are loaded in; trained models "
        "keep float32 weights unless bfloat16 (then trained in bfloat16). auto: bfloat16 on a GPU that "
        "supports it, else float32.",
    )
    launcher: Literal["inline", "accelerate"] = Field(
        "inline",
        description="How training stages (sft, reward_model, dpo, grpo, rloo, ppo) run: inline, in the stage's own "
        "process on one device; accelerate, as one distributed job of num_processes processes (torchrun on "
        "CPUs, `accelerate launch` on GPUs) whose main process alone writes MLflow and the model folder.",
    )
    stage_launchers: dict[str, Literal["inline", "accelerate"]] = Field(
        {}, description="Per-stage override of launcher, e.g. {sft: accelerate, dpo: inline}."
    )
    num_processes: int = Field(2, ge=1, description="Processes of a launched job on each machine (its GPUs, or "
                               "CPU workers), as torchrun's nproc_per_node.")
    num_machines: int = Field(1, ge=1, description="Machines of a launched job. Several need accelerate's "
                              "multi-node settings (machine_rank, main_process_ip) in accelerate_config.")
    accelerate_config: str | None = Field(
        None, description="accelerate's own YAML (DDP, FSDP or DeepSpeed settings), passed to `accelerate launch` "
        "as --config_file; its values win over num_processes and num_machines."
    )
    task_runner: Literal["inline", "thread", "process", "dask"] = Field(
        "inline",
        description="How data stages fan out their work (preference sampling over prompt shards): inline, in "
        "the stage's process; thread, process or dask, one Prefect task per shard on that task runner (dask: "
        "a local cluster of data_workers processes, or the scheduler at dask_address). Rows equal inline ones.",
    )
    data_workers: int = Field(2, ge=1, description="Shards (and threads, processes or local Dask workers) of a "
                              "fanned-out data stage.")
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster, e.g. "
                                     "tcp://10.0.0.5:8786 (task_runner: dask). Unset: a local cluster.")
    parallel_stages: int = Field(
        1,
        ge=1,
        description="Stages that may run at once when their inputs are ready (DPO beside reward model -> PPO). "
        "1: one after another in this process. More: each stage in its own worker process (own RNG); with "
        "execution.device auto and several GPUs each such stage gets the least busy GPU. Never part of a cache key.",
    )


    @model_validator(mode="after")
    def _launchable_stages(self) -> ExecutionConfig:
        unknown = sorted(set(self.stage_launchers) - set(LAUNCHABLE_STAGES))
        if unknown:
            raise ValueError(f"stage_launchers: {unknown} cannot be launched as a distributed job; launchable "
                             f"stages: {list(LAUNCHABLE_STAGES)}")
        return self

    def launcher_of(self, stage: str) -> str:
        if stage not in LAUNCHABLE_STAGES:
            return "inline"
        return self.stage_launchers.get(stage, self.launcher)


LAUNCHABLE_STAGES = ("sft", "reward_model", "dpo", "grpo", "rloo", "ppo")


class CorpusConfig(Section):
    n_streams: int = Field(20000, ge=1, description="Number of few-shot streams (documents) to generate.")
    max_items: int = Field(9, ge=1, description="Most input/output pairs in one stream.")
    description_prob: float = Field(
        0.5, ge=0, le=1, description="Probability that a stream starts with its task line (任务：…)."
    )
    languages: list[str] = Field(["zh", "en"], min_length=1, description="Stream formats: zh (任务/输入/输出), en.")
    families: list[str] | None = Field(None, description="Task families to include. Unset: all.")
    heldout_percent: int = Field(
        20, ge=0, le=90, description="Percent of inputs held out of the corpus for evaluation."
    )

    @model_validator(mode="after")
    def _known_languages(self) -> CorpusConfig:
        unknown = sorted(set(self.languages) - {"zh", "en"})
        if unknown:
            raise ValueError(f"unknown languages {unknown}; use zh and/or en")
        return self


class TokenizerConfig(Section):
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary size, special tokens included.")


class TinyModelConfig(Section):
    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=8, description="Width of the MLP.")
    num_hidden_layers: int = Field(4, ge=1, description="Number of transformer blocks.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model accepts.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Attention dropout.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class PretrainTrainingConfig(TrainerSettings):
    max_steps: int = default(TrainerSettings, "max_steps", 600)
    learning_rate: float = default(TrainerSettings, "learning_rate", 3e-3)
    weight_decay: float = default(TrainerSettings, "weight_decay", 0.1)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 30)
    logging_steps: int = default(TrainerSettings, "logging_steps", 10)
    seq_len: int = Field(256, ge=8, description="Tokens per sequence (documents are packed).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak (cosine).")
    validation_fraction: float = Field(
        0.02, ge=0, lt=0.5, description="Fraction of packed blocks kept out of training for validation loss."
    )


class PretrainConfig(Section):
    """Builds the demo base model: synthetic corpus -> BPE tokenizer -> tiny Llama -> pretraining."""

    corpus: CorpusConfig = CorpusConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: TinyModelConfig = TinyModelConfig()
    training: PretrainTrainingConfig = PretrainTrainingConfig()

    @model_validator(mode="after")
    def _sequence_fits(self) -> PretrainConfig:
        if self.training.seq_len > self.model.max_position_embeddings:
            raise ValueError("training.seq_len exceeds model.max_position_embeddings")
        return self


class TemplatedDatasetConfig(Section):
    path: str = Field(..., description="A .jsonl/.csv/.parquet file, or a `datasets.load_dataset` name or folder.")
    templates: str = Field(..., description="YAML file with task, columns, templates and verbalizers.")
    split: str = Field("train", description="Split to read when `path` goes through datasets.load_dataset.")
    limit: int | None = Field(None, ge=1, description="Convert at most this many rows (first ones).")


class DemoVariantConfig(Section):
    """A demo task family asked with another instruction, as a task of its own."""

    family: str = Field(..., description="The demo task family whose items (train inputs) the rows use.")
    instruction: str = Field(..., min_length=1, description="The instruction every row of this task carries.")


class DemoInstructionsConfig(Section):
    """Instruction rows written from the demo corpus's task families (train inputs only)."""

    families: list[str] | None = Field(None, description="Demo task families to use; None: every family.")
    per_family: int = Field(40, ge=1, description="Rows per family (at most the family's train items).")
    language: Literal["zh", "en"] = Field("zh", description="Language of the instruction (the family description).")
    instructions: dict[str, str] = Field(
        {}, description="Instruction per family, replacing its corpus description: paraphrases the base model never "
        "saw, so following them is what SFT must teach."
    )
    variants: dict[str, DemoVariantConfig] = Field(
        {}, description="More tasks: name -> a family asked with another instruction (e.g. one SFT does not train "
        "on, left for preference optimisation to teach)."
    )
    heldout_percent: int = Field(
        20, ge=0, le=90, description="Must equal pretrain.corpus.heldout_percent: held-out inputs never become rows."
    )


class BuildConfig(Section):
    """Collects instruction rows from human-written seeds and templated datasets."""

    seeds: list[str] = Field(
        ["data/seed/instructions.jsonl"],
        description="Files of human-written rows: basic (task/instruction/input/output) or dialogue (messages).",
    )
    datasets: list[TemplatedDatasetConfig] = Field([], description="Existing datasets converted through templates.")
    demo_families: DemoInstructionsConfig | None = Field(
        None, description="Demo only: instruction rows from the demo task families, so SFT can be checked on "
        "their held-out inputs."
    )
    max_chars: int = Field(20000, ge=1, description="Reject a row whose any field is longer than this.")
    max_rejected_fraction: float = Field(
        0.2, ge=0, le=1, description="Fail the stage if more than this fraction of rows read is rejected."
    )


class ValidateConfig(Section):
    """Final check of the instruction data: schema, rejection budget, data card, train/validation split."""

    validation_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of rows (per task, seeded) held out as the SFT validation split."
    )
    min_rows: int = Field(1, ge=1, description="Fail if fewer valid rows than this remain.")
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1,
        description="Fail if, over the whole data flow, more than this fraction of rows read was rejected.",
    )


class LoraSettings(Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", min_length=1,
        description="Module names that get adapters (e.g. [q_proj, v_proj]; GPT-2 names them c_attn, c_proj), or "
        "all-linear: every linear layer but the output head, whatever the architecture calls them.",
    )


class MixingConfig(Section):
    """Multi-task mixing (T5/FLAN): per-task rates from size, cap, temperature and weights."""

    cap: int | None = Field(
        None, ge=1, description="Examples-proportional mixing cap K: a task counts as at most K rows. None: no cap."
    )
    temperature: float = Field(
        1.0, gt=0, description="Temperature sampling: rate ∝ min(rows, K) ** (1/T). 1: proportional; large: uniform."
    )
    task_weights: dict[str, float] = Field({}, description="Multiplier of a task's rate (tasks not listed: 1).")
    source_weights: dict[str, float] = Field(
        {}, description="Multiplier of rows by source prefix (seed, template, self_instruct, demo; not listed: 1)."
    )

    @field_validator("task_weights", "source_weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        negative = sorted(name for name, value in weights.items() if value < 0)
        if negative:
            raise ValueError(f"weights must be >= 0 (negative: {negative})")
        return weights


class CurriculumConfig(Section):
    """Progressive fine-tuning: phases from easy to hard."""

    order_by: Literal["difficulty", "length", "base_loss"] = Field(
        "length", description="difficulty: task_difficulty below; length: tokens; base_loss: the base model's "
        "loss on the example."
    )
    task_difficulty: dict[str, float] = Field(
        {}, description="order_by difficulty: declared difficulty per task (higher = harder)."
    )
    default_difficulty: float = Field(0.0, description="Difficulty of tasks not in task_difficulty.")
    phases: int = Field(3, ge=1, description="Number of phases (equal shares of the training stream).")
    adaptive: bool = Field(
        False, description="At each phase boundary, re-order the examples still ahead by the current model's loss."
    )


class PlateauConfig(Section):
    """Cut the learning rate when the validation loss stops improving."""

    factor: float = Field(0.5, gt=0, lt=1, description="Multiply the learning rate by this on a plateau.")
    patience: int = Field(2, ge=1, description="Evaluations without a new best validation loss before a cut.")
    threshold: float = Field(0.0, ge=0, description="An improvement smaller than this does not count.")
    min_lr: float = Field(0.0, ge=0, description="Never cut below this learning rate.")


class SFTStageConfig(CheckpointedTrainer):
    """Supervised fine-tuning on the validated instruction data (TRL SFTTrainer)."""

    max_steps: int = default(TrainerSettings, "max_steps", 200)
    batch_size: int = default(TrainerSettings, "batch_size", 8)
    learning_rate: float = default(TrainerSettings, "learning_rate", 5e-4)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 10)
    method: Literal["full", "lora"] = Field("full", description="full: update every weight; lora: adapters.")
    lora: LoraSettings = LoraSettings()
    prompt_with_input: str = Field(
        "指令：{instruction}\n输入：{input}\n输出：", description="Prompt template of basic rows that have an input."
    )
    prompt_without_input: str = Field("指令：{instruction}\n输出：", description="Prompt template of basic rows without input.")
    add_bos: bool = Field(
        False, description="Start basic-format prompts with the BOS token (models pretrained with BOS before every "
        "document, like the demo's). Chat formats follow their template."
    )
    max_length: int = Field(512, ge=8, description="Longest tokenised example; longer ones are cut at the end.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "cosine", description="Decay after warm-up."
    )
    dropout: float | None = Field(None, ge=0, lt=1, description="Override the model's attention dropout.")
    eval_steps: int = Field(25, ge=1, description="Steps between validation-loss evaluations.")
    plateau: PlateauConfig | None = Field(None, description="Learning-rate cuts on a validation-loss plateau.")
    mixing: MixingConfig | None = Field(
        None, description="Multi-task mixing. None: the data as it is (every row once per epoch)."
    )
    curriculum: CurriculumConfig | None = Field(None, description="Curriculum order. None: random order.")



class CleanConfig(Section):
    """Cleans instruction rows: normalisation, filters, exact and near deduplication (notes ch. 2)."""

    punctuation_width: Literal["keep", "fullwidth_in_cjk", "halfwidth"] = Field(
        "keep",
        description="After NFKC: keep punctuation as written, use fullwidth marks next to CJK text (and "
        "halfwidth elsewhere), or make all punctuation halfwidth.",
    )
    min_chars: int = Field(5, ge=0, description="Reject an example whose text (all turns) is shorter than this.")
    max_chars: int = Field(20000, ge=1, description="Reject an example whose text (all turns) is longer than this.")
    max_repetition_ratio: float = Field(
        0.5, ge=0, le=1,
        description="Reject a field whose share of repeated token n-grams exceeds this (tokens: CJK characters "
        "and words; fields under 10 tokens are not checked).",
    )
    repetition_ngram: int = Field(3, ge=1, description="n of the token n-grams the repetition filter counts.")
    cjk_ratio: float = Field(
        0.5, gt=0, le=1,
        description="A text counts as CJK when at least this share of its units (CJK characters, other words) "
        "is CJK.",
    )
    cross_lingual_tasks: list[str] = Field(
        ["translate", "translation"],
        description="Tasks exempt from the language-mismatch filter (the response may be in another script).",
    )
    allowed_labels: dict[str, list[str]] = Field(
        {}, description="Per task, the only outputs allowed (e.g. sentiment: [积极, 消极]). Tasks not listed: any."
    )
    copy_allowed_tasks: list[str] = Field(
        [], description="Tasks whose output may equal the input (e.g. text correction); others are rejected."
    )
    blocklist_path: str | None = Field(
        "data/blocklist.txt",
        description="File of blocked words or phrases, one per line, # comments. None: only blocklist_extra.",
    )
    blocklist_extra: list[str] = Field([], description="More blocked words or phrases, added to the file's.")
    near_dup_threshold: float = Field(
        0.8, gt=0, le=1,
        description="Reject a row whose Jaccard similarity (character shingles) to an earlier kept row reaches "
        "this; MinHash-LSH finds the candidates, their exact shingle sets decide.",
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (signature length).")
    shingle_size: int = Field(5, ge=1, description="Characters per shingle for near-duplicate detection.")
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail the stage if more than this fraction of the rows read is rejected."
    )

class EvaluateConfig(Section):
    """Few-shot sweep over every model the pipeline produced: tasks x k, lm-evaluation-harness scoring."""

    tasks: list[str] = Field(
        ["data/eval/tasks/*.yaml"], min_length=1,
        description="Task YAML files (glob patterns allowed), relative to the project folder.",
    )
    shots: list[int] = Field([0, 1, 2, 4, 8], min_length=1, description="Numbers of demonstrations k to sweep.")
    selection: Literal["random", "first_n", "balanced", "similar"] = Field(
        "random", description="Demonstrations: seeded random per document (lm-evaluation-harness default), the "
        "pool's first k, class-balanced, or nearest neighbours by embedding similarity.",
    )
    ordering: Literal["as_selected", "random", "similarity"] = Field(
        "as_selected", description="Order of the chosen demonstrations (similarity: most similar last).",
    )
    draw: Literal["per_document", "once"] = Field(
        "per_document", description="A new draw for every document, or one draw per task and k shared by all "
        "documents (one shared prefix: fastest).",
    )
    fewshot_seed: int = Field(1234, description="Seed of the demonstration draws (lm-evaluation-harness: 1234).")
    limit: int | None = Field(None, ge=1, description="Score at most this many documents per task.")
    max_length: int | None = Field(
        None, ge=8, description="Context window in tokens. Unset: the model's max_position_embeddings. "
        "Demonstrations that do not fit are dropped whole and counted.",
    )
    add_bos: bool = Field(
        False, description="Prepend the tokenizer's BOS token to every context (the demo model is pretrained "
        "with BOS before each document). lm-evaluation-harness's default is off.",
    )
    batch_tokens: int = Field(8192, ge=64, description="Rows x tokens per forward pass.")
    prefix_cache: bool = Field(
        True, description="Run a prefix shared by several requests (the demonstrations) once and reuse its KV cache.",
    )
    embedder: Literal["auto", "minilm", "tfidf"] = Field(
        "auto", description="Embeddings for similar/similarity: MiniLM (extra alignflow[embeddings]) or TF-IDF.",
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the Wilson interval around each accuracy.")
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads while scoring. Unset: torch's default. 1 is fastest for "
        "tiny models on a shared CPU.",
    )

    @model_validator(mode="after")
    def _shots_valid(self) -> EvaluateConfig:
        if any(k < 0 for k in self.shots) or len(set(self.shots)) != len(self.shots):
            raise ValueError("shots must be distinct numbers >= 0")
        return self


SELF_INSTRUCT_BLOCKLIST = [
    # Wang et al. (2022): tasks a text-only model cannot do.
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot",
    "go to", "video", "audio", "music", "flowchart", "diagram",
    "图片", "图像", "图表", "画图", "绘制", "视频", "音频", "音乐", "文件", "地图", "流程图",
]


class SelfInstructConfig(Section):
    """Self-Instruct (Wang et al., 2022): bootstrap instructions, inputs and outputs from the build pool."""

    generator: str | None = Field(
        None, description="Hub id or local folder of the model that writes instructions and inputs. "
        "Unset: the pretrain stage's model."
    )
    teacher: str | None = Field(
        None, description="Hub id or local folder of a (stronger) model that writes the outputs (distillation). "
        "Unset: the generator writes them."
    )
    human_sources: list[str] | None = Field(
        None, description="Build-table `source` prefixes counted as human-written (the human in-context slots). "
        "Unset: every build row. All build rows are in the similarity pool either way."
    )
    target_count: int = Field(100, ge=1, description="Stop after the round in which this many examples are kept.")
    max_rounds: int = Field(20, ge=1, description="Most rounds, whatever was kept.")
    batch_size: int = Field(16, ge=1, description="Instruction prompts per round (one batched generate call).")
    num_human: int = Field(6, ge=1, description="Human-written instructions in each instruction prompt.")
    num_generated: int = Field(
        2, ge=0, description="Generated instructions (accepted in earlier rounds) in each instruction prompt; "
        "human ones fill in while too few exist."
    )
    rouge_threshold: float = Field(
        0.7, gt=0, le=1, description="Reject an instruction whose ROUGE-L with any pool instruction is >= this."
    )
    min_instruction_chars: int = Field(3, ge=1, description="Shortest accepted instruction, in characters.")
    max_instruction_chars: int = Field(200, ge=1, description="Longest accepted instruction, in characters.")
    blocklist: list[str] = Field(
        SELF_INSTRUCT_BLOCKLIST, description="Reject instructions containing any of these (latin words match "
        "whole words, case-insensitively; other text matches as a substring)."
    )
    temperature: float = Field(0.7, ge=0, description="Sampling temperature for every generation; 0: greedy.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        48, ge=1, description="Most tokens per generated line; a line not ended by then is unparseable."
    )
    seed: int | None = Field(None, description="Seed for sampling prompts and generations. Unset: the pipeline's.")
    instruction_header: str = Field(
        "", description="Text before the in-context instructions (e.g. 'Come up with a series of tasks:\\n\\n')."
    )
    instruction_template: str = Field(
        "任务：{instruction}\n\n", description="One in-context instruction in the instruction prompt. "
        "English: 'Task: {instruction}\\n\\n'."
    )
    instruction_cue: str = Field(
        "任务：", description="Ends the instruction prompt; the model writes a new instruction up to the newline. "
        "English: 'Task:' (no trailing space: byte-level BPE glues the space to the next word)."
    )
    input_template: str = Field(
        "任务：{instruction}\n\n输入：", description="Prompt for an instance's input (generated up to the newline). "
        "English: 'Task: {instruction}\\n\\nInput:'."
    )
    output_template: str = Field(
        "任务：{instruction}\n\n输入：{input}\n输出：", description="Prompt for an instance's output "
        "(generated up to the newline). English: 'Task: {instruction}\\n\\nInput: {input}\\nOutput:'."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SelfInstructConfig:
        if self.min_instruction_chars > self.max_instruction_chars:
            raise ValueError("min_instruction_chars exceeds max_instruction_chars")
        for name, needed in [("instruction_template", {"instruction"}), ("input_template", {"instruction"}),
                             ("output_template", {"instruction", "input"})]:
            template = getattr(self, name)
            try:
                template.format(**dict.fromkeys(needed, ""))
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(f"{name} is not a valid template for the placeholders {sorted(needed)} "
                                 f"({type(error).__name__}: {error}); write literal braces as {{{{ }}}}") from None
            missing = sorted(key for key in needed if "{" + key + "}" not in template)
            if missing:
                raise ValueError(f"{name} must contain the placeholders {missing}")
        return self


class JudgeConfig(Section):
    """A causal LM as judge: score = log P(yes) - log P(no) after a rubric prompt."""

    model: str | None = Field(None, description="Hub id or folder of the judge. None: the SFT model itself.")
    rubric: str = Field(
        "问题：{prompt}\n回答：{response}\n这个回答正确吗？答：",
        description="Rubric prompt with {prompt} and {response}; the judge continues it with the yes or no word.",
    )
    yes: str = Field("是", description="The word for a good response.")
    no: str = Field("否", description="The word for a bad response.")


class PreferenceImportConfig(Section):
    """A public preference dataset read from a file."""

    format: Literal["hh", "ultrafeedback"] = Field(
        ..., description="hh: Anthropic-HH chosen/rejected dialogues; ultrafeedback: scored completions."
    )
    path: str = Field(..., description="JSONL file.")


class PreferencesConfig(Section):
    """Preference pairs: K sampled responses per prompt from the SFT model, annotated, then paired."""

    annotator: Literal["oracle", "rankings_file", "judge", "none"] = Field(
        "oracle", description="oracle: reference-based score (verifiable tasks); rankings_file: human rankings or "
        "scores from a file; judge: a model with a rubric; none: only imported pairs."
    )
    tasks: list[str] | None = Field(
        None, description="Tasks whose validated rows become prompts. None: every task."
    )
    max_prompts: int = Field(200, ge=1, description="Most prompts sampled (the first ones, in a seeded order).")
    num_samples: int = Field(4, ge=2, description="Responses sampled per prompt (K).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(24, ge=1, description="Longest response, in tokens.")
    batch_size: int = Field(32, ge=1, description="Prompts per generate call.")
    pairing: Literal["all_pairs", "best_vs_rest"] = Field(
        "all_pairs", description="Which pairs a ranking gives: every pair with different scores, or the best "
        "against each other response."
    )
    rankings_file: str | None = Field(
        None, description="annotator rankings_file: JSONL or CSV of prompt_id, responses, scores or ranks "
        "(prompt_id = an instruction row id)."
    )
    judge: JudgeConfig = JudgeConfig()
    imports: list[PreferenceImportConfig] = Field([], description="Preference datasets added as they are.")
    heldout_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of prompts (seeded) whose pairs are held out for evaluation."
    )
    eval_prompts: int = Field(
        60, ge=0, description="Held-out prompts with references (from the validation split of the same tasks) for "
        "the policies' win rates."
    )
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail if more than this share of file rows is rejected."
    )

    @model_validator(mode="after")
    def _annotator_inputs(self) -> PreferencesConfig:
        if self.annotator == "rankings_file" and not self.rankings_file:
            raise ValueError("annotator rankings_file needs rankings_file: <path>")
        if self.annotator == "none" and not self.imports:
            raise ValueError("annotator none needs at least one entry in imports")
        return self


class RewardModelConfig(CheckpointedTrainer):
    """Bradley-Terry reward model (TRL RewardTrainer), initialised from the SFT model."""

    use_margin: bool = Field(False, description="Subtract the pair's margin inside the loss (Llama-2 style).")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Push rewards towards zero mean (TRL's auxiliary loss). None: off."
    )
    max_length: int = Field(256, ge=8, description="Longest prompt + response, in tokens.")
    eval_steps: int = Field(25, ge=1, description="Steps between held-out evaluations.")


class DPOStageConfig(CheckpointedTrainer):
    """Direct preference optimisation (TRL DPOTrainer) from the SFT model, the SFT model as reference."""

    beta: float = Field(0.1, gt=0, description="Strength of the implicit KL constraint to the reference.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: DPO; ipo: identity preference optimisation; hinge: SLiC."
    )
    method: Literal["full", "lora"] = Field("full", description="full: update every weight; lora: adapters "
                                            "(the reference is the adapter-disabled model).")
    lora: LoraSettings = LoraSettings()
    learning_rate: float = default(TrainerSettings, "learning_rate", 5e-5)
    max_length: int = Field(256, ge=8, description="Longest prompt + response, in tokens.")
    eval_steps: int = Field(25, ge=1, description="Steps between held-out evaluations.")
    win_rate_max_new_tokens: int = Field(16, ge=1, description="Greedy response length for the win rate.")


class PPOStageConfig(CheckpointedTrainer):
    """PPO with a per-token KL penalty to the SFT policy, against the reward model (alignflow's own).
    warmup_steps and logging_steps are not used: the rate is constant and every round is logged."""

    max_steps: int = default(TrainerSettings, "max_steps", 60)
    batch_size: int = Field(32, ge=2, description="Prompts per rollout.")
    learning_rate: float = default(TrainerSettings, "learning_rate", 1e-5)
    weight_decay: float = default(TrainerSettings, "weight_decay", 0.01)  # torch AdamW's own default
    warmup_steps: Literal[0] = Field(0, description="Not used: PPO's learning rate is constant.")
    logging_steps: Literal[1] = Field(1, description="Not used: every PPO round is logged.")
    save_steps: int = default(CheckpointedTrainer, "save_steps", 10)
    mini_batch_size: int = Field(16, ge=1, description="Responses per gradient step.")
    ppo_epochs: int = Field(2, ge=1, description="Passes over each rollout batch.")
    kl_coef: float = Field(0.05, ge=0, description="beta of the per-token penalty -beta * (log pi - log pi_ref).")
    adaptive_kl: bool = Field(False, description="Adapt beta towards target_kl (Ziegler et al.).")
    target_kl: float = Field(
        6.0, gt=0, description="Per-sequence KL the adaptive controller aims at; the demo check's upper bound."
    )
    kl_horizon: int = Field(10000, ge=1, description="Adaptive controller horizon.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k1", description="Per-token KL estimator in the reward.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clipping.")
    clip_range_value: float = Field(0.2, gt=0, description="Value clipping around the rollout values.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    whiten_advantages: bool = Field(True, description="Normalise advantages per batch.")
    missing_eos_penalty: float | None = Field(
        -1.0, description="Added to the score of a response that never emits eos. None: no penalty."
    )
    max_new_tokens: int = Field(16, ge=1, description="Response length limit.")
    temperature: float = Field(1.0, gt=0, description="Rollout sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Rollout nucleus sampling.")
    sample_every: int = Field(10, ge=1, description="Steps between sample tables (prompt, response, reward).")


class GroupRLStageConfig(CheckpointedTrainer):
    """GRPO or RLOO (TRL) against the reward model: several sampled responses per prompt, advantages
    relative to the group, a KL penalty to the SFT policy."""

    max_steps: int = default(TrainerSettings, "max_steps", 50)
    batch_size: int = Field(16, ge=2, description="Responses per step (a multiple of num_generations).")
    learning_rate: float = default(TrainerSettings, "learning_rate", 1e-5)
    warmup_steps: int = default(TrainerSettings, "warmup_steps", 0)
    save_steps: int = default(CheckpointedTrainer, "save_steps", 25)
    num_generations: int = Field(4, ge=2, description="Responses sampled per prompt (the group).")
    beta: float = Field(0.05, ge=0, description="KL coefficient to the reference (SFT) policy.")
    max_completion_length: int = Field(16, ge=1, description="Response length limit.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")

    @model_validator(mode="after")
    def _groups_fill_batches(self) -> GroupRLStageConfig:
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                             f"({self.num_generations})")
        return self


class StagesConfig(Section):
    """One section per stage; a stage whose section is absent does not run."""

    pretrain: PretrainConfig | None = Field(
        None, description="Pretrain the demo base model. Exclusive with top-level base_model."
    )
    build: BuildConfig | None = Field(None, description="Build instruction data from seeds and datasets.")
    self_instruct: SelfInstructConfig | None = Field(
        None, description="Generate instruction data from the build pool with the generator (and teacher) model."
    )
    clean: CleanConfig | None = Field(None, description="Normalise, filter and deduplicate instruction data.")
    validate_data: ValidateConfig | None = Field(
        None, alias="validate", description="Validate the instruction data, write the data card and the splits."
    )
    sft: SFTStageConfig | None = Field(None, description="Supervised fine-tuning of the base model.")
    preferences: PreferencesConfig | None = Field(
        None, description="Sample responses from the SFT model, annotate them, and build preference pairs."
    )
    reward_model: RewardModelConfig | None = Field(None, description="Train a Bradley-Terry reward model.")
    dpo: DPOStageConfig | None = Field(None, description="Direct preference optimisation of the SFT model.")
    ppo: PPOStageConfig | None = Field(None, description="PPO against the reward model with a KL penalty.")
    grpo: GroupRLStageConfig | None = Field(None, description="GRPO (TRL) against the reward model.")
    rloo: GroupRLStageConfig | None = Field(None, description="RLOO (TRL) against the reward model.")
    evaluate: EvaluateConfig | None = Field(
        None, description="Few-shot evaluation of every model the pipeline produced (tasks x k)."
    )


class BaseModelSource(Section):
    """Where the pipeline's base model comes from: a hub id or folder, or the demo pretraining."""

    base_model: str | None = None
    pretrain: PretrainConfig | None = None


class PipelineConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Pipeline name (experiment, registry).")
    seed: int = Field(0, description="Seed for every stage unless a stage overrides it.")
    base_model: str | None = Field(
        None,
        description="Hub id or local folder of the model to post-train. Unset: the pretrain stage builds one.",
    )
    chat_template: str | None = Field(
        None,
        description="Jinja chat template for the base model's tokenizer, inline or the path of a .jinja file. "
        "Unset: the tokenizer's own; a tokenizer without one gets alignflow's default (role labels, its eos "
        "closing each assistant turn).",
    )
    artifacts_dir: str = Field("artifacts", description="Folder for stage outputs (artifacts/<stage>/<cache key>/).")
    tracking: TrackingConfig = TrackingConfig()
    cache: CacheConfig = CacheConfig()
    execution: ExecutionConfig = ExecutionConfig()
    stages: StagesConfig = StagesConfig()

    @property
    def base_source(self) -> BaseModelSource:
        """The pretrain stage's section (base_model, or stages.pretrain)."""
        return BaseModelSource(base_model=self.base_model, pretrain=self.stages.pretrain)

    @model_validator(mode="after")
    def _one_base_model(self) -> PipelineConfig:
        if self.base_model and self.stages.pretrain:
            raise ValueError("set either base_model or stages.pretrain, not both")
        if not self.base_model and not self.stages.pretrain:
            raise ValueError("set base_model (hub id or folder) or stages.pretrain (build the demo model)")
        return self

    @model_validator(mode="after")
    def _ppo_batches_shard(self) -> PipelineConfig:
        """A launched PPO job splits every rollout and minibatch evenly over its processes."""
        ppo, execution = self.stages.ppo, self.execution
        if ppo is None or execution.launcher_of("ppo") != "accelerate":
            return self
        processes = execution.num_processes * execution.num_machines
        for name in ("batch_size", "mini_batch_size"):
            if getattr(ppo, name) % processes:
                raise ValueError(f"stages.ppo.{name} ({getattr(ppo, name)}) must be a multiple of the launched "
                                 f"job's {processes} processes (execution.num_processes x num_machines)")
        return self
