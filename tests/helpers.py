"""What several test files share: the tiny sweep, a free port, a scratch database on a running server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: A sweep that trains in about a second per trial: 2,000 training and 1,000 validation images.
TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "trials": 3,
    "seed": 0,
    "sampler": {"name": "tpe", "n_startup_trials": 2},
    "pruner": {"name": "none"},
    "data": {"validation_size": 1000, "train_size": 2000},
    "space": {
        "hidden_layers": {"low": 0, "high": 1},
        "units": [16, 32],
        "dropout": {"low": 0.0, "high": 0.3, "step": 0.1},
        "optimizer": ["sgd", "adam"],
        "batch_size": 128,
        "epochs": {"low": 1, "high": 2},
        "learning_rate": {"low": 1e-3, "high": 1e-1, "log": True},
    },
    "heartbeat": {"interval": 1, "grace_period": 3},
    "training": {"measure_latency": False},  # a second per trial; tests/test_api.py measures it
}



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def scratch_database(server: str, admin_database: str = "", drop_options: str = "") -> Iterator[str]:
    """A new, empty database on a running server (an SQLAlchemy URL without a database), created
    through ``admin_database`` and dropped on exit; yields its URL."""
    import sqlalchemy

    admin = sqlalchemy.create_engine(f"{server}/{admin_database}", isolation_level="AUTOCOMMIT")
    name = f"mnist_sweep_test_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield f"{server}/{name}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} {drop_options}".rstrip())
    finally:
        admin.dispose()


#: Classes of :func:`write_shapes`: they differ by a shape's size and position, not by its look.
SHAPES = ("bigdisc", "bottombar", "smalldisc", "topbar")


def write_shapes(root: Path, side: int = 16, train: int = 100, test: int = 25, seed: int = 7) -> Path:
    """An image folder (``root/train/<class>/``, ``root/test/<class>/``) of frame-filling shapes on
    ``side x side`` noisy black: a big or a small disc, a bar at the top or the bottom. MNIST's
    normalisation (crop to the ink, centre it) makes the two discs alike and the two bars alike,
    so a model served with it sees other pixels than it trained on."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng, s = np.random.default_rng(seed), side / 32  # the acceptance script's shapes, scaled to side

    def draw(kind: str) -> Image.Image:
        im = Image.new("L", (side, side), 0)
        pen = ImageDraw.Draw(im)
        cx, cy, fill = side / 2 + rng.integers(-1, 2), side / 2 + rng.integers(-1, 2), int(rng.integers(180, 256))
        if kind in ("bigdisc", "smalldisc"):
            r = s * (rng.integers(11, 14) if kind == "bigdisc" else rng.integers(4, 7))
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            y = s * (rng.integers(3, 8) if kind == "topbar" else rng.integers(22, 26))
            pen.rectangle([3 * s, y, side - 1 - 3 * s, min(side - 1, y + s * rng.integers(3, 6))], fill=fill)
        noisy = np.asarray(im, dtype=np.float32) + rng.normal(0, 12, (side, side))
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))

    for split, n in (("train", train), ("test", test)):
        for kind in SHAPES:
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                draw(kind).save(root / split / kind / f"{i}.png")
    return root
