"""The one door every model and tokenizer alignflow loads comes through.

- Where and how: a `Placement` (device and dtype) resolved from `execution.device` and
  `execution.dtype`; every stage loads its models with it, so a given GPU is used and the dtype is
  the configured one (the demo's CPU float32 is just what `auto` means on a machine without one).
- What a tokenizer needs to serve every stage (`prepare_tokenizer`): a chat template (its own, the
  config's, else `DEFAULT_CHAT_TEMPLATE`), a pad token (eos when it has none), only `input_ids` and
  `attention_mask` as model inputs (a WordPiece tokenizer's `token_type_ids` would reach
  `generate`), and the ids that end a response (`stop_token_ids`): the generation config's eos
  ids, the tokenizer's eos and the template's end-of-turn token.
- A model that cannot be loaded is a `ModelLoadError` naming it and the cause, in one line.
- A mixture-of-experts configuration that counts its experts as `num_local_experts` only also
  answers to `num_experts` (`alias_expert_count`), as Mixtral's does: TRL's MoE load-balancing
  loss reads that name. A model loaded to generate or score, and every model alignflow saves, has
  `output_router_logits` off (`router_logits_off`): TRL turns it on for training, and a model
  that keeps it on computes that loss in every `generate` step, where the router sees one new
  token and the attention mask all of them (a shape error in Mixtral-style models).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignflow.distributed import is_main_process, local_rank, world_size
from alignflow.errors import ModelLoadError

DTYPES = ("auto", "float32", "bfloat16", "float16")

# For tokenizers that ship without a chat template (many base models). Plain role labels, and the
# tokenizer's own eos closes each assistant turn, so no new token (and no embedding resize) is
# needed; {% generation %} marks what assistant-only losses train on.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ (message['role'] | capitalize) + ': ' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)


# --- where models live ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """The device and dtype a stage's models are loaded with.

    `dtype` is what frozen models (reference, reward, judge, evaluation) are loaded in. A model that
    is trained keeps float32 master weights unless the dtype is bfloat16 (trained as is, as TRL's
    examples do); float16 is then mixed precision (`train_dtype`, `trainer_precision`).
    """

    device: str  # "cpu", "cuda", "cuda:1", ...
    dtype: str  # "float32", "bfloat16", "float16"

    @property
    def torch_device(self):
        import torch

        return torch.device(self.device)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def train_dtype(self) -> str:
        return "bfloat16" if self.dtype == "bfloat16" else "float32"

    def params(self) -> dict[str, str]:
        return {"device": self.device, "dtype": self.dtype, "train_dtype": self.train_dtype}


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """`auto` device: the current CUDA device when there is one (in a launched job on GPUs, the
    rank's own, LOCAL_RANK), else the CPU. `auto` dtype:
    bfloat16 on a GPU that computes in it natively (`auto_dtype`), else float32 (float16 on CPU is
    refused: too slow and lossy)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available() and world_size() > 1:
        device = f"cuda:{local_rank()}"  # a launched job: every rank owns its GPU
    if device == "auto":
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"execution.device {device!r}: no CUDA device is available on this machine "
                                 "(torch.cuda.is_available() is False); use auto or cpu")
        index = int(device.partition(":")[2] or torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"execution.device {device!r}: this machine has {torch.cuda.device_count()} "
                                 "CUDA device(s)")
        device = f"cuda:{index}"
    on_gpu = device.startswith("cuda")
    if dtype == "auto":
        dtype = auto_dtype(torch.cuda.get_device_capability(device) if on_gpu else None, bool(torch.version.hip))
    if dtype == "float16" and not on_gpu:
        raise ModelLoadError("execution.dtype float16 needs a CUDA device; on CPU use float32 or bfloat16")
    return Placement(device, dtype)


def auto_dtype(capability: tuple[int, int] | None, rocm: bool = False) -> str:
    """What `execution.dtype: auto` means on a device of this CUDA compute `capability` (None: the
    CPU): bfloat16 where the GPU computes in it natively (NVIDIA Ampere, 8.0, or newer; AMD's), else
    float32. torch's `is_bf16_supported()` also says yes to a T4 or V100, which only emulate it,
    slowly; float16 stays an explicit choice (it needs loss scaling and may overflow)."""
    if capability is None:
        return "float32"
    return "bfloat16" if rocm or capability[0] >= 8 else "float32"


def activate(placement: Placement) -> None:
    """Make `placement`'s GPU the current one, so that what TRL's trainers (and accelerate) call
    "cuda" is that device."""
    if placement.device.startswith("cuda"):
        import torch

        torch.cuda.set_device(placement.torch_device)


def stage_placement(config) -> Placement:
    """The placement of every model a stage loads (`execution.device`, `execution.dtype`), made current."""
    placement = resolve_placement(config.execution.device, config.execution.dtype)
    activate(placement)
    return placement


def trainer_precision(placement: Placement, gradient_checkpointing: bool = False) -> dict:
    """The device and precision arguments every TRL config needs (TRL defaults to bf16 and activation
    checkpointing, which on CPU are slow or unsupported)."""
    on_gpu = placement.device.startswith("cuda")
    return {"use_cpu": not on_gpu, "bf16": placement.dtype == "bfloat16",
            "fp16": placement.dtype == "float16", "activation_checkpointing": gradient_checkpointing,
            "report_to": "none", "disable_tqdm": True, "dataloader_num_workers": 0,
            "ddp_find_unused_parameters": False}  # every trained parameter takes part in each step


def model_placement(model) -> dict[str, str]:
    """Where a loaded model's parameters actually are (for params and tests)."""
    parameter = next(iter(model.parameters()))
    return {"device": str(parameter.device), "dtype": str(parameter.dtype).removeprefix("torch.")}


# --- loading ----------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:400] + "...") if len(text) > 400 else text or type(error).__name__


@contextmanager
def model_errors(name_or_path: str, what: str = "model") -> Iterator[None]:
    """Turn what transformers, huggingface_hub and safetensors raise for an unusable model into one
    ModelLoadError naming the model and the cause."""
    from safetensors import SafetensorError

    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError, RuntimeError) as error:
        raise ModelLoadError(f"{what} {name_or_path!r} cannot be loaded: {_one_line(error)}") from None


def require_local_model(name_or_path: str, *, weights: bool = True, what: str = "model") -> None:
    """Raise the ModelLoadError of `local_model_problem` (weights=False: a folder a tokenizer can come
    from, checked before loading only the tokenizer)."""
    problem = local_model_problem(name_or_path, weights=weights)
    if problem:
        raise ModelLoadError(f"{what} {name_or_path!r} cannot be loaded: {problem}")


def local_model_problem(name_or_path: str, *, weights: bool = True) -> str | None:
    """Why a local folder cannot be a model, found without loading it; None for a folder that looks
    usable, or for a name that is not a local path (a hub id is checked by loading it). With
    `weights` False the weight files are not looked at."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return "it is a file, not a model folder"
    if not path.is_dir():
        looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
        return "no such folder" if looks_local else None
    if not any(path.iterdir()):
        return "the folder is empty"
    if not (path / "config.json").is_file():
        return "the folder has no config.json"
    if not weights or (path / "adapter_config.json").is_file():
        return None  # (a PEFT adapter: its base model is loaded through it)
    weights = [*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.safetensors.index.json")]
    if not weights:
        return "the folder has a config.json but no weights (*.safetensors or pytorch_model.bin)"
    for file in path.glob("*.safetensors"):
        problem = _safetensors_problem(file)
        if problem:
            return f"{file.name} is not a readable safetensors file ({problem})"
    return None


def _safetensors_problem(file: Path) -> str | None:
    """Read the header of a safetensors file (cheap: no tensor data) and check the sizes add up."""
    try:
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > 100_000_000:
                return "bad header length"
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:
        return _one_line(error)
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + size + max(ends, default=0)
    actual = file.stat().st_size
    return None if actual == expected else f"{actual} bytes, the header describes {expected}"


def check_causal_lm(name_or_path: str, revision: str | None = None, what: str = "model") -> dict[str, Any]:
    """Everything about a base model (or another causal LM, `what` the config calls it) that can be
    checked without loading its weights: the folder, the weights' headers, the config (a causal LM
    architecture) and the tokenizer (of a hub id: at `revision`). Returns what a run records about
    it; raises ModelLoadError naming the model and the cause."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    named = name_or_path if revision is None else f"{name_or_path}@{revision}"
    require_local_model(name_or_path, what=what)
    with model_errors(named, what):
        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"{what} {named!r} cannot be loaded: its config is a {config.model_type!r} "
                             "model, which has no causal-LM head (AutoModelForCausalLM does not support it)")
    with model_errors(named, f"tokenizer of {what}"):
        AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    return {"base_model": name_or_path, "model_type": config.model_type,
            "architectures": getattr(config, "architectures", None)}


# What from_pretrained reads for a causal LM and its tokenizer: top-level files only (not the
# original/ checkpoints, ONNX or GGUF exports some repos carry), PyTorch pickles only where a repo
# has no safetensors.
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"]


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of hub model `repo_id` at `revision` (branch, tag or commit; unset: main),
    downloaded into the Hugging Face cache where needed (offline: found there). The folder is named
    by its commit, and its files never change: stages that load it load the same model."""
    from huggingface_hub import snapshot_download

    named = repo_id if revision is None else f"{repo_id}@{revision}"
    with model_errors(named):
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES, ignore_patterns=["*/*"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=[*HUB_FILES, "*.bin"],
                                            ignore_patterns=["*/*"]))
    return folder


def pinned_model(name_or_path: str, revision: str | None = None) -> tuple[str, str | None]:
    """(folder to load, commit): a local folder as given (no commit); a hub id's snapshot at
    `revision` and the commit it names, which the stage records, so what it loaded is known."""
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path, None
    folder = hub_snapshot(name_or_path, revision)
    return str(folder), folder.name


# from_pretrained builds models under process-wide patches of torch (empty "meta" weights): two
# threads loading at once (a thread task runner's shards) corrupt each other's models.
_LOADING = threading.Lock()


def load_causal_lm(name_or_path: str, placement: Placement, *, trainable: bool = False, **kwargs):
    """A causal LM on `placement`'s device: frozen in its dtype (eval mode), or trainable in its
    training dtype. `kwargs` go to from_pretrained (e.g. dropout overrides)."""
    from transformers import AutoModelForCausalLM

    dtype = placement.train_dtype if trainable else placement.dtype
    require_local_model(name_or_path)
    with model_errors(name_or_path), _LOADING:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    alias_expert_count(model.config)
    if not trainable:
        router_logits_off(model.config)
    model.to(placement.torch_device)
    return model if trainable else model.eval()


def alias_expert_count(config) -> None:
    """Let `config.num_experts` read `num_local_experts` where only the latter exists (Granite MoE
    and Granite 4 hybrids, Phi-3.5-MoE, Llama 4 in transformers 5): TRL's trainers add the MoE
    load-balancing loss for every config with `output_router_logits` and read the expert count as
    `text_config.num_experts`, an AttributeError on these. The alias goes into the configuration
    class's own `attribute_map`, the way Mixtral's configuration declares it, so nothing new is
    written into a saved config.json."""
    for part in _config_parts(config):
        cls = type(part)
        names = set(vars(part)) | set(cls.attribute_map)
        if "num_local_experts" in vars(part) and "num_experts" not in names:
            cls.attribute_map = {**cls.attribute_map, "num_experts": "num_local_experts"}


def router_logits_off(config) -> None:
    """Turn off a mixture-of-experts model's router outputs (and so its load-balancing loss): a
    training term, which TRL's trainers switch on in the model's config for the run."""
    for part in _config_parts(config):
        if getattr(part, "output_router_logits", False):
            part.output_router_logits = False


def _config_parts(config) -> list:
    """The configuration and its text configuration (one object for a plain causal LM)."""
    try:
        text = config.get_text_config()
    except ValueError:  # several text configs (an encoder-decoder): none is the causal LM's
        text = config
    return [config] if text is config else [config, text]


def load_reward_model(name_or_path: str, placement: Placement, tokenizer, *, trainable: bool = False):
    """A one-label sequence classifier (reward or value model) on `placement`, its pad id set from
    the prepared tokenizer (the score is read at the last non-pad token). An architecture without
    a sequence-classification class in transformers gets alignflow's (alignflow.models.score_head)."""
    from transformers import AutoConfig

    from alignflow.models.score_head import sequence_classifier_class

    dtype = placement.train_dtype if trainable else placement.dtype
    require_local_model(name_or_path)
    with model_errors(name_or_path, "reward model"), _LOADING:
        classifier = sequence_classifier_class(AutoConfig.from_pretrained(name_or_path))
        model = classifier.from_pretrained(name_or_path, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(placement.torch_device)
    return model if trainable else model.eval()


def save_model(model, tokenizer, folder: Path) -> Path:
    """`save_pretrained` of a trained model and its tokenizer, the generation config naming every stop
    id and the pad id, so that any tool that loads the folder stops where alignflow does."""
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.eos_token_id = response_stop_ids(tokenizer)
        generation.pad_token_id = tokenizer.pad_token_id
    router_logits_off(model.config)
    state = full_state_dict(model)
    if state is None:
        model.save_pretrained(folder)
    elif is_main_process():  # the other ranks of a sharded model hold no full copy to write
        model.save_pretrained(folder, state_dict=state)
    tokenizer.save_pretrained(folder)
    return folder


def full_state_dict(model) -> dict | None:
    """None for a model whose weights this process holds whole. For one sharded by FSDP2 (DTensor
    parameters, as `accelerate launch` with an FSDP config leaves TRL's models), the full state dict
    gathered onto the main process's CPU; a collective, so every rank of the job calls it."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # the gathered copies of tied weights no longer share memory: keep each parameter once, as
    # save_pretrained does (named_parameters lists a tied one under its first name only)
    kept = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
    return {name: value for name, value in state.items() if name in kept}


def reward_model_and_tokenizer(name_or_path: str, placement: Placement, *, trainable: bool = False):
    """A one-output sequence classifier from a causal LM folder (or a reward model) and its prepared
    tokenizer: the reward model stage, PPO's value and reward models, GRPO/RLOO's reward."""
    tokenizer = load_tokenizer(name_or_path)
    return load_reward_model(name_or_path, placement, tokenizer, trainable=trainable), tokenizer


# --- tokenizers ---------------------------------------------------------------------------------------


@dataclass
class TokenizerSetup:
    """What `prepare_tokenizer` chose, logged as params so a run says how it treated the tokenizer."""

    chat_template: str  # "own", "config" or "default"
    pad_token: str  # "own" or "eos"
    eos_token: str  # "own", or where it came from when the tokenizer had none
    stop_token_ids: list[int] = field(default_factory=list)

    def params(self) -> dict[str, str]:
        return {"tokenizer.chat_template": self.chat_template, "tokenizer.pad_token": self.pad_token,
                "tokenizer.eos_token": self.eos_token, "tokenizer.stop_token_ids": json.dumps(self.stop_token_ids)}


def template_text(value: str | None) -> str | None:
    """`chat_template` from the config: inline Jinja, or the path of a file holding it."""
    if value and "{" not in value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"chat_template {value!r}: no such file (give a template inline or a file path)")
        return path.read_text(encoding="utf-8")
    return value


def load_tokenizer(name_or_path: str, chat_template: str | None = None):
    """The tokenizer of a model, prepared for every stage (see `prepare_tokenizer`); `chat_template`
    is inline Jinja or a file's path."""
    from transformers import AutoTokenizer, GenerationConfig

    require_local_model(name_or_path, weights=False)
    with model_errors(name_or_path, "tokenizer of"):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    try:
        generation = GenerationConfig.from_pretrained(name_or_path)
    except (OSError, ValueError):
        generation = None
    prepare_tokenizer(tokenizer, template_text(chat_template), generation)
    return tokenizer


def prepare_tokenizer(tokenizer, chat_template: str | None = None, generation_config=None) -> TokenizerSetup:
    """Give `tokenizer` what the stages rely on, in place; the choices are returned and also kept on
    the tokenizer (`alignflow_setup`). `chat_template` (from the config) wins over the tokenizer's."""
    eos_source = "own"
    if tokenizer.eos_token is None:
        candidates = [(_token(tokenizer, i), "generation_config") for i in _as_list(
            getattr(generation_config, "eos_token_id", None))] + [(tokenizer.sep_token, "sep_token")]
        token, eos_source = next(((t, s) for t, s in candidates if t), (None, ""))
        if token is None:
            raise ModelLoadError("the tokenizer has no eos token, no sep token and the model's generation config "
                                 "names none: alignflow cannot tell where a response ends")
        tokenizer.eos_token = token
    template_source = "own"
    if chat_template:
        tokenizer.chat_template, template_source = chat_template, "config"
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template, template_source = DEFAULT_CHAT_TEMPLATE, "default"
    pad_source = "own"
    if tokenizer.pad_token is None:
        tokenizer.pad_token, pad_source = tokenizer.eos_token, "eos"
    # Only what every causal LM's forward and generate accept (no token_type_ids).
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    setup = TokenizerSetup(template_source, pad_source, eos_source,
                           stop_token_ids(tokenizer, generation_config))
    tokenizer.alignflow_setup = setup
    return setup


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Every id that ends a response: the tokenizer's eos, the generation config's eos id(s) (Llama 3
    lists several) and the token that closes an assistant turn in the chat template (ChatML's
    `<|im_end|>` while eos is `<|endoftext|>`, as in Qwen's base models)."""
    ids = [tokenizer.eos_token_id, *_as_list(getattr(generation_config, "eos_token_id", None))]
    turn_end = _turn_end_token(tokenizer)
    if turn_end is not None:
        ids.append(turn_end)
    return list(dict.fromkeys(i for i in ids if i is not None))


def response_stop_ids(tokenizer) -> list[int]:
    """The stop ids `prepare_tokenizer` found (the eos id alone for a tokenizer it never saw)."""
    setup = getattr(tokenizer, "alignflow_setup", None)
    return list(setup.stop_token_ids) if setup else [tokenizer.eos_token_id]


def _turn_end_token(tokenizer) -> int | None:
    """The single token that follows the assistant's text in the rendered template, if there is one."""
    marker = "ALIGNFLOWMARKER"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render is reported where it is used
        return None
    after = text.split(marker, 1)[-1].strip()
    if not after:
        return None
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids[0] if ids and ids[0] in special else None


def _token(tokenizer, token_id: int | None) -> str | None:
    return tokenizer.convert_ids_to_tokens(token_id) if token_id is not None else None


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
