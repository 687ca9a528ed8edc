"""What a run leaves behind: MLflow runs, lineage, model cards, plots, the HTML report, progress bars."""
