"""The workshop's long/short forecaster, rebuilt in PyTorch with honest splits and baselines.

Inputs: `features.workshop` (31 columns, or 35 with the extras). Outputs: two sigmoid
probabilities, that a long and that a short trade decided at the bar's close reaches its target
before its stop within `horizon` bars (`features.labels`). Network: Linear(inputs, 31)-ReLU-
Dropout-Linear(31, 15)-ReLU-Dropout-Linear(15, 2), binary cross-entropy (on logits, which is the
sigmoid + BCE of the workshop computed stably), Adam.

Splits are chronological: train (fit + an early-stopping slice carved from its end), validation
(where the ML strategy chooses its thresholds) and test (scored once). Every split is purged:
a row belongs to it only if its label's `horizon` bars end inside it, so no label straddles a
boundary. Features are standardised with the fit slice's statistics only.

Training is seeded and deterministic (one thread, torch's RNG forked and seeded, no
nondeterministic kernels, kernels pinned by `algotrading.numerics`): the same data and config give
identical weights and metrics on any x86-64 CPU; `meta["weights_sha256"]` names the weights.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from algotrading import features, numerics
from algotrading.params import build, check, param

ARTIFACT_FORMAT = 1
WEIGHTS, META = "model.pt", "model.json"
OUTPUTS = ("long", "short")
SPLITS = ("fit", "early_stop", "validation", "test")
MODELS = ("network", "majority", "logistic", "gbt")
SCORES = ("precision", "recall", "f1", "roc_auc", "balanced_accuracy")
# what the entry prints as `name=value;` (SageMaker metric definitions match these names)
METRICS = tuple(f"test_{m}_{o}" for m in ("roc_auc", "f1", "balanced_accuracy") for o in OUTPUTS) \
    + ("early_stop_loss", "best_epoch")


@dataclass(frozen=True)
class Config:
    """Everything a training run depends on (the hyperparameters of the SageMaker job)."""

    symbol: str = param("GSPC")
    split: str = param("periods", choices=("periods", "workshop"),
                       help="periods: by dates; workshop: first 40 % train, the rest test")
    train_end: str = param("2006-12-31", help="train: first bar .. train_end")
    validation_end: str = param("2012-12-31", help="validation: .. validation_end; test: the rest")
    horizon: int = param(5, ge=1)
    target: float = param(0.02, gt=0)
    stop: float = param(0.015, gt=0)
    label_mode: str = param("barrier", choices=features.LABEL_MODES)
    extra_features: bool = param(False)
    epochs: int = param(100, ge=1)
    batch_size: int = param(64, ge=1)
    learning_rate: float = param(1e-3, gt=0)
    dropout: float = param(0.2, ge=0, lt=1)
    patience: int = param(10, ge=1, help="epochs without a better early-stopping loss before stopping")
    early_stop_fraction: float = param(0.2, gt=0, lt=1,
                                       help="the end of the train period held out for early stopping")
    seed: int = param(42)

    def __post_init__(self) -> None:
        check(self, "forecast")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Config:
        """A Config from hyperparameters (strings or values); unknown names are refused."""
        return build(cls, params, "forecast")


class Net(nn.Module):
    """The workshop's MLP; forward gives logits, `torch.sigmoid` of them the probabilities."""

    def __init__(self, inputs: int = 31, dropout: float = 0.2):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(inputs, 31), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(31, 15), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(15, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --- data --------------------------------------------------------------------------------------

def split_rows(index: pd.DatetimeIndex, cfg: Config) -> dict[str, np.ndarray]:
    """Row positions of each split (SPLITS), chronological and purged (see the module doc)."""
    n = len(index)
    if cfg.split == "workshop":
        cut = int(n * 0.4)
        bounds = {"train": (0, cut), "validation": (cut, cut), "test": (cut, n)}
    else:
        a = int(index.searchsorted(pd.Timestamp(cfg.train_end), side="right"))
        b = int(index.searchsorted(pd.Timestamp(cfg.validation_end), side="right"))
        if not 0 < a < b < n:
            raise ValueError(f"need {index[0].date()} <= train_end < validation_end < "
                             f"{index[-1].date()}; got {cfg.train_end}, {cfg.validation_end}")
        bounds = {"train": (0, a), "validation": (a, b), "test": (b, n)}
    start, end = bounds.pop("train")
    cut = end - int((end - start) * cfg.early_stop_fraction)
    bounds = {"fit": (start, cut), "early_stop": (cut, end), **bounds}
    h = cfg.horizon
    return {name: np.arange(lo, max(lo, hi - h)) for name, (lo, hi) in bounds.items()}


def fingerprint(prices: pd.DataFrame) -> str:
    """sha256 of the bars as CSV: which data a model was trained on."""
    return hashlib.sha256(prices.to_csv().encode()).hexdigest()


@dataclass
class Dataset:
    """Features, labels and split positions of one symbol's bars."""

    prices: pd.DataFrame
    X: pd.DataFrame
    y: pd.DataFrame
    rows: dict[str, np.ndarray]

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows[name]
        return self.X.to_numpy(np.float32)[r], self.y.to_numpy(np.float32)[r]

    def rates(self) -> pd.DataFrame:
        """Label rates per split (the balance each model must beat)."""
        return pd.DataFrame({name: features.label_rates(self.y.iloc[r])
                             for name, r in self.rows.items()}).T


def dataset(prices: pd.DataFrame, cfg: Config) -> Dataset:
    X = features.workshop(prices, extra=cfg.extra_features)
    y = features.labels(prices, cfg.horizon, cfg.target, cfg.stop, cfg.label_mode)
    rows = split_rows(prices.index, cfg)
    for name in ("fit", "early_stop"):
        if len(rows[name]) < 50:
            raise ValueError(f"the {name} slice has {len(rows[name])} rows; move train_end later")
    return Dataset(prices, X, y, rows)


# --- training ----------------------------------------------------------------------------------

@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded torch RNG, deterministic algorithms and one thread (torch, BLAS and OpenMP) for the
    block; the caller's state is restored after. One thread is also the fast choice: on 2 busy
    cores scikit-learn's OpenMP threads made the gradient-boosted baseline 30x slower. Kernels
    that round the same on every CPU come from `algotrading.numerics`."""
    was = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]), numerics.one_thread():
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)


@dataclass
class Scaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        std = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.std).astype(np.float32)


@dataclass
class Forecaster:
    """A trained network with its scaler and metadata; `predict` scores every bar at once."""

    net: Net
    scaler: Scaler
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return Config(**self.meta["config"])

    def probabilities(self, X: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            return torch.sigmoid(self.net(torch.from_numpy(self.scaler(X)))).numpy()

    def predict(self, prices: pd.DataFrame) -> pd.DataFrame:
        """p_long, p_short for every bar (one batched forward pass; bar t uses bars <= t)."""
        X = features.workshop(prices, extra=self.config.extra_features).to_numpy(np.float32)
        p = self.probabilities(X)
        return pd.DataFrame({"p_long": p[:, 0], "p_short": p[:, 1]}, index=prices.index)


def _loss(net: Net, X: torch.Tensor, y: torch.Tensor, loss: nn.Module) -> float:
    net.eval()
    with torch.no_grad():
        return float(loss(net(X), y))


def fit(data: Dataset, cfg: Config) -> tuple[Forecaster, pd.DataFrame]:
    """Train with early stopping on the early-stopping slice; returns the best epoch's model and
    the training curve (epoch, fit_loss, early_stop_loss)."""
    X_fit, y_fit = data.part("fit")
    X_es, y_es = data.part("early_stop")
    scaler = Scaler.fit(X_fit)
    kernels = numerics.check("forecast training")
    with _deterministic(cfg.seed):
        net = Net(X_fit.shape[1], cfg.dropout)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        loss = nn.BCEWithLogitsLoss()
        xf, yf = torch.from_numpy(scaler(X_fit)), torch.from_numpy(y_fit)
        xe, ye = torch.from_numpy(scaler(X_es)), torch.from_numpy(y_es)
        best, best_state, wait, curve = np.inf, copy.deepcopy(net.state_dict()), 0, []
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            total = 0.0
            for batch in torch.randperm(len(xf)).split(cfg.batch_size):
                opt.zero_grad()
                value = loss(net(xf[batch]), yf[batch])
                value.backward()
                opt.step()
                total += value.item() * len(batch)
            es = _loss(net, xe, ye, loss)
            curve.append({"epoch": epoch, "fit_loss": total / len(xf), "early_stop_loss": es})
            if es < best - 1e-6:
                best, best_state, wait = es, copy.deepcopy(net.state_dict()), 0
            else:
                wait += 1
                if wait >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
    history = pd.DataFrame(curve).set_index("epoch")
    meta = {"format": ARTIFACT_FORMAT, "config": asdict(cfg), "features": list(data.X.columns),
            "best_epoch": int(history["early_stop_loss"].idxmin()), "early_stop_loss": float(best),
            "weights_sha256": numerics.weights_sha256(net.state_dict()), "numerics": kernels}
    return Forecaster(net, scaler, meta), history


# --- evaluation --------------------------------------------------------------------------------

def baselines(data: Dataset, seed: int) -> dict[str, Any]:
    """The three baselines, fitted per output on the same (standardised) fit slice."""
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = data.part("fit")
    scaler = Scaler.fit(X)
    makers = {
        "majority": lambda: DummyClassifier(strategy="most_frequent"),
        "logistic": lambda: LogisticRegression(max_iter=2000),
        "gbt": lambda: HistGradientBoostingClassifier(random_state=seed),
    }
    with _deterministic(seed):
        return {name: (scaler, [make().fit(scaler(X), y[:, j]) for j in range(len(OUTPUTS))])
                for name, make in makers.items()}


def _baseline_scores(model: Any, X: np.ndarray) -> np.ndarray:
    scaler, per_output = model
    return np.stack([est.predict_proba(scaler(X))[:, list(est.classes_).index(1.0)]
                     if 1.0 in est.classes_ else np.zeros(len(X)) for est in per_output], axis=1)


def scores(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Classification scores of probabilities `p` for labels `y` (one output)."""
    from sklearn import metrics as skm

    pred = (p > threshold).astype(float)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0.0, 1.0]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "precision": skm.precision_score(y, pred, zero_division=0.0),
        "recall": skm.recall_score(y, pred, zero_division=0.0),
        "f1": skm.f1_score(y, pred, zero_division=0.0),
        "roc_auc": skm.roc_auc_score(y, p) if both else float("nan"),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred) if both else float("nan"),
        "accuracy": float((pred == y).mean()),
        "label_rate": float(y.mean()), "predicted_rate": float(pred.mean()),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


def evaluate(model: Forecaster, data: Dataset, split: str = "test",
             others: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per (model, output) on `split`: the scores of the network and each baseline."""
    X, y = data.part(split)
    with _deterministic(0):
        probs = {"network": model.probabilities(X)}
        probs.update({name: _baseline_scores(m, X) for name, m in (others or {}).items()})
    rows = [{"model": name, "output": out, **scores(y[:, j], p[:, j])}
            for name, p in probs.items() for j, out in enumerate(OUTPUTS)]
    return pd.DataFrame(rows).set_index(["model", "output"])


def summary(table: pd.DataFrame, prefix: str = "test_") -> dict[str, float]:
    """The network's headline numbers as flat `METRICS` names."""
    net = table.loc["network"]
    return {f"{prefix}{m}_{o}": float(net.loc[o, m])
            for m in ("roc_auc", "f1", "balanced_accuracy") for o in OUTPUTS}


def train(prices: pd.DataFrame, cfg: Config) -> tuple[Forecaster, dict[str, Any]]:
    """Features, labels, splits, the network and the baselines; returns the model (its `meta`
    holds config, scaler, data fingerprint and metrics) and a report with the tables."""
    data = dataset(prices, cfg)
    model, history = fit(data, cfg)
    table = evaluate(model, data, "test", baselines(data, cfg.seed))
    model.meta |= {
        "data": {"sha256": fingerprint(prices), "symbol": cfg.symbol, "rows": len(prices),
                 "first": prices.index[0].date().isoformat(),
                 "last": prices.index[-1].date().isoformat()},
        "splits": {k: [prices.index[r[0]].date().isoformat(), prices.index[r[-1]].date().isoformat(),
                       len(r)] if len(r) else [None, None, 0] for k, r in data.rows.items()},
        "metrics": summary(table) | {"early_stop_loss": model.meta["early_stop_loss"],
                                     "best_epoch": model.meta["best_epoch"]},
        "evaluation": json.loads(table.reset_index().to_json(orient="records")),
        "history": json.loads(history.reset_index().to_json(orient="records")),
    }
    return model, {"data": data, "history": history, "evaluation": table,
                   "rates": data.rates()}


# --- artifacts ---------------------------------------------------------------------------------

def save(model: Forecaster, folder: str | Path) -> Path:
    """state_dict as model.pt and everything else (config, features, scaler, data fingerprint,
    metrics, training curve) as model.json, in `folder` (SageMaker's model dir)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**model.meta, "scaler": {"mean": model.scaler.mean.tolist(),
                                     "std": model.scaler.std.tolist()}}
    torch.save(model.net.state_dict(), folder / WEIGHTS)
    (folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return folder


def load(path: str | Path) -> Forecaster:
    """A saved model from its folder, a local model.tar.gz or an s3:// URL of one (what a
    SageMaker training job leaves in `<output_path>/<job>/output/model.tar.gz`)."""
    text = str(path)
    if text.startswith("s3://"):
        from algotrading import aws

        bucket, _, key = text[5:].partition("/")
        body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return _from_tar(io.BytesIO(body), text)
    path = Path(path)
    if path.is_file() and path.name.endswith(".tar.gz"):
        with path.open("rb") as handle:
            return _from_tar(handle, text)
    if not (path / META).is_file():
        raise FileNotFoundError(f"{path}: no {META} here; train the model first "
                                "(3_Models/Train_Model_Forecast.ipynb or `algotrading train forecast`)")
    meta = json.loads((path / META).read_text())
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{path}: artifact format {meta.get('format')!r}, expected {ARTIFACT_FORMAT}")
    scaler = Scaler(np.asarray(meta["scaler"]["mean"], np.float32),
                    np.asarray(meta["scaler"]["std"], np.float32))
    net = Net(len(meta["features"]), meta["config"]["dropout"])
    net.load_state_dict(torch.load(path / WEIGHTS, weights_only=True))
    net.eval()
    return Forecaster(net, scaler, meta)


def _from_tar(handle: Any, origin: str) -> Forecaster:
    with tempfile.TemporaryDirectory(prefix="algotrading-model-") as tmp, \
            tarfile.open(fileobj=handle, mode="r:gz") as tar:
        names = {Path(m.name).name for m in tar.getmembers()}
        if not {META, WEIGHTS} <= names:
            raise ValueError(f"{origin}: a model.tar.gz with {META} and {WEIGHTS} expected, "
                             f"found {sorted(names)}")
        tar.extractall(tmp, filter="data")
        found = next(Path(tmp).rglob(META)).parent
        return load(found)


def pack(folder: str | Path, target: str | Path) -> Path:
    """model.tar.gz of a model folder, laid out as SageMaker packs SM_MODEL_DIR (files at top)."""
    target = Path(target)
    with tarfile.open(target, "w:gz") as tar:
        for item in sorted(Path(folder).iterdir()):
            tar.add(item, arcname=item.name)
    return target
