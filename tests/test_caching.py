import json

from alignflow.caching import code_digest, stage_cache_key, verify_manifest, write_manifest


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
    assert code_digest(("alignflow.caching",)) == code_digest(("alignflow.caching",))
    assert code_digest(("alignflow.caching",)) != code_digest(("alignflow.config",))


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
