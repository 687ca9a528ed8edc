from pathlib import Path

import pytest
import yaml
from helpers import REPO

from alignflow.cli import main
from alignflow.pipeline.config import ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_validate():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        config = load_config(path)
        assert config.name


def test_wrong_type_names_file_and_key_path(tmp_path):
    path = write(tmp_path, "name: x\nstages:\n  pretrain:\n    training:\n      learning_rate: fast\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert "stages.pretrain.training.learning_rate: Input should be a valid number" in message


def test_unknown_key_is_an_error(tmp_path):
    path = write(tmp_path, "name: x\nstages:\n  pretrain:\n    training:\n      learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"stages\.pretrain\.training\.learning_rat: Extra inputs are not permitted"):
        load_config(path)


def test_an_old_field_name_says_the_new_one(tmp_path):
    path = write(tmp_path, "name: x\nstages:\n  pretrain:\n    training:\n      steps: 5\n      grad_clip: 1.0\n"
                           "  ppo:\n    steps: 3\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "stages.pretrain.training: steps is now called max_steps; grad_clip is now called max_grad_norm" in message
    assert "stages.ppo: steps is now called max_steps" in message


def test_trainers_share_one_set_of_names():
    from alignflow.schemas.stages.dpo import DPOStageConfig
    from alignflow.schemas.stages.group_rl import GroupRLStageConfig
    from alignflow.schemas.stages.ppo import PPOStageConfig
    from alignflow.schemas.stages.pretrain import PretrainTrainingConfig
    from alignflow.schemas.stages.reward_model import RewardModelConfig
    from alignflow.schemas.stages.sft import SFTStageConfig
    from alignflow.schemas.trainer import TrainerSettings

    shared = set(TrainerSettings.model_fields)
    for trainer in (PretrainTrainingConfig, SFTStageConfig, RewardModelConfig, DPOStageConfig, PPOStageConfig,
                    GroupRLStageConfig):
        assert issubclass(trainer, TrainerSettings) and shared <= set(trainer.model_fields)
    assert DPOStageConfig().weight_decay == 0.0 and PPOStageConfig().max_steps == 60
    with pytest.raises(ValueError, match="method"):
        SFTStageConfig(method="qlora")


def test_every_problem_is_listed(tmp_path):
    path = write(tmp_path, "name: x\nsed: 1\nstages:\n  pretrain:\n    model:\n      hidden_size: -3\n")
    message = str(pytest.raises(ConfigError, load_config, path).value)
    assert "sed: Extra inputs" in message
    assert "stages.pretrain.model.hidden_size: Input should be greater than or equal to 8" in message


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "name: x\nstages: [\n")
    with pytest.raises(ConfigError, match=r"pipeline\.yaml:\d+:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="either base_model or stages.pretrain"):
        parse_config({"name": "x", "base_model": "gpt2", "stages": {"pretrain": {}}})
    with pytest.raises(ConfigError, match="set base_model"):
        parse_config({"name": "x"})
    with pytest.raises(ConfigError, match="seq_len exceeds"):
        parse_config({"name": "x", "stages": {"pretrain": {"training": {"seq_len": 999},
                                                           "model": {"max_position_embeddings": 64}}}})


def test_a_revision_belongs_to_a_hub_base_model(tmp_path):
    assert parse_config({"name": "x", "base_model": "org/m", "base_model_revision": "v1"}).base_source \
        .base_model_revision == "v1"
    with pytest.raises(ConfigError, match="base_model_revision is the revision of a hub base_model"):
        parse_config({"name": "x", "base_model_revision": "v1", "stages": {"pretrain": {}}})
    with pytest.raises(ConfigError, match="is a local folder, which has no revisions"):
        parse_config({"name": "x", "base_model": str(tmp_path), "base_model_revision": "v1"})
    with pytest.raises(ConfigError, match="judge.revision is the revision of a hub judge.model"):
        parse_config({"name": "x", "base_model": "org/m",
                      "stages": {"preferences": {"annotator": "judge", "judge": {"revision": "v1"}}}})


def test_config_is_frozen():
    config = parse_config({"name": "x", "base_model": "some/model"})
    with pytest.raises(ValueError):
        config.seed = 3  # type: ignore[misc]


def test_every_field_has_a_description():
    from alignflow.schemas.config import PipelineConfig
    from alignflow.schemas.trainer import Section

    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            annotation = field.annotation
            nested = [a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, Section)]
            if nested:
                missing += [f"{name}.{m}" for sub in nested for m in walk(sub)]
            elif not field.description:
                missing.append(name)
        return missing

    assert walk(PipelineConfig) == []


def test_cli_validate(tmp_path, capsys):
    assert main(["validate", str(REPO / "configs" / "smoke.yaml")]) == 0
    assert "stages: pretrain" in capsys.readouterr().out
    bad = write(tmp_path, "name: x\nstages:\n  pretrain:\n    tokenizer:\n      vocab_size: many\n")
    assert main(["validate", str(bad)]) == 2
    assert "stages.pretrain.tokenizer.vocab_size: Input should be a valid integer" in capsys.readouterr().err


def test_each_stage_section_sits_in_the_schemas_module_of_its_stage_name():
    """tasks/<stage>.py takes its section from schemas/stages/<stage>.py (GRPO and RLOO share one)."""
    import importlib
    import typing

    from alignflow.pipeline.stage import Stage

    shared = {"grpo": "group_rl", "rloo": "group_rl"}
    found = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "tasks").glob("*.py")):
        module = importlib.import_module(f"alignflow.tasks.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, Stage) and value.fn.__module__ == module.__name__:
                section = next(iter(typing.get_type_hints(value.fn).values()))
                found[path.stem] = section.__module__
    assert len(found) == 13
    assert found == {name: f"alignflow.schemas.stages.{shared.get(name, name)}" for name in found}


def sweep_config(sweeps: dict) -> dict:
    data = yaml.safe_load(Path("configs/smoke.yaml").read_text(encoding="utf-8"))
    data["stages"]["dpo"] = {"beta": 0.1}
    data["sweeps"] = sweeps
    return data


def test_sweep_points_change_one_field_and_are_not_registered():
    from alignflow.schemas.config import PipelineConfig

    config = PipelineConfig.model_validate(sweep_config({"dpo": {"beta": [0.05, 0.3], "loss_type": ["ipo"]}}))
    points = config.sweep_points("dpo")
    assert [label for label, _ in points] == ["beta-0.05", "beta-0.3", "loss_type-ipo"]
    assert [(s.beta, s.loss_type, s.register_model) for _, s in points] == [
        (0.05, "sigmoid", False), (0.3, "sigmoid", False), (0.1, "ipo", False)]
    assert config.stages.dpo.register_model and config.sweep_points("ppo") == []


def test_pretrain_sweep_points_set_a_nested_field():
    """sweeps: {pretrain: {model.num_hidden_layers: [2, 3]}}: one more base model per value (the model
    sizes of the in-context learning curves), the rest of the section as configured."""
    from alignflow.schemas.config import PipelineConfig

    config = PipelineConfig.model_validate(sweep_config({"pretrain": {"model.num_hidden_layers": [2, 3],
                                                                      "training.max_steps": [20]}}))
    points = config.sweep_points("pretrain")
    assert [label for label, _ in points] == ["model.num_hidden_layers-2", "model.num_hidden_layers-3",
                                              "training.max_steps-20"]
    assert [(s.model.num_hidden_layers, s.training.max_steps) for _, s in points] == [(2, 12), (3, 12), (1, 20)]
    assert points[0][1].model.hidden_size == config.stages.pretrain.model.hidden_size
    assert config.stages.pretrain.model.num_hidden_layers == 1, "the configured section is untouched"


@pytest.mark.parametrize(("sweeps", "message"), [
    ({"sft": {"learning_rate": [0.1]}}, "sweeps.sft: only pretrain, dpo, ppo, grpo, rloo can be swept"),
    ({"pretrain": {"model.layers": [2]}}, "sweeps.pretrain.model.layers: stages.pretrain has no field model.layers"),
    ({"pretrain": {"model.hidden_size": [33]}}, r"sweeps.pretrain.model.hidden_size: 33 is not valid .*divisible"),
    ({"ppo": {"kl_coef": [0.1]}}, "sweeps.ppo: stages.ppo is not configured"),
    ({"dpo": {"betta": [0.1]}}, "sweeps.dpo.betta: stages.dpo has no field betta"),
    ({"dpo": {"beta": []}}, "sweeps.dpo.beta: give at least one value"),
    ({"dpo": {"beta": [-1]}}, r"sweeps.dpo.beta: -1 is not valid \(Input should be greater than 0\)"),
])
def test_a_bad_sweep_names_stage_field_and_value(sweeps, message):
    from alignflow.schemas.config import PipelineConfig

    with pytest.raises(ValueError, match=message):
        PipelineConfig.model_validate(sweep_config(sweeps))


def test_set_overrides_one_value_typed_and_validated():
    path = REPO / "configs" / "demo.yaml"
    config = load_config(path, ["stages.dpo.beta=0.2", "seed=1", "stages.evaluate.shots=[0, 4]",
                                "sweeps.ppo.kl_coef=[0.1]"])
    assert config.stages.dpo.beta == 0.2 and config.seed == 1 and config.stages.evaluate.shots == [0, 4]
    assert [label for label, _ in config.sweep_points("ppo")] == ["kl_coef-0.1"]
    assert load_config(path).stages.dpo.beta == 0.1, "the file itself is untouched"
    assert load_config(path, ["stages.dpo.beta=0.1"]) == load_config(path), "same value, same config"


@pytest.mark.parametrize(("override", "message"), [
    ("stages.dpo.betaa=0.2", "stages.dpo.betaa: Extra inputs are not permitted"),
    ("stages.dpo.beta=large", "stages.dpo.beta: Input should be a valid number"),
    ("stages.dpo.beta=-1", "stages.dpo.beta: Input should be greater than 0"),
    ("seed", "--set seed: expected KEY.PATH=VALUE"),
    ("name.first=1", "--set name.first=1: name is 'demo', not a mapping of keys"),
    ("stages.dpo.beta=[1", "--set stages.dpo.beta=[1: the value is not YAML"),
])
def test_a_bad_override_names_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(REPO / "configs" / "demo.yaml", [override])
    assert message in str(error.value)


def test_cli_validate_with_set(capsys):
    smoke = str(REPO / "configs" / "smoke.yaml")
    assert main(["validate", smoke, "--set", "stages.sft.max_steps=3"]) == 0
    assert main(["validate", smoke, "--set", "stages.sft.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "with --set stages.sft.max_step=3" in err and "stages.sft.max_step: Extra inputs" in err


def test_the_icl_study_pretrains_on_streams_as_long_as_its_many_shot_prompts():
    """Many-shot k = 64 is in distribution for configs/icl.yaml's base model: its corpus has streams of
    64 items, and a 64-item stream of short (word) items fits one pretraining block and the context."""
    from alignflow.data.families import build_families
    from alignflow.demo.corpus import generate_streams
    from alignflow.demo.tokenizer import train_tokenizer

    config = load_config(REPO / "configs" / "icl.yaml")
    pretrain, shots = config.stages.pretrain, config.stages.evaluate.shots
    rows = list(generate_streams(**{**pretrain.corpus.model_dump(), "n_streams": 2000}, seed=0))
    assert max(row["n_items"] for row in rows) == max(shots) == 64
    tokenizer = train_tokenizer((row["text"] for row in rows), pretrain.tokenizer.vocab_size)
    word_families = {name for name, family in build_families().items() if family.kind == "word"}
    longest = max(len(tokenizer(row["text"])["input_ids"]) for row in rows
                  if row["family"] in word_families and row["n_items"] == 64)
    assert longest <= pretrain.training.seq_len <= pretrain.model.max_position_embeddings
