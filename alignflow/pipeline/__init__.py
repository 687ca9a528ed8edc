"""Running the pipeline: stages, the graph runner, caching, Prefect, launched jobs, config files."""
