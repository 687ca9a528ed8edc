"""In-context learning against model size: curves from evaluate result rows and the plot
(alignflow.evaluation.icl_scaling, alignflow.tracking.plots)."""

from __future__ import annotations

from alignflow.evaluation.icl_scaling import curve_label, icl_curves


def rows(task: str, category: str, accuracies: dict[int, tuple[float, float, float]], model: str = "pretrain"):
    return [{"model": model, "task": task, "category": category, "k": k, "accuracy": a, "ci_low": lo, "ci_high": hi,
             "chance": 0.5} for k, (a, lo, hi) in accuracies.items()]


def test_curves_take_the_base_model_rows_on_icl_tasks_only():
    big = rows("learn_x", "learning", {8: (0.9, 0.8, 0.95), 0: (0.5, 0.38, 0.62)})
    big += rows("instruct_x", "instruction", {0: (1.0, 0.9, 1.0)})
    big += rows("learn_x", "learning", {0: (0.1, 0.0, 0.2)}, model="sft")
    small = rows("learn_x", "learning", {0: (0.5, 0.38, 0.62), 8: (0.55, 0.42, 0.67)})
    curves = icl_curves([("pretrain", 900_000, big), ("pretrain-model.num_hidden_layers-2", 300_000, small)])
    assert [(c.model, c.task) for c in curves] == [("pretrain-model.num_hidden_layers-2", "learn_x"),
                                                   ("pretrain", "learn_x")]
    assert curves[1].points == ((0, 0.5, 0.38, 0.62), (8, 0.9, 0.8, 0.95)), "sorted by k, sft's row left out"
    assert curve_label(curves[1]) == "pretrain (0.90M parameters)"
    assert curves[0].chance == 0.5


def test_the_plot_draws_one_panel_per_task(tmp_path):
    from alignflow.tracking.plots import icl_scaling_plot

    data = rows("learn_x", "learning", {0: (0.5, 0.38, 0.62), 8: (0.9, 0.8, 0.95)})
    data += rows("recognize_y", "recognition", {0: (0.4, 0.3, 0.5), 8: (1.0, 0.94, 1.0)})
    path = icl_scaling_plot(tmp_path / "icl.png", icl_curves([("pretrain", 1000, data), ("pretrain-b", None, data)]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
