"""Few-shot evaluation: tasks as data, lm-evaluation-harness scoring, shared-prefix KV caching.

Modules, each pure and small:

- `spec`: the task YAML schema (`TaskSpec`) and loading of its items (`EvalDoc`) from the demo
  corpus by reference or from JSONL files.
- `prompts`: prompt strings in lm-evaluation-harness's layout and whole-demonstration fitting.
- `selection`: which demonstrations a document gets (random, first_n, balanced, similar) and
  in what order.
- `embeddings`: sentence embeddings for `similar` (MiniLM when installed, TF-IDF otherwise).
- `scoring`: log P(continuation | context) exactly as lm-evaluation-harness computes it, batched,
  with the shared prefix's KV cache computed once (generation: alignflow.models.generation).
- `metrics`: acc, acc_norm, exact match, contains, ROUGE-L and Wilson intervals.
- `sweep`: ties them together: every task x every k for one model -> per-sample records + table.
"""
