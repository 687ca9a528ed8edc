"""Preference data: rankings, imported datasets and oracle scores become validated preference pairs.

Pure functions, no Prefect or MLflow: the `preferences` stage calls them and logs what they
count. Every reader returns (items, rejects); a rejected row is a dict with the RejectedRow keys
(stage, source, row, id, field, rule, reason, record) naming file, row, field and rule, so nothing
is dropped silently and rows read == rows kept + rows rejected. Problems with a file as a whole
(missing, empty, unsupported ending, CSV header without the needed columns) raise DataError
naming the file.

A ranking row (what `read_rankings` and `read_ultrafeedback` return) is a dict
{"prompt_id", "prompt", "responses": [str, ...], "scores": [float, ...]}; `rankings_table`
turns a list of them into a RankingRow table. A pair is a dict with the PreferencePair columns.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path

import pandas as pd

from alignflow.data.loaders import Record, read_csv, read_jsonl
from alignflow.data.tables import validated
from alignflow.errors import DataError
from alignflow.schemas.instruction import REJECTED_COLUMNS
from alignflow.schemas.preference import (
    PREFERENCE_COLUMNS,
    RANKING_COLUMNS,
    PreferencePair,
    RankingRow,
    same_text,
)

STAGE = "preferences"
STRATEGIES = ("all_pairs", "best_vs_rest")
ASSISTANT = "\n\nAssistant:"


# --- pairs from scored responses -------------------------------------------------------------------


def pairs_from_scores(prompt_id: str, prompt: str, responses: list[str], scores: list[float], *, strategy: str,
                      source: str, task: str = "") -> tuple[list[dict], dict[str, int]]:
    """Turn scored responses to one prompt into preference pairs (chosen = higher score).

    `all_pairs` uses every pair i < j whose scores differ: the most signal from a ranking.
    `best_vs_rest` pairs each best-scoring response with every lower one: fewer pairs, each with
    a clear winner; when several responses share the best score, the pairs among them are ties.
    A pair with equal scores teaches nothing and is dropped (counted in "ties"); a pair whose
    texts are the same (up to surrounding whitespace) would ask the model to prefer a text over
    itself and is dropped too (counted in "identical"); so is a pair with an empty text (a model
    that ends its answer at once; counted in "empty"), which no pair table may hold. The second
    return value is {"ties": n, "identical": m, "empty": e}, so a stage can log what it left out.

    Pair ids are "{prompt_id}-{chosen index}-{rejected index}" (indices into `responses`), so the
    same input always gives the same ids. margin = score(chosen) - score(rejected).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pairing strategy {strategy!r}; expected one of {STRATEGIES}")
    if len(responses) != len(scores):
        raise ValueError(f"{prompt_id}: {len(responses)} responses but {len(scores)} scores")
    n = len(responses)
    if strategy == "all_pairs":
        candidates = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        best = max(scores, default=0.0)
        top = [i for i in range(n) if scores[i] == best]
        rest = [j for j in range(n) if scores[j] != best]
        candidates = [(i, j) for a, i in enumerate(top) for j in top[a + 1:]]  # ties among the best
        candidates += [(i, j) for i in top for j in rest]
    pairs: list[dict] = []
    counts = {"ties": 0, "identical": 0, "empty": 0}
    for i, j in candidates:
        if scores[i] == scores[j]:
            counts["ties"] += 1
            continue
        if same_text(responses[i], responses[j]):
            counts["identical"] += 1
            continue
        if not responses[i].strip() or not responses[j].strip():
            counts["empty"] += 1
            continue
        chosen, rejected = (i, j) if scores[i] > scores[j] else (j, i)
        pairs.append({"id": f"{prompt_id}-{chosen}-{rejected}", "prompt": prompt, "chosen": responses[chosen],
                      "rejected": responses[rejected], "margin": float(scores[chosen] - scores[rejected]),
                      "source": source, "task": task})
    return pairs, counts


def pairs_from_rows(rows: list[dict], *, strategy: str, source: str, task: str = "") -> tuple[list[dict], dict]:
    """`pairs_from_scores` over ranking rows, with the tie and identical counts summed."""
    pairs: list[dict] = []
    counts = {"ties": 0, "identical": 0, "empty": 0}
    for row in rows:
        found, dropped = pairs_from_scores(row["prompt_id"], row["prompt"], row["responses"], row["scores"],
                                           strategy=strategy, source=source, task=task)
        pairs.extend(found)
        counts = {key: counts[key] + dropped[key] for key in counts}
    return pairs, counts


def pairs_table(pairs: list[dict]) -> pd.DataFrame:
    """A PreferencePair table (validated); an empty list gives an empty table with the same columns."""
    if pairs:
        frame = pd.DataFrame(pairs, columns=PREFERENCE_COLUMNS)
        frame["margin"] = frame["margin"].astype("float64")
    else:
        frame = pd.DataFrame({c: pd.Series(dtype="float64" if c == "margin" else "str")
                              for c in PREFERENCE_COLUMNS})
    return validated(PreferencePair, frame, "preference pairs")


def rankings_table(rows: list[dict]) -> pd.DataFrame:
    """A RankingRow table (validated) from ranking rows; lists become JSON strings."""
    records = [{"prompt_id": row["prompt_id"], "prompt": row["prompt"],
                "responses": json.dumps(row["responses"], ensure_ascii=False),
                "scores": json.dumps([float(s) for s in row["scores"]])} for row in rows]
    frame = pd.DataFrame(records, columns=RANKING_COLUMNS).astype("str")
    return validated(RankingRow, frame, "rankings")


# --- oracle ----------------------------------------------------------------------------------------


def oracle_score(response: str, reference: str) -> float:
    """Score a response to a verifiable task against its reference answer, for the demo annotator.

    The answer is the response's first line, stripped (models often keep talking after it).
    An exact match with the (stripped) reference scores 1.0. Anything else gets partial credit
    0.5 * difflib's character similarity ratio, which lies in [0, 0.5) for unequal strings, so
    rankings among wrong answers still say which is closer while any exact answer beats any
    wrong one.
    """
    lines = response.strip().splitlines()
    answer = lines[0].strip() if lines else ""
    target = reference.strip()
    if answer == target:
        return 1.0
    return 0.5 * difflib.SequenceMatcher(None, answer, target, autojunk=False).ratio()


# --- readers ---------------------------------------------------------------------------------------


def _reject(source: str, row: int, rule: str, reason: str, record: object, field: str = "", id: str = "") -> dict:
    text = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, default=str)
    return {"stage": STAGE, "source": source, "row": row, "id": id, "field": field, "rule": rule,
            "reason": reason, "record": text}


def _loader_reject(reject: dict) -> dict:
    """A reader's reject (unreadable line) restamped for this stage, with every RejectedRow key."""
    return {key: reject.get(key, 0 if key == "row" else "") for key in REJECTED_COLUMNS} | {"stage": STAGE}


def _read(path: Path) -> tuple[list[Record], list[dict]]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        records, rejects = read_jsonl(path)
    elif suffix == ".csv":
        records, rejects = read_csv(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; expected .jsonl, .json or .csv")
    return records, [_loader_reject(r) for r in rejects]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json_list(value: object) -> list | None | str:
    """A list field as given (JSONL) or as a JSON string (CSV). None when absent or empty;
    a string with the error when it is not JSON."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            return f"is not valid JSON ({error.msg} at column {error.colno})"
    return value


def _responses(record: dict, field: str) -> tuple[list[str] | None, tuple[str, str] | None]:
    """(responses, None) or (None, (rule, reason))."""
    value = _json_list(record.get(field))
    if isinstance(value, str):
        return None, ("malformed_json", f"{field} {value}")
    if value is None:
        return None, ("missing_responses", f"{field} is missing or empty")
    if not isinstance(value, list):
        return None, ("missing_responses", f"{field} must be a list of responses, got {type(value).__name__}")
    if len(value) < 2:
        return None, ("missing_responses", f"{field} holds {len(value)} response(s); a ranking needs at least 2")
    for index, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            return None, ("missing_responses", f"response {index} is empty or not text")
    return value, None


def _ranking_problem(responses: list[str], scores: list[float], field: str) -> tuple[str, str, str] | None:
    """(rule, field, reason) when scored responses would give no pair at all, else None."""
    if len(set(scores)) == 1:
        return "ties_only", field, f"all {len(scores)} responses have the same score; no preference to learn"
    pairs, _ = pairs_from_scores("", "", responses, scores, strategy="all_pairs", source="-")
    if not pairs:
        return ("chosen_equals_rejected", "responses",
                "every pair with different scores has the same text for chosen and rejected")
    return None


def _scores(record: dict, n: int) -> tuple[list[float] | None, tuple[str, str, str] | None]:
    """(scores, None) from `scores` or `ranks` (1 = best, score = -rank), or (None, (rule, field, reason))."""
    has_scores = record.get("scores") not in (None, "")
    has_ranks = record.get("ranks") not in (None, "")
    if has_scores and has_ranks:
        return None, ("scores_and_ranks", "ranks", "give either scores or ranks, not both")
    if not has_scores and not has_ranks:
        return None, ("missing_scores", "scores", "the row has neither scores nor ranks")
    field = "scores" if has_scores else "ranks"
    value = _json_list(record[field])
    if isinstance(value, str):
        return None, ("malformed_json", field, f"{field} {value}")
    if not isinstance(value, list):
        return None, ("non_numeric_score", field, f"{field} must be a list of numbers, got {type(value).__name__}")
    for index, item in enumerate(value):
        if not _is_number(item):
            return None, ("non_numeric_score", field, f"{field}[{index}] = {item!r} is not a finite number")
    if len(value) != n:
        return None, ("length_mismatch", field, f"{n} responses but {len(value)} {field}")
    if has_scores:
        return [float(s) for s in value], None
    for index, rank in enumerate(value):
        if rank < 1 or rank != int(rank):
            return None, ("bad_rank", field, f"ranks[{index}] = {rank!r}; ranks are whole numbers from 1 (best)")
    return [-float(rank) for rank in value], None


def read_rankings(path: str | Path, known_prompt_ids: Collection[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Read human rankings (JSONL or CSV) into ranking rows, rejecting every row that cannot be used.

    A record holds `prompt_id`, `prompt` (optional when the id is known), `responses` (a list, or
    a JSON string in CSV) and either `scores` (numbers, higher = better) or `ranks` (whole numbers,
    1 = best, turned into scores as -rank so that margins are rank differences).

    When `known_prompt_ids` is given, ids outside it are rejected (`unknown_prompt_id`): a
    ranking of a prompt the pipeline never sampled cannot be joined to it. If it is a mapping
    {id: prompt text}, a missing prompt is filled from it; with a plain set it stays "" for the
    stage to fill. Without it, the prompt text is required (`missing_prompt`).

    Rules (first problem per row): malformed_json, not_an_object, ... (unreadable lines),
    missing_prompt_id, duplicate_prompt_id (one ranking per prompt per file, so pair ids stay
    unique), unknown_prompt_id, missing_prompt, missing_responses (absent, empty, fewer than 2,
    or an empty response), missing_scores, scores_and_ranks, non_numeric_score, length_mismatch,
    bad_rank, ties_only (all scores equal), chosen_equals_rejected (the only pairs would have
    identical texts).
    """
    path = Path(path)
    source = str(path)
    records, rejects = _read(path)
    if path.suffix.lower() == ".csv" and records:
        columns = set(records[0][1])
        missing = [c for c in ("prompt_id", "responses") if c not in columns]
        if not columns & {"scores", "ranks"}:
            missing.append("scores or ranks")
        if missing:
            raise DataError(f"{path}: the header lacks the column(s) {missing}")
    rows: list[dict] = []
    seen: set[str] = set()
    for number, record in records:
        raw_id = record.get("prompt_id")
        prompt_id = str(raw_id).strip() if _is_number(raw_id) or isinstance(raw_id, str) else ""

        def reject(rule: str, field: str, reason: str, number: int = number, record: dict = record,
                   prompt_id: str = prompt_id) -> None:
            rejects.append(_reject(source, number, rule, f"row {number}: {reason}", record, field, prompt_id))

        if not prompt_id:
            reject("missing_prompt_id", "prompt_id", "prompt_id is missing or empty")
            continue
        if prompt_id in seen:
            reject("duplicate_prompt_id", "prompt_id", f"prompt_id {prompt_id!r} was already ranked in this file")
            continue
        if known_prompt_ids is not None and prompt_id not in known_prompt_ids:
            reject("unknown_prompt_id", "prompt_id", f"prompt_id {prompt_id!r} is not among the known prompts")
            continue
        prompt = record.get("prompt")
        if prompt is None or prompt == "":
            if known_prompt_ids is None:
                reject("missing_prompt", "prompt", "prompt is missing and no known prompts were given")
                continue
            prompt = known_prompt_ids[prompt_id] if isinstance(known_prompt_ids, Mapping) else ""
        elif not isinstance(prompt, str) or not prompt.strip():
            reject("missing_prompt", "prompt", "prompt must be non-empty text")
            continue
        responses, problem = _responses(record, "responses")
        if problem:
            reject(problem[0], "responses", problem[1])
            continue
        scores, problem = _scores(record, len(responses))
        if problem is None:
            problem = _ranking_problem(responses, scores, "ranks" if record.get("scores") in (None, "") else "scores")
        if problem:
            reject(*problem)
            continue
        seen.add(prompt_id)
        rows.append({"prompt_id": prompt_id, "prompt": prompt, "responses": responses, "scores": scores})
    return rows, sorted(rejects, key=lambda r: r["row"])


def read_ultrafeedback(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Read UltraFeedback-style JSONL into ranking rows (prompt ids "{file stem}-{line}").

    A record holds `prompt` (or `instruction`) and `completions`, a list of {"response",
    "overall_score"} (or "fine-grained_score" when there is no overall score). A row with any
    unusable completion is rejected whole, naming the completion, rather than ranked on a subset.
    """
    path = Path(path)
    source = str(path)
    records, rejects = _read(path)
    rows: list[dict] = []
    for number, record in records:
        prompt_id = f"{path.stem}-{number}"

        def reject(rule: str, field: str, reason: str, number: int = number, record: dict = record,
                   prompt_id: str = prompt_id) -> None:
            rejects.append(_reject(source, number, rule, f"row {number}: {reason}", record, field, prompt_id))

        field = "prompt" if "prompt" in record else "instruction"
        prompt = record.get(field)
        if not isinstance(prompt, str) or not prompt.strip():
            reject("missing_prompt", field, "prompt (or instruction) is missing or empty")
            continue
        completions = record.get("completions")
        if not isinstance(completions, list) or len(completions) < 2:
            count = len(completions) if isinstance(completions, list) else 0
            reject("missing_responses", "completions", f"{count} completion(s); a ranking needs at least 2")
            continue
        responses, scores, problem = [], [], None
        for index, completion in enumerate(completions):
            text = completion.get("response") if isinstance(completion, dict) else None
            if not isinstance(text, str) or not text.strip():
                problem = ("missing_responses", "completions", f"completion {index} has no response text")
                break
            score = completion.get("overall_score", completion.get("fine-grained_score"))
            if not _is_number(score):
                problem = ("non_numeric_score", "completions",
                           f"completion {index}: score {score!r} is not a finite number")
                break
            responses.append(text)
            scores.append(float(score))
        problem = problem or _ranking_problem(responses, scores, "completions")
        if problem:
            reject(*problem)
            continue
        rows.append({"prompt_id": prompt_id, "prompt": prompt, "responses": responses, "scores": scores})
    return rows, sorted(rejects, key=lambda r: r["row"])


def import_ultrafeedback(path: str | Path, strategy: str) -> tuple[list[dict], list[dict]]:
    """UltraFeedback-style JSONL straight to pairs (source "ultrafeedback:{path}").

    For the tie and identical counts, call `read_ultrafeedback` and `pairs_from_rows` instead.
    """
    rows, rejects = read_ultrafeedback(path)
    pairs, _ = pairs_from_rows(rows, strategy=strategy, source=f"ultrafeedback:{path}")
    return pairs, rejects


def split_dialogue(text: str) -> tuple[str, str] | None:
    """(prompt up to and including the last "\\n\\nAssistant:", final reply stripped), or None
    when the dialogue has no Assistant turn."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return None
    end = cut + len(ASSISTANT)
    return text[:end], text[end:].strip()


def import_hh(path: str | Path) -> tuple[list[dict], list[dict]]:
    """Anthropic-HH-style JSONL ({"chosen", "rejected"} full dialogues) to pairs.

    Both dialogues share every turn but the last Assistant reply: the shared part is the prompt
    (as the policy sees it, ending with "\\n\\nAssistant:"), the two final replies are chosen and
    rejected. HH has no scores, so margin is 1.0 (one rank step). Pair ids are "{file stem}-{line}",
    source "hh:{path}", task the record's `task` if any.

    Rules: missing_field (chosen/rejected absent or empty), no_assistant_turn, empty_reply,
    prompt_mismatch (the dialogues differ before the final reply), chosen_equals_rejected.
    """
    path = Path(path)
    source = str(path)
    records, rejects = _read(path)
    pairs: list[dict] = []
    for number, record in records:
        pair_id = f"{path.stem}-{number}"

        def reject(rule: str, field: str, reason: str, number: int = number, record: dict = record,
                   pair_id: str = pair_id) -> None:
            rejects.append(_reject(source, number, rule, f"row {number}: {reason}", record, field, pair_id))

        parts, problem = {}, None
        for field in ("chosen", "rejected"):
            text = record.get(field)
            if not isinstance(text, str) or not text.strip():
                problem = ("missing_field", field, f"{field} is missing or empty")
                break
            split = split_dialogue(text)
            if split is None:
                problem = ("no_assistant_turn", field, f"{field} has no {ASSISTANT.strip()!r} turn")
                break
            if not split[1]:
                problem = ("empty_reply", field, f"the final Assistant reply in {field} is empty")
                break
            parts[field] = split
        if problem is None and parts["chosen"][0] != parts["rejected"][0]:
            problem = ("prompt_mismatch", "rejected", "chosen and rejected differ before the final Assistant reply")
        if problem is None and same_text(parts["chosen"][1], parts["rejected"][1]):
            problem = ("chosen_equals_rejected", "rejected", "the chosen and rejected replies are the same text")
        if problem:
            reject(*problem)
            continue
        task = record.get("task") if isinstance(record.get("task"), str) else ""
        pairs.append({"id": pair_id, "prompt": parts["chosen"][0], "chosen": parts["chosen"][1],
                      "rejected": parts["rejected"][1], "margin": 1.0, "source": f"hh:{path}", "task": task})
    return pairs, sorted(rejects, key=lambda r: r["row"])


__all__ = ["STRATEGIES", "pairs_from_scores", "pairs_from_rows", "pairs_table", "rankings_table", "oracle_score",
           "read_rankings", "read_ultrafeedback", "import_ultrafeedback", "split_dialogue", "import_hh"]
