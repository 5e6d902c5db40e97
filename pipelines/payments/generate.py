"""Writes a CSV stream of card payments for the FEATURES example (user_payment_fails).

    python pipelines/payments/generate.py --rows 20000 --users 200 --hours 48

Columns: ``user_id``, ``event_time`` (ISO-8601, UTC), ``amount``, ``status``
(``ok`` / ``failed``), ``reason`` (why a payment failed: ``nsf``, ``limit``,
``fraud``; empty when it went through) and ``merchant``. Users pay at
different rates and some fail far more often than others, so the features
differ between users. The same ``--seed`` gives the same file.

Every ``--bad-every``-th row (never among the first 200, which schema
inference samples) has an event time that is no time, so the pipeline's
``errors`` output has content.
"""

import argparse
import os

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-03-01T00:00:00Z")
MERCHANTS = [f"merchant_{i:02d}" for i in range(40)]
REASONS = ["nsf", "limit", "fraud"]


def generate(rows: int, users: int, hours: float, seed: int, bad_every: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rate = rng.gamma(1.0, 1.0, users)  # how often each user pays
    fail = rng.beta(1.0, 6.0, users)  # how often each user's payments fail
    user = rng.choice(users, rows, p=rate / rate.sum())
    seconds = np.sort(rng.uniform(0, hours * 3600, rows))
    failed = rng.random(rows) < fail[user]
    frame = pd.DataFrame({
        "user_id": user + 1000,
        "event_time": (START + pd.to_timedelta(np.round(seconds, 3), unit="s")).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"),
        "amount": np.round(rng.lognormal(3.0, 1.0, rows), 2),
        "status": np.where(failed, "failed", "ok"),
        "reason": np.where(failed, rng.choice(REASONS, rows, p=[0.6, 0.3, 0.1]), ""),
        "merchant": rng.choice(MERCHANTS, rows),
    })
    if bad_every:
        bad = np.arange(200 + bad_every, rows, bad_every)
        frame.loc[bad, "event_time"] = "not a time"
        frame.loc[bad, "status"] = "failed"
        frame.loc[bad, "reason"] = "nsf"
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-every", type=int, default=997)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "data",
                                                      "generated", "payments.csv"))
    args = parser.parse_args()
    frame = generate(args.rows, args.users, args.hours, args.seed, args.bad_every)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} payments to {args.out}")


if __name__ == "__main__":
    main()
