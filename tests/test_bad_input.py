"""Bad input, exhaustively: property-based tests that every malformed sweep or data file ends in
one-line errors naming the file, exit code 2, no traceback, and no study created or altered.

Hypothesis generates the cases; ``TRIED`` counts them and the session prints the total.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_SWEEP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_sweep.cli import main
from mnist_sweep.data import read_idx
from mnist_sweep.errors import InputError
from mnist_sweep.sweep_files import load_sweep

TRIED: Counter[str] = Counter()
CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print(f"\nmalformed inputs tried: {sum(TRIED.values())} ({dict(TRIED)})")


def _assert_rejected(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI refuses ``path`` with exit 2, one line per problem naming the file, no database written."""
    db = path.with_suffix(".db")
    code = main(["run", str(path), "--storage", f"sqlite:///{db}"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert lines and all(line.startswith(f"error: {path}") for line in lines), captured.err
    assert not db.exists()


# --- sweep files --------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_yaml_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                              st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                            max_leaves=8)


@CASES
@given(value=_yaml_values)
def test_random_yaml_documents_are_rejected_or_valid(tmp_path: Path, value, capsys) -> None:
    """Any YAML document either validates or is rejected with InputError: nothing else escapes."""
    TRIED["random yaml"] += 1
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump(value))
    try:
        load_sweep(path)
    except InputError as err:
        assert err.problems and all(line.startswith(str(path)) for line in err.problems)


_AXES = ["hidden_layers", "units", "dropout", "optimizer", "batch_size", "epochs", "learning_rate"]
_TOP_KEYS = ["trials", "timeout", "seed", "sampler", "pruner", "data", "space", "heartbeat"]


@st.composite
def _broken_sweeps(draw) -> dict:
    """A valid tiny sweep with one defect that must make it invalid."""
    sweep = yaml.safe_load(yaml.safe_dump(TINY_SWEEP))
    kind = draw(st.sampled_from(["unknown key", "wrong type", "inverted range", "huge number", "empty choices",
                                 "unknown name", "missing space", "negative"]))
    TRIED[kind] += 1
    if kind == "unknown key":
        where = draw(st.sampled_from(["top", "space", "axis", "sampler", "data"]))
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
        target = {"top": sweep, "space": sweep["space"], "axis": sweep["space"]["dropout"],
                  "sampler": sweep["sampler"], "data": sweep["data"]}[where]
        if key in target or (where == "top" and key in ("name", "description", "enqueue", "training", "source",
                                                         "direction")) or (where == "space" and len(key) > 0
                                                                            and key in _known_space_keys()):
            key = f"{key}_nonesuch"
        target[key] = draw(_scalars)
    elif kind == "wrong type":
        key = draw(st.sampled_from(["trials", "seed", "sampler", "data", "space"]))
        sweep[key] = draw(st.sampled_from(["many", [1, 2], {"x": 1}] if key != "space" else ["many", [1, 2], 3]))
    elif kind == "inverted range":
        axis = draw(st.sampled_from(["dropout", "learning_rate", "epochs", "hidden_layers"]))
        low = sweep["space"][axis]["low"]
        sweep["space"][axis] = {"low": low + 1, "high": low}
    elif kind == "huge number":
        key = draw(st.sampled_from(["epochs", "batch_size", "units", "hidden_layers"]))
        sweep["space"][key] = draw(st.integers(10**7, 10**40))
    elif kind == "empty choices":
        sweep["space"][draw(st.sampled_from(["optimizer", "units"]))] = {"choices": []}
    elif kind == "unknown name":
        where = draw(st.sampled_from(["sampler", "pruner", "optimizer"]))
        name = draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)) + "x"
        if where == "optimizer":
            sweep["space"]["optimizer"] = [name]
        else:
            sweep[where] = {"name": name}
    elif kind == "missing space":
        sweep["space"] = None
    else:
        sweep[draw(st.sampled_from(["trials", "timeout"]))] = draw(st.integers(-(10**9), 0))
    return sweep


def _known_space_keys() -> set[str]:
    from mnist_sweep.space import SearchSpace

    return set(SearchSpace.model_fields)


@CASES
@given(sweep=_broken_sweeps())
def test_broken_sweep_files_exit_2_with_one_line_per_problem(tmp_path: Path, sweep: dict, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(sweep))
    _assert_rejected(path, capsys)


@CASES
@given(junk=st.binary(min_size=1, max_size=200))
def test_non_utf8_and_binary_sweep_files(tmp_path: Path, junk: bytes, capsys) -> None:
    TRIED["binary"] += 1
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe" + junk)  # never valid UTF-8
    _assert_rejected(path, capsys)


def test_a_broken_sweep_does_not_touch_an_existing_study(write_sweep, sqlite_url: str, capsys) -> None:
    path = write_sweep(trials=1)
    assert main(["run", str(path), "--storage", sqlite_url]) == 0
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    broken = path.read_text().replace("trials: 1", "trials: -1")
    path.write_text(broken)
    capsys.readouterr()
    assert main(["run", str(path), "--storage", sqlite_url]) == 2
    assert "trials" in capsys.readouterr().err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


# --- data files ---------------------------------------------------------------------------------


def _idx(images: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, images.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    return header + images.astype(np.uint8).tobytes()


_images = st.integers(1, 5).flatmap(lambda n: st.just(np.random.default_rng(n).integers(0, 256, (n, 28, 28))))


@CASES
@given(images=_images, cut=st.integers(1, 4000), gz=st.booleans())
def test_truncated_idx_files_are_named(tmp_path: Path, images: np.ndarray, cut: int, gz: bool) -> None:
    TRIED["truncated idx"] += 1
    raw = _idx(images)
    raw = raw[: max(0, len(raw) - cut)]
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(raw)[: -1 if gz and cut % 2 else None] if gz else raw)
    with pytest.raises(InputError) as err:
        read_idx(path)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(str(path))


@CASES
@given(images=_images, magic=st.binary(min_size=4, max_size=4))
def test_wrong_magic_is_named(tmp_path: Path, images: np.ndarray, magic: bytes) -> None:
    TRIED["wrong magic"] += 1
    raw = _idx(images)
    if magic[:3] == raw[:3] and magic[3] == raw[3]:
        magic = b"\x01" + magic[1:]
    path = tmp_path / "x"
    path.write_bytes(magic + raw[4:])
    try:
        read_idx(path)
    except InputError as err:
        assert len(err.problems) == 1 and err.problems[0].startswith(str(path))
    else:  # a magic that is a valid IDX header of another shape must then describe these bytes exactly
        assert magic[:2] == b"\x00\x00"


@CASES
@given(images=_images, flip=st.integers(0, 10**6))
def test_checksum_mismatch_is_named(tmp_path: Path, images: np.ndarray, flip: int) -> None:
    TRIED["checksum mismatch"] += 1
    raw = bytearray(_idx(images))
    want = hashlib.sha256(raw).hexdigest()
    raw[16 + flip % (len(raw) - 16)] ^= 0xFF
    path = tmp_path / "x"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256 mismatch"):
        read_idx(path, expected_sha256=want)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_images=st.integers(1, 6), n_labels=st.integers(1, 6))
def test_mismatched_image_and_label_counts_exit_2(tmp_path: Path, n_images: int, n_labels: int, capsys) -> None:
    TRIED["count mismatch"] += 1
    rng = np.random.default_rng(0)
    if n_images == n_labels:
        n_labels += 1
    folder = tmp_path / f"data{n_images}_{n_labels}"
    folder.mkdir(exist_ok=True)
    for prefix, n in (("train", n_images), ("t10k", 3)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
    for prefix, n in (("train", n_labels), ("t10k", 3)):
        labels = rng.integers(0, 10, n)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
                                                             + labels.astype(np.uint8).tobytes())
    db = tmp_path / "counts.db"
    code = main(["run", "quick", "--data", str(folder), "--storage", f"sqlite:///{db}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and str(folder) in err
    assert not db.exists()
