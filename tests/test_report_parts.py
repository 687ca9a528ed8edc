"""Lineage graph building on a small real MLflow store, and the report's pure parts (no pipeline)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from alignflow.tracking.lineage import (
    LineageError,
    build_lineage,
    format_lineage,
    headline_metrics,
    parse_upstream,
)
from alignflow.tracking.lineage_picture import depths, lineage_svg
from alignflow.tracking.report import StageSection, Table, html_table, render_report


def test_parse_upstream():
    assert parse_upstream("") == {}
    assert parse_upstream(None) == {}
    assert parse_upstream("sft:abc,validate:def") == {"sft": "abc", "validate": "def"}


def test_headline_metrics_prefer_held_out_numbers_and_evaluation_accuracies():
    metrics = {"grad_norm": 1.0, "heldout_pair_accuracy": 0.8, "train_loss": 0.5, "stage_seconds": 3.0}
    assert list(headline_metrics("reward_model", metrics)) == ["heldout_pair_accuracy", "train_loss"]
    evaluation = {"sft.recognition.k0": 0.5, "acc/sft/task": 0.5, "eval_seconds": 2.0}
    assert headline_metrics("evaluate", evaluation) == {"sft.recognition.k0": 0.5}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[MlflowClient, dict[str, str]]:
    """Two pipeline runs: the first computes a -> b; the second serves a from cache, computes b again."""
    folder = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    experiment = client.create_experiment("lineage", artifact_location=(folder / "artifacts").as_uri())

    def stage(parent: str, name: str, upstream: str = "", cached_from: str = "") -> str:
        tags = {"mlflow.parentRunId": parent, "alignflow.pipeline.stage": name, "alignflow.upstream_runs": upstream}
        if cached_from:
            tags["alignflow.cached_from"] = cached_from
        return client.create_run(experiment, run_name=name, tags=tags).info.run_id

    ids = {"first": client.create_run(experiment, tags={"alignflow.pipeline": "p"}).info.run_id}
    ids["a1"] = stage(ids["first"], "a")
    client.log_metric(ids["a1"], "rows_kept", 5.0)
    ids["b1"] = stage(ids["first"], "b", f"a:{ids['a1']}")
    ids["second"] = client.create_run(experiment, tags={"alignflow.pipeline": "p"}).info.run_id
    ids["a2"] = stage(ids["second"], "a", cached_from=ids["a1"])
    ids["b2"] = stage(ids["second"], "b", f"a:{ids['a1']}")  # a cached result names the run that computed it
    ids["plain"] = client.create_run(experiment).info.run_id
    return client, ids


def test_a_pipeline_run_draws_its_own_cache_hit_in_place_of_the_run_it_copies(store):
    client, ids = store
    graph = build_lineage(client, ids["second"])
    assert [n.stage for n in graph.nodes] == ["a", "b"]
    assert [(e.source, e.target, e.tagged_run) for e in graph.edges] == [(ids["a2"], ids["b2"], ids["a1"])]
    cached = graph.node(ids["a2"])
    assert cached.status == "cached" and cached.cached_from == ids["a1"]
    assert cached.metrics == {}  # the cache hit's own (copied) metrics: none were logged here
    text = format_lineage(graph)
    assert f"run {ids['a2']}  cached, computed by run {ids['a1']}" in text


def test_a_stage_run_walks_its_upstream_tags_into_other_pipeline_runs(store):
    client, ids = store
    graph = build_lineage(client, ids["b2"])
    assert [n.run_id for n in graph.nodes] == [ids["a1"], ids["b2"]]
    assert graph.node(ids["a1"]).metrics == {"rows_kept": 5.0}
    assert f"(pipeline run {ids['first']})" in format_lineage(graph)
    assert depths(graph) == {ids["a1"]: 0, ids["b2"]: 1}
    svg = lineage_svg(graph)
    assert svg.startswith("<svg") and svg.count("<rect x=") >= 2 and 'stroke-dasharray="5,3"' in svg


def test_unknown_and_foreign_runs_are_errors(store):
    client, ids = store
    with pytest.raises(LineageError, match="run 0000 not found"):
        build_lineage(client, "0000")
    with pytest.raises(LineageError, match="neither an alignflow stage run nor a pipeline run"):
        build_lineage(client, ids["plain"])


def test_report_escapes_text_and_keeps_chinese(store):
    client, ids = store
    graph = build_lineage(client, ids["first"])
    table = Table("samples/<step>.json", ["prompt", "score"],
                  [["输入：<b>这部电影</b> & more", 0.123456]], 1)
    sections = [StageSection(graph.nodes[0], 1.5, {"acc<script>": 1.0}, tables=[table])]
    html = render_report(graph, lineage_svg(graph), sections, started="today", config_text="name: 演示 <x>")
    assert "输入：&lt;b&gt;这部电影&lt;/b&gt; &amp; more" in html
    assert "acc&lt;script&gt;" in html and "<script" not in html
    assert "samples/&lt;step&gt;.json" in html and "name: 演示 &lt;x&gt;" in html
    assert '<td class="num">0.1235</td>' in html
    assert html_table(["a"], [["<i>"]]).count("&lt;i&gt;") == 1


def test_frontier_points_come_from_every_held_out_comparison():
    from alignflow.evaluation.comparisons import FrontierPoint, frontier_points

    runs = [("sft", {"train_loss": 1.0}),
            ("ppo", {"heldout_reward_ppo": 3.0, "heldout_reward_sft": 1.0, "heldout_kl_to_sft": 2.0,
                     "oracle_win_rate_vs_sft": 0.7}),
            ("dpo-beta-0.5", {"heldout_reward_dpo": 1.5, "heldout_reward_sft": 1.0, "heldout_kl_to_sft": 0.5}),
            ("dpo", {"heldout_reward_dpo": 2.0, "heldout_reward_sft": 1.0, "heldout_kl_to_sft": 1.0,
                     "oracle_win_rate_vs_sft": 0.6}),
            ("dpo-no-reward-model", {"oracle_win_rate_vs_sft": 0.6})]
    runs[1][1].update(heldout_reward_gain_ci_low=1.5, heldout_reward_gain_ci_high=2.5, oracle_win_rate_ci_low=0.6,
                      oracle_win_rate_ci_high=0.8)
    assert frontier_points(runs) == [FrontierPoint("dpo", "dpo-beta-0.5", 0.5, 0.5, None),
                                     FrontierPoint("dpo", "dpo", 1.0, 1.0, 0.6),
                                     FrontierPoint("ppo", "ppo", 2.0, 2.0, 0.7, (1.5, 2.5), (0.6, 0.8))]


def test_report_shows_the_frontier(store, tmp_path):
    from alignflow.evaluation.comparisons import FrontierPoint
    from alignflow.tracking.plots import frontier_plot
    from alignflow.tracking.report import Frontier

    client, ids = store
    graph = build_lineage(client, ids["first"])
    points = [FrontierPoint("dpo", "dpo", 1.0, 1.0, 0.6, (0.5, 1.5), (0.45, 0.75)),
              FrontierPoint("dpo", "dpo-beta-0.5", 0.5, 0.5, None)]
    png = frontier_plot(tmp_path / "frontier.png", points).read_bytes()
    assert png.startswith(b"\x89PNG")
    html = render_report(graph, lineage_svg(graph), [], started="today", config_text=None,
                         frontier=Frontier(points, png))
    assert 'id="frontier"' in html and "dpo-beta-0.5" in html and 'href=#frontier' in html
    assert "1.000 [0.500, 1.500]" in html and "0.600 [0.450, 0.750]" in html
    assert 'id="frontier"' not in render_report(graph, lineage_svg(graph), [], started="today", config_text=None)


def test_the_cli_stage_column_fits_a_sweep_point_name():
    from alignflow.cli import key_width, name_width

    assert name_width(["pretrain", "sft"]) == 16  # the usual layout, which scripts may read
    assert name_width(["sft", "ppo-kl_coef-0.01"]) == len("ppo-kl_coef-0.01") + 2
    assert key_width(name_width(["pretrain", "reward_model"])) == 50  # the usual layout
    name = "pretrain-model.num_hidden_layers-1"
    assert key_width(name_width([name])) >= len(f"{name}-{'0' * 32}") + 2, "a sweep point's key keeps a gap"
