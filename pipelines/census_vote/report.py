"""Accuracy of each income model and of the ensembles, from the outputs pipeline.yaml wrote.

    python pipelines/census_vote/report.py pipelines/census_vote/out

Rows whose true income is missing are left out of every figure.
"""

from __future__ import annotations

import glob
import os
import sys

import pandas as pd


def read_output(out_dir: str, name: str) -> pd.DataFrame:
    """One WriteToJson output (all its shards) as a frame; empty if it wrote nothing."""
    files = sorted(glob.glob(os.path.join(out_dir, f"{name}-*")))
    frames = [pd.read_json(f, lines=True) for f in files if os.path.getsize(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def accuracy_table(out_dir: str) -> pd.DataFrame:
    """One line per model or ensemble: what it is, rows scored, accuracy."""
    vote = read_output(out_dir, "vote")
    ab = read_output(out_dir, "ab")
    shadow = read_output(out_dir, "shadow")
    vote, ab, shadow = (f[f.income.notna()] for f in (vote, ab, shadow))
    lines = []

    def add(name: str, role: str, truth: pd.Series, predicted: pd.Series) -> None:
        lines.append({"model": name, "role": role, "rows": len(truth),
                      "accuracy": round(float((truth == predicted).mean()), 4)})

    for step in ("logistic", "tree", "forest"):
        add(step, "vote member", vote.income, vote[f"{step}_predicted_income"])
    add("income_vote", "soft vote (2, 1, 1)", vote.income, vote.predicted_income)
    for arm, rows in ab.groupby("arm"):
        add(arm, "A/B arm", rows.income, rows.predicted_income)
    add("income_ab", "A/B, all arms", ab.income, ab.predicted_income)
    add("income_boosting", "shadow", shadow.income, shadow.income_boosting_predicted_income)
    return pd.DataFrame(lines)


def main(argv: list[str]) -> None:
    out_dir = argv[0] if argv else os.path.join(os.path.dirname(__file__), "out")
    print(accuracy_table(out_dir).to_string(index=False))
    errors = read_output(out_dir, "errors")
    print(f"rows sent to errors: {len(errors)}")


if __name__ == "__main__":
    main(sys.argv[1:])
