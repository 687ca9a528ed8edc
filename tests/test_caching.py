import json

from alignflow.pipeline.caching import (
    code_digest,
    gone_output,
    module_closure,
    stage_cache_key,
    verify_manifest,
    write_manifest,
)


def key(**overrides):
    options = dict(stage="sft", section_digest="c1", input_digests={"pretrain": "d1"}, code="k1")
    options.update(overrides)
    return stage_cache_key(**options)


def test_key_changes_with_each_ingredient_only():
    base = key()
    assert key() == base
    assert key(section_digest="c2") != base
    assert key(input_digests={"pretrain": "d2"}) != base
    assert key(code="k2") != base
    assert key(stage="dpo") != base
    assert base.startswith("sft-")


def test_code_digest_follows_module_source():
    assert code_digest(("alignflow.pipeline.caching",)) == code_digest(("alignflow.pipeline.caching",))
    assert code_digest(("alignflow.pipeline.caching",)) != code_digest(("alignflow.pipeline.config",))


def test_manifest_detects_missing_resized_and_altered_files(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 64)
    (tmp_path / "card.md").write_text("hello")
    digest = write_manifest(tmp_path)
    assert verify_manifest(tmp_path, digest) is None
    assert "other outputs" in verify_manifest(tmp_path, "0" * 64)

    (tmp_path / "card.md").write_text("hellO")  # same size, other content
    assert "changed content" in verify_manifest(tmp_path, digest)
    assert verify_manifest(tmp_path, digest, mode="size") is None
    (tmp_path / "card.md").write_text("hello!")
    assert "changed size" in verify_manifest(tmp_path, digest, mode="size")
    (tmp_path / "card.md").write_text("hello")
    (tmp_path / "model" / "weights.bin").unlink()
    assert "weights.bin is missing" in verify_manifest(tmp_path, digest)
    (tmp_path / "manifest.json").write_text("{not json")
    assert "not valid JSON" in verify_manifest(tmp_path, digest)
    (tmp_path / "manifest.json").unlink()
    assert "manifest.json is missing" in verify_manifest(tmp_path, digest)


def test_manifest_digest_depends_on_content(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    first = write_manifest(tmp_path)
    (tmp_path / "a.txt").write_text("two")
    assert write_manifest(tmp_path) != first
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["files"]) == ["a.txt"]


def write_package(root, files):
    for name, source in files.items():
        (root / name).write_text(source)


def test_code_digest_follows_real_imports_two_hops_away(tmp_path, monkeypatch):
    package = tmp_path / "fakestage"
    package.mkdir()
    write_package(package, {
        "__init__.py": "",
        "stage.py": "def run():\n    from fakestage.helpers import step  # lazy, as stages import torch code\n    return step()\n",
        "helpers.py": "from .maths import scale\n\n\ndef step():\n    return scale(2)\n",
        "maths.py": "def scale(x):\n    return 3 * x\n",
        "unused.py": "X = 1\n",
        "loud.py": "raise RuntimeError('imported')\n\n\ndef shout():\n    return 1\n",
        "caller.py": "from fakestage.loud import shout\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    closure = module_closure({"fakestage.stage"}, package="fakestage")
    assert closure == ("fakestage.helpers", "fakestage.maths", "fakestage.stage")
    before = code_digest(closure)

    (package / "unused.py").write_text("X = 2\n")
    assert code_digest(module_closure({"fakestage.stage"}, package="fakestage")) == before
    (package / "maths.py").write_text("def scale(x):\n    return 4 * x\n")
    assert code_digest(module_closure({"fakestage.stage"}, package="fakestage")) != before

    # a new import is followed too (the parse is redone when the file changes)
    (package / "helpers.py").write_text("from .maths import scale\nfrom . import unused\n\n\ndef step():\n    return 1\n")
    assert "fakestage.unused" in module_closure({"fakestage.stage"}, package="fakestage")
    # read, never imported: a module that fails on import is still followed
    assert module_closure({"fakestage.caller"}, package="fakestage") == ("fakestage.caller", "fakestage.loud")


def test_stage_code_is_what_the_stage_imports():
    from alignflow.tasks.ppo import train_ppo
    from alignflow.tasks.sft import train_sft

    modules = train_ppo.modules
    # PPO's headline metrics and its maths are part of its key; the orchestration is not
    assert {"alignflow.tasks.ppo", "alignflow.evaluation.comparisons", "alignflow.rl.ppo_math", "alignflow.models.loading"} <= set(modules)
    assert not {"alignflow.pipeline.runner", "alignflow.cli", "alignflow.tasks"} & set(modules)
    assert "alignflow.evaluation.comparisons" not in train_sft.modules  # SFT does not recompute when PPO's code changes


def test_model_cards_are_listed_but_not_part_of_the_digest(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x01" * 8)
    (tmp_path / "model" / "README.md").write_text("run id 1")
    first = write_manifest(tmp_path)
    (tmp_path / "model" / "README.md").write_text("run id 2, another time")
    assert write_manifest(tmp_path) == first
    assert "model/README.md" in json.loads((tmp_path / "manifest.json").read_text())["files"]
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x02" * 8)
    assert write_manifest(tmp_path) != first


def test_a_cached_output_outside_its_folder_that_is_gone_is_a_miss(tmp_path):
    """A hub model's snapshot lives in the Hugging Face cache, outside the stage folder's manifest."""
    out_dir, snapshot = tmp_path / "artifacts" / "pretrain-k", tmp_path / "hf" / "snapshots" / "abc"
    out_dir.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    outputs = {"model": str(snapshot), "table": str(out_dir / "not-written.parquet"), "name": "org/model"}
    assert gone_output(outputs, out_dir) is None, "paths inside the folder are the manifest's business"
    snapshot.rmdir()
    assert gone_output(outputs, out_dir) == f"output model {snapshot} is gone"
