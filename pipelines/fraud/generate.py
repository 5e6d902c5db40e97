"""Writes the fraud example's data: payments, labelled rows and scoring requests.

    python pipelines/fraud/generate.py [--rows 20000] [--users 200] [--hours 48] [--labels 4000]

* ``payments.csv``: card payments (``pipelines/payments/generate.py``).
* ``labels.csv``: ``user_id``, ``label_time`` (ISO-8601), ``is_fraud``: a
  user's payment attempt at that time was fraud or not. The chance grows with
  the user's failed payments in the hour before, so the features as of the
  label's time predict it; features from after it would leak.
* ``requests.csv``: ``request_id``, ``user_id``, ``request_time``: one
  request per user a few minutes after the data's end, to score with the
  online store.

The same ``--seed`` gives the same files.
"""

import argparse
import importlib.util
import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))


def _payments_generator():
    path = os.path.join(HERE, "..", "payments", "generate.py")
    spec = importlib.util.spec_from_file_location("payments_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def _fails_before(payments: pd.DataFrame, users: np.ndarray, times: pd.Series) -> np.ndarray:
    """Each (user, time)'s failed payments in the hour before it."""
    failed = payments[payments["status"] == "failed"]
    by_user = {u: np.sort(t.to_numpy()) for u, t in failed.groupby("user_id")["t"]}
    out = np.zeros(len(users), dtype=np.int64)
    for i, (user, t) in enumerate(zip(users, times, strict=True)):
        seen = by_user.get(user, np.zeros(0))
        out[i] = np.searchsorted(seen, t) - np.searchsorted(seen, t - pd.Timedelta(hours=1))
    return out


def generate(rows: int, users: int, hours: float, labels: int, seed: int
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    payments = _payments_generator()(rows, users, hours, seed, bad_every=0)
    rng = np.random.default_rng(seed + 1)
    stamped = payments.assign(t=pd.to_datetime(payments["event_time"], utc=True))
    start, end = stamped["t"].min(), stamped["t"].max()
    who = rng.choice(payments["user_id"].unique(), labels)
    when = start + pd.Timedelta(hours=1) + pd.to_timedelta(
        rng.uniform(0, (end - start).total_seconds() - 3600, labels), unit="s")
    fails = _fails_before(stamped, who, pd.Series(when))
    chance = 1 / (1 + np.exp(3.0 - 1.5 * fails))
    labelled = pd.DataFrame({
        "user_id": who,
        "label_time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "is_fraud": (rng.random(labels) < chance).astype(int),
    })
    served = np.sort(payments["user_id"].unique())
    requests = pd.DataFrame({
        "request_id": range(len(served)),
        "user_id": served,
        "request_time": (end + pd.Timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    return payments, labelled, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--labels", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(HERE, "data", "generated"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    frames = generate(args.rows, args.users, args.hours, args.labels, args.seed)
    for name, frame in zip(("payments", "labels", "requests"), frames, strict=True):
        frame.to_csv(os.path.join(args.out, f"{name}.csv"), index=False)
        print(f"wrote {len(frame)} rows to {os.path.join(args.out, name + '.csv')}")


if __name__ == "__main__":
    main()
