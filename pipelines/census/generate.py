"""Writes a census-like CSV with the columns of the UCI Adult data set.

    python pipelines/census/generate.py --rows 20000 \
        --out pipelines/census/data/generated/census.csv

Marginals follow the Adult data roughly, and income (``<=50K`` / ``>50K``,
about a quarter above) depends on education, age, marital status,
occupation, hours, sex and capital gains through a logistic model, so per-key
models have something to learn. The same ``--seed`` gives the same file.

Every ``--bad-every``-th row (never among the first 200, which schema
inference samples) is deliberately broken, alternately with a missing
income and an unparsable age, so a pipeline's ``errors`` output has content.
"""

import argparse
import os

import numpy as np
import pandas as pd

EDUCATION = {  # level: (education_num, share)
    "Preschool": (1, 0.001), "1st-4th": (2, 0.005), "5th-6th": (3, 0.010),
    "7th-8th": (4, 0.018), "9th": (5, 0.015), "10th": (6, 0.027), "11th": (7, 0.035),
    "12th": (8, 0.012), "HS-grad": (9, 0.326), "Some-college": (10, 0.221),
    "Assoc-voc": (11, 0.043), "Assoc-acdm": (12, 0.033), "Bachelors": (13, 0.167),
    "Masters": (14, 0.054), "Prof-school": (15, 0.018), "Doctorate": (16, 0.012),
}
WORKCLASS = {  # class: (share, effect on the log-odds of >50K)
    "Private": (0.74, 0.0), "Self-emp-not-inc": (0.08, -0.2), "Local-gov": (0.07, 0.0),
    "State-gov": (0.04, -0.1), "Self-emp-inc": (0.035, 0.7), "Federal-gov": (0.03, 0.5),
    "Without-pay": (0.005, -3.0),
}
MARITAL = {
    "Married-civ-spouse": (0.466, 2.0), "Never-married": (0.322, -0.6), "Divorced": (0.14, 0.0),
    "Separated": (0.031, -0.3), "Widowed": (0.027, 0.0), "Married-spouse-absent": (0.013, 0.0),
    "Married-AF-spouse": (0.001, 2.0),
}
OCCUPATION = {
    "Prof-specialty": (0.134, 0.6), "Craft-repair": (0.134, 0.0), "Exec-managerial": (0.132, 0.8),
    "Adm-clerical": (0.123, -0.1), "Sales": (0.119, 0.2), "Other-service": (0.106, -1.0),
    "Machine-op-inspct": (0.065, -0.3), "Transport-moving": (0.052, -0.1),
    "Handlers-cleaners": (0.045, -0.8), "Farming-fishing": (0.033, -1.0),
    "Tech-support": (0.030, 0.4), "Protective-serv": (0.021, 0.4), "Priv-house-serv": (0.005, -2.5),
    "Armed-Forces": (0.001, 0.0),
}
RACE = {"White": 0.86, "Black": 0.093, "Asian-Pac-Islander": 0.03, "Amer-Indian-Eskimo": 0.01,
        "Other": 0.007}
COUNTRY = {
    "United-States": 0.912, "Mexico": 0.02, "Philippines": 0.006, "Germany": 0.004,
    "Puerto-Rico": 0.004, "Canada": 0.004, "India": 0.003, "El-Salvador": 0.003, "Cuba": 0.003,
    "England": 0.003, "Jamaica": 0.003, "China": 0.0025, "Italy": 0.0025, "Vietnam": 0.002,
    "Guatemala": 0.002, "Japan": 0.002, "Poland": 0.002, "Columbia": 0.002, "Iran": 0.0015,
    "Haiti": 0.0015, "Taiwan": 0.0015, "Portugal": 0.0015, "Dominican-Republic": 0.0015,
}
COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
    "native_country", "income",
]


def _pick(rng: np.random.Generator, table: dict, n: int) -> np.ndarray:
    names = list(table)
    shares = np.array([v[0] if isinstance(v, tuple) else v for v in table.values()], float)
    return rng.choice(names, size=n, p=shares / shares.sum())


def _effect(table: dict, values: np.ndarray) -> np.ndarray:
    return pd.Series(values).map({k: v[1] for k, v in table.items()}).to_numpy()


def generate(rows: int, seed: int = 0, bad_every: int = 1000) -> pd.DataFrame:
    """A census-like frame of ``rows`` rows; the same seed gives the same frame."""
    rng = np.random.default_rng(seed)
    n = rows
    age = np.clip(np.round(17 + rng.gamma(2.2, 9.7, n)), 17, 90).astype(int)
    edu_names = list(EDUCATION)
    edu_share = np.array([EDUCATION[e][1] for e in edu_names])
    education = rng.choice(edu_names, size=n, p=edu_share / edu_share.sum())
    education_num = pd.Series(education).map({k: v[0] for k, v in EDUCATION.items()}).to_numpy()
    sex = rng.choice(["Male", "Female"], size=n, p=[0.675, 0.325])
    marital = _pick(rng, MARITAL, n)
    young = age < 25
    marital = np.where(young & (rng.random(n) < 0.6), "Never-married", marital)
    married = np.char.startswith(marital.astype(str), "Married")
    relationship = np.where(
        married,
        np.where(sex == "Male", "Husband", "Wife"),
        np.where(
            young & (rng.random(n) < 0.6),
            "Own-child",
            rng.choice(["Not-in-family", "Unmarried", "Other-relative"], size=n,
                       p=[0.65, 0.28, 0.07]),
        ),
    )
    workclass = _pick(rng, WORKCLASS, n)
    occupation = _pick(rng, OCCUPATION, n)
    hours = np.clip(np.round(rng.normal(40, 11, n) + 4 * (occupation == "Exec-managerial")),
                    1, 99).astype(int)
    hours = np.where(rng.random(n) < 0.45, 40, hours)
    capital_gain = np.where(
        rng.random(n) < 0.084, np.round(rng.lognormal(8.3, 1.0, n)).astype(int), 0
    )
    capital_gain = np.where(rng.random(n) < 0.005, 99999, capital_gain)
    capital_loss = np.where(
        rng.random(n) < 0.047, np.round(rng.normal(1870, 360, n)).clip(155, 4356), 0
    ).astype(int)

    logit = (
        -7.5
        + 0.36 * education_num
        + 0.055 * (age - 17) - 0.0009 * (age - 45) ** 2
        + 0.035 * (hours - 40)
        + 0.35 * (sex == "Male")
        + _effect(MARITAL, marital)
        + _effect(WORKCLASS, workclass)
        + _effect(OCCUPATION, occupation)
        + 3.0 * (capital_gain > 5000)
        + 0.8 * (capital_loss > 1800)
    )
    rich = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "age": age.astype(object),
            "workclass": workclass,
            "fnlwgt": np.round(rng.lognormal(12.0, 0.5, n)).astype(int),
            "education": education,
            "education_num": education_num,
            "marital_status": marital,
            "occupation": occupation,
            "relationship": relationship,
            "race": _pick(rng, RACE, n),
            "sex": sex,
            "capital_gain": capital_gain,
            "capital_loss": capital_loss,
            "hours_per_week": hours,
            "native_country": _pick(rng, COUNTRY, n),
            "income": np.where(rich, ">50K", "<=50K").astype(object),
        },
        columns=COLUMNS,
    )
    if bad_every > 0:
        bad = np.arange(200 + bad_every // 2, n, bad_every)
        frame.loc[bad[0::2], "income"] = None
        frame.loc[bad[1::2], "age"] = "unknown"
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--out", required=True, help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bad-every", type=int, default=1000,
                        help="break every Nth row (0: none)")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    generate(args.rows, args.seed, args.bad_every).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
