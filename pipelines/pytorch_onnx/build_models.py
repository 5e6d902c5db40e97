"""Builds the fraud example's data and models: one network, served as PyTorch and as ONNX.

    python pipelines/pytorch_onnx/build_models.py [--rows 4000]

1. Draws transactions (amount, hour, transactions in the last 24 hours,
   distance from home) with a fraud label that depends on them, into
   data/generated/train.csv and data/generated/transactions.csv (to score;
   two of its rows lack a feature on purpose, and go to the errors output).
2. Trains nets.FraudNet on train.csv with PyTorch and saves its state dict
   to models/fraud_net.pt (MODEL fraud_torch loads it with CLASS).
3. Writes the same network as an ONNX graph, built with onnx.helper from the
   state dict, to models/fraud_net.onnx (MODEL fraud_onnx), so both MODELs
   must give the same scores.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = ["amount", "hour", "tx_last_24h", "km_from_home"]
HIDDEN = 16


def transactions(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tx_id": [f"tx{seed}-{i:05d}" for i in range(rows)],
            "amount": np.round(rng.lognormal(3.5, 1.0, rows), 2),
            "hour": rng.integers(0, 24, rows),
            "tx_last_24h": rng.poisson(3, rows),
            "km_from_home": np.round(rng.exponential(15, rows), 1),
        }
    )
    night = (frame.hour < 6).astype(float)
    logit = (
        -4.0 + 0.012 * frame.amount + 1.5 * night + 0.25 * frame.tx_last_24h
        + 0.03 * frame.km_from_home
    )
    frame["is_fraud"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def train(frame: pd.DataFrame, seed: int = 0):
    import torch

    sys.path.insert(0, HERE)
    from nets import FraudNet

    torch.manual_seed(seed)
    x = torch.tensor(frame[FEATURES].to_numpy(), dtype=torch.float32)
    y = torch.tensor(frame["is_fraud"].to_numpy(), dtype=torch.float32)[:, None]
    net = FraudNet(features=len(FEATURES), hidden=HIDDEN)
    net.mean.copy_(x.mean(0))
    net.scale.copy_(x.std(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
    return net.eval(), loss.item()


def onnx_graph(state: dict) -> bytes:
    """FraudNet as an ONNX graph: (x - mean) / scale, Gemm, Relu, Gemm, Sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = [
        numpy_helper.from_array(state[name].numpy(), name)
        for name in ("mean", "scale", "hidden.weight", "hidden.bias", "out.weight", "out.bias")
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["standard"]),
        helper.make_node("Gemm", ["standard", "hidden.weight", "hidden.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["relu"]),
        helper.make_node("Gemm", ["relu", "out.weight", "out.bias"], ["logit"], transB=1),
        helper.make_node("Sigmoid", ["logit"], ["fraud_score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud_net",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)])],
        [helper.make_tensor_value_info("fraud_score", TensorProto.FLOAT, ["batch", 1])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build(root: str = HERE, rows: int = 4000) -> dict[str, str]:
    """Writes the data and both model files under ``root``; returns their paths by name."""
    import torch

    data = os.path.join(root, "data", "generated")
    models = os.path.join(root, "models")
    os.makedirs(data, exist_ok=True)
    os.makedirs(models, exist_ok=True)
    paths = {
        "train": os.path.join(data, "train.csv"),
        "transactions": os.path.join(data, "transactions.csv"),
        "torch": os.path.join(models, "fraud_net.pt"),
        "onnx": os.path.join(models, "fraud_net.onnx"),
    }
    training = transactions(rows, seed=1)
    training.to_csv(paths["train"], index=False)
    serve = transactions(max(rows // 10, 10), seed=2)
    serve.loc[3, "amount"] = np.nan  # broken rows: they go to the errors output
    serve.loc[7, "km_from_home"] = np.nan
    serve.to_csv(paths["transactions"], index=False)
    net, loss = train(training)
    print(f"trained FraudNet on {rows} rows: log loss {loss:.3f}")
    state = net.state_dict()
    torch.save(state, paths["torch"])
    with open(paths["onnx"], "wb") as f:
        f.write(onnx_graph(state))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000, help="training rows")
    args = parser.parse_args(argv)
    for name, path in build(rows=args.rows).items():
        print(f"{name}: {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
