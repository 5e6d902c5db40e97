"""Accuracy of each income model and of the ensembles, from the outputs pipeline.yaml wrote.

    python pipelines/census_vote/report.py pipelines/census_vote/out

Rows whose true income is missing are left out of every figure.
"""

from __future__ import annotations

import glob
import os
import sys

import pandas as pd

POSITIVE = ">50K"


def read_output(out_dir: str, name: str) -> pd.DataFrame:
    """One WriteToJson output (all its shards) as a frame; empty if it wrote nothing."""
    files = sorted(glob.glob(os.path.join(out_dir, f"{name}-*")))
    frames = [pd.read_json(f, lines=True) for f in files if os.path.getsize(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def accuracy_table(out_dir: str) -> pd.DataFrame:
    """One line per model or ensemble: what it is, rows scored, accuracy, and ROC AUC
    from the confidence each answer carries (an A/B arm's is its model's)."""
    vote = read_output(out_dir, "vote")
    ab = read_output(out_dir, "ab")
    shadow = read_output(out_dir, "shadow")
    vote, ab, shadow = (f[f.income.notna()] for f in (vote, ab, shadow))
    lines = []

    def add(name: str, role: str, rows: pd.DataFrame, answer: str, confidence: str) -> None:
        truth, predicted = rows.income, rows[answer]
        lines.append({"model": name, "role": role, "rows": len(rows),
                      "accuracy": round(float((truth == predicted).mean()), 4),
                      "auc": round(auc(truth, predicted, rows[confidence]), 4)})

    for step in ("logistic", "tree", "forest"):
        add(step, "vote member", vote, f"{step}_predicted_income", f"{step}_confidence")
    add("income_vote", "soft vote (2, 1, 1)", vote, "predicted_income",
        "predicted_income_confidence")
    for arm, rows in ab.groupby("arm"):
        add(arm, "A/B arm", rows, "predicted_income", "predicted_income_confidence")
    add("income_ab", "A/B, all arms", ab, "predicted_income", "predicted_income_confidence")
    add("income_boosting", "shadow", shadow, "income_boosting_predicted_income",
        "income_boosting_confidence")
    return pd.DataFrame(lines)


def auc(truth: pd.Series, predicted: pd.Series, confidence: pd.Series) -> float:
    """ROC AUC of '>50K' from an answer and its confidence (the probability of the
    answered class): the probability of '>50K' is the confidence where the answer is
    '>50K', else one minus it."""
    from sklearn.metrics import roc_auc_score

    high = predicted == POSITIVE
    return float(roc_auc_score(truth == POSITIVE, confidence.where(high, 1 - confidence)))


def main(argv: list[str]) -> None:
    out_dir = argv[0] if argv else os.path.join(os.path.dirname(__file__), "out")
    print(accuracy_table(out_dir).to_string(index=False))
    errors = read_output(out_dir, "errors")
    print(f"rows sent to errors: {len(errors)}")


if __name__ == "__main__":
    main(sys.argv[1:])
