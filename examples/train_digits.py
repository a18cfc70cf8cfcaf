"""Train a small neural network on scikit-learn's handwritten digits with expbox.

The data set ships inside scikit-learn (1,797 images of 8x8 pixels), so nothing is
downloaded. The model is a one-hidden-layer network in NumPy, trained with
mini-batch SGD; every step logs the batch loss and accuracy, every epoch logs the
test loss and accuracy, and the end leaves a loss curve in ``figures/``.

    python examples/train_digits.py [--epochs N] [--results-root DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import expbox as xb

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "digits.yaml"))
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    parser.add_argument("--results-root", default="results")
    parser.add_argument("--logger", default="file", choices=["file", "wandb", "none"])
    return parser.parse_args()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class TwoLayerNet:
    """``x -> relu(x W1 + b1) W2 + b2``, trained by plain SGD with weight decay."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator):
        self.w1 = rng.normal(0, np.sqrt(2 / n_in), (n_in, n_hidden))
        self.b1 = np.zeros(n_hidden)
        self.w2 = rng.normal(0, np.sqrt(2 / n_hidden), (n_hidden, n_out))
        self.b2 = np.zeros(n_out)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        return hidden, softmax(hidden @ self.w2 + self.b2)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        _, probs = self.forward(x)
        loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
        return float(loss), float((probs.argmax(axis=1) == y).mean())

    def sgd_step(self, x, y, lr: float, weight_decay: float) -> tuple[float, float]:
        hidden, probs = self.forward(x)
        n = len(y)
        loss = -np.log(probs[np.arange(n), y] + 1e-12).mean()
        accuracy = (probs.argmax(axis=1) == y).mean()

        grad_logits = probs.copy()
        grad_logits[np.arange(n), y] -= 1.0
        grad_logits /= n
        grad_w2 = hidden.T @ grad_logits + weight_decay * self.w2
        grad_hidden = (grad_logits @ self.w2.T) * (hidden > 0)
        grad_w1 = x.T @ grad_hidden + weight_decay * self.w1

        self.w2 -= lr * grad_w2
        self.b2 -= lr * grad_logits.sum(axis=0)
        self.w1 -= lr * grad_w1
        self.b1 -= lr * grad_hidden.sum(axis=0)
        return float(loss), float(accuracy)


def main() -> None:
    args = parse_args()
    ctx = xb.init(
        project="digits",
        title="two-layer net on sklearn digits",
        purpose="main example: a real classifier logged with expbox",
        config=args.config,
        logger=args.logger,
        results_root=args.results_root,
    )
    cfg = ctx.config
    epochs = args.epochs if args.epochs is not None else cfg["training"]["epochs"]

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        digits.target,
        test_size=cfg["data"]["test_fraction"],
        random_state=cfg["data"]["seed"],
        stratify=digits.target,
    )
    rng = np.random.default_rng(cfg["data"]["seed"])
    net = TwoLayerNet(x.shape[1], cfg["model"]["hidden"], 10, rng)
    batch = cfg["training"]["batch_size"]

    step = 0
    epoch_losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss, acc = net.sgd_step(
                x_train[idx],
                y_train[idx],
                cfg["training"]["learning_rate"],
                cfg["training"]["weight_decay"],
            )
            ctx.logger.log_metrics({"train/loss": loss, "train/acc": acc}, step=step)
            step += 1
        test_loss, test_acc = net.evaluate(x_test, y_test)
        epoch_losses.append(test_loss)
        ctx.logger.log_metrics(
            {"epoch": epoch, "test/loss": test_loss, "test/acc": test_acc}, step=step
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = ctx.metrics(keys=["train/loss"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [r["step"] for r in records if "train/loss" in r],
        [r["train/loss"] for r in records if "train/loss" in r],
        lw=0.6,
        label="train (batch)",
    )
    ax.plot(
        [(e + 1) * (step // epochs) for e in range(epochs)],
        epoch_losses,
        "o-",
        label="test",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    ctx.logger.log_figure(fig, "loss_curve")
    plt.close(fig)

    ctx.meta.final_note = (
        f"test accuracy {test_acc:.3f} after {epochs} epochs ({step} steps)"
    )
    xb.save(ctx)
    print(f"box: {ctx.paths.root}")
    print(ctx.meta.final_note)


if __name__ == "__main__":
    main()
