"""`tracking.log_weights: copy` vs `reference`, side by side in one go: seconds to log a saved model
folder as an MLflow logged model, and bytes the MLflow store holds for it, on a random
Qwen2-shaped model of the size given. Both are loaded back through pyfunc and must agree. Usage:
    python bench/log_weights.py [--hidden 512] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    import mlflow

    from alignflow.demo.foreign import build_foreign_model, corpus_texts
    from alignflow.tracking.logged_models import CAUSAL_LM_TASK, log_model_folder

    work = Path(tempfile.mkdtemp(prefix="alignflow-log-weights-"))
    model = build_foreign_model("qwen2_chatml", work / "model", corpus_texts(Path(__file__).parents[1] / "data"),
                                hidden_size=args.hidden,
                                intermediate_size=4 * args.hidden, num_layers=args.layers, num_heads=8,
                                num_kv_heads=2)
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    figures: dict[str, dict] = {"model_folder_bytes": folder_bytes(model)}
    answers = {}
    for weights in ("copy", "reference"):
        store = work / f"store-{weights}"
        experiment = mlflow.create_experiment(weights, artifact_location=str(store))
        with mlflow.start_run(experiment_id=experiment):
            started = time.perf_counter()
            info = log_model_folder(model, task=CAUSAL_LM_TASK, weights=weights, name="sft", model_type="sft")
            seconds = time.perf_counter() - started
        started = time.perf_counter()
        answers[weights] = mlflow.pyfunc.load_model(info.model_uri).predict(["hello"], params={"max_new_tokens": 4,
                                                                                              "do_sample": False})
        figures[weights] = {"log_seconds": round(seconds, 2), "load_seconds": round(time.perf_counter() - started, 2),
                            "store_bytes": folder_bytes(store)}
    if answers["copy"] != answers["reference"]:
        raise SystemExit(f"copy and reference disagree: {answers}")
    figures["store_bytes_ratio_copy_over_reference"] = round(
        figures["copy"]["store_bytes"] / figures["reference"]["store_bytes"], 1)
    figures["log_seconds_ratio_copy_over_reference"] = round(
        figures["copy"]["log_seconds"] / figures["reference"]["log_seconds"], 2)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
