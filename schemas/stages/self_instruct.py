"""The self_instruct stage's section (tasks/self_instruct.py): generation and screening."""

from __future__ import annotations

from pydantic import Field, model_validator

from alignflow.schemas.trainer import Section

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
