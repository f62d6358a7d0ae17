"""Bad input, exhaustively: property-based tests that every malformed sweep or data file, or storage
URL, ends in one-line errors naming the file, exit code 2, no traceback, and no study created or altered.

The sweep-file limits (size, nesting depth, aliases expanded), bounded IDX and npz reading and bad
storage URLs have their own cases at the end. Hypothesis generates the cases; ``TRIED`` counts them
and the module prints the total when it ends (``pytest -rP`` shows it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_SWEEP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_sweep.cli.main import main
from mnist_sweep.data.dataset import load_arrays, read_idx
from mnist_sweep.errors import InputError
from mnist_sweep.sweep.loader import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_sweep, read_yaml

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
    from mnist_sweep.sweep.space import SearchSpace

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


# --- limits and hostile inputs (the attack pass) -----------------------------------------------------
#
# Each case below must end the same way: exit 2, exactly one line on stderr naming the input, no
# traceback, and nothing written (no storage, no studies/ folder, no other file in the test's folder).


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _assert_one_line_and_nothing_written(argv: list[str], root: Path, capsys: pytest.CaptureFixture[str],
                                         prefix: str, *, seconds: float = 5.0) -> str:
    before = _tree(root)
    start = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {prefix}"), captured.err
    assert _tree(root) == before, _tree(root) - before
    assert elapsed < seconds, f"{elapsed:.1f} s"
    return lines[0]


def _sweep_text(placeholder_at: str) -> str:
    """TINY_SWEEP as YAML with the value at ``placeholder_at`` (a dotted key) replaced by ``@VALUE@``."""
    sweep = yaml.safe_load(yaml.safe_dump(TINY_SWEEP))
    *parents, last = placeholder_at.split(".")
    target = sweep
    for key in parents:
        target = target[key]
    target[last] = "@VALUE@"
    return yaml.safe_dump(sweep, sort_keys=False)


_PLACES = st.sampled_from(["trials", "space.units", "space.dropout.low", "data.source", "description", "zz_unknown"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(MAX_DEPTH + 1, 5000), brackets=st.sampled_from(["[]", "{}"]), where=_PLACES)
def test_deep_nesting_is_one_line(tmp_path: Path, depth: int, brackets: str, where: str, capsys) -> None:
    TRIED["deep nesting"] += 1
    open_, close = brackets
    nested = (open_ + "a: ") * depth + "1" + close * depth if open_ == "{" else open_ * depth + close * depth
    path = tmp_path / "deep.yaml"
    path.write_text(_sweep_text(where).replace("'@VALUE@'", nested))
    line = _assert_one_line_and_nothing_written(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                                                tmp_path, capsys, str(path))
    assert "nested more than" in line or "limit" in line, line
    path.unlink()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(2, 12), extra=st.integers(0, 4), where=_PLACES)
def test_alias_bombs_are_one_line_and_quick(tmp_path: Path, width: int, extra: int, where: str, capsys) -> None:
    TRIED["alias bomb"] += 1
    levels = next(n for n in range(1, 40) if width ** n > MAX_NODES) + extra
    anchors = [f"&l0 [{', '.join(['lol'] * width)}]"] + [
        f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    text = "zz_defs: [" + ", ".join(anchors) + "]\n" + _sweep_text(where).replace("'@VALUE@'", f"*l{levels - 1}")
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    line = _assert_one_line_and_nothing_written(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                                                tmp_path, capsys, str(path), seconds=2.0)
    assert "alias" in line and len(line) < 300, line
    path.unlink()


_plain_text = st.text("abcxyz ", max_size=8)
_plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), _plain_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_plain_text, inner, max_size=3)),
    max_leaves=10)


@CASES
@given(value=_plain_values, copies=st.integers(1, 6))
def test_anchors_and_aliases_within_the_budget_read_as_yaml_says(tmp_path: Path, value, copies: int) -> None:
    """Shared values (which PyYAML writes as anchors and aliases) read back as ``yaml.safe_load`` reads them."""
    TRIED["aliases within budget"] += 1
    shared = [value] if not isinstance(value, (list, dict)) else value
    text = yaml.safe_dump({"shared": [shared] * copies, "again": shared, "base": {"k": shared}})
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    assert read_yaml(path) == yaml.safe_load(text)


_UNBUILDABLE = st.one_of(
    st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(1, 9999), st.integers(13, 99),
              st.integers(1, 28)),
    st.builds(lambda y, d: f"{y:04d}-02-{d:02d}", st.integers(1, 9999), st.integers(32, 99)),
    st.integers(4301, 20000).map(lambda n: "7" * n),
    st.sampled_from(["!!float abc", "!!int abc", "!!int 0x", "!!timestamp 2020-99", "!!set [1]", "!!bool maybe",
                     "!!pairs 1", "!!omap [1]", "!!python/object:os.system x", "&a [*a]", "*undefined",
                     "!!binary '@@@'", "!!str [1]", "!!map x"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scalar=_UNBUILDABLE, where=_PLACES)
def test_scalars_pyyaml_cannot_build_are_one_line(tmp_path: Path, scalar: str, where: str, capsys) -> None:
    TRIED["unbuildable scalar"] += 1
    path = tmp_path / "scalar.yaml"
    path.write_text(_sweep_text(where).replace("'@VALUE@'", scalar))
    _assert_one_line_and_nothing_written(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                                         tmp_path, capsys, str(path))
    path.unlink()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(MAX_BYTES + 1, 64 * MAX_BYTES), sparse=st.booleans())
def test_oversized_sweep_files_fail_before_they_are_read(tmp_path: Path, size: int, sparse: bool, capsys) -> None:
    TRIED["oversized sweep"] += 1
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        if sparse:
            fh.truncate(size)
        else:
            fh.write((b"# padding\n" * (size // 10 + 1))[:size])
    line = _assert_one_line_and_nothing_written(["run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}"],
                                                tmp_path, capsys, str(path), seconds=1.0)
    assert "limit" in line
    path.unlink()


# --- limits of data files ------------------------------------------------------------------------------


@CASES
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), payload=st.integers(0, 3000),
       gz=st.booleans(), scale=st.sampled_from([1, 1, 28, 2**16]))
def test_idx_headers_of_any_shape_are_checked_before_reading(tmp_path: Path, dims: list[int], payload: int,
                                                             gz: bool, scale: int) -> None:
    TRIED["idx header shape"] += 1
    dims = [d % (scale * 64) if scale < 2**16 else d for d in dims]
    raw = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(payload)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(raw, compresslevel=1) if gz else raw)
    start = time.perf_counter()
    try:
        array = read_idx(path)
    except InputError as err:
        assert len(err.problems) == 1 and err.problems[0].startswith(str(path)), err.problems
    else:
        assert list(array.shape) == dims and array.size == payload
    assert time.perf_counter() - start < 1


@CASES
@given(images=_images, extra=st.integers(1, 5000))
def test_gzip_idx_holding_more_than_its_header_is_refused(tmp_path: Path, images: np.ndarray, extra: int) -> None:
    TRIED["idx longer than header"] += 1
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(_idx(images) + bytes(extra), compresslevel=1))
    with pytest.raises(InputError, match="longer than the") as err:
        read_idx(path)
    assert err.value.problems[0].startswith(str(path))


def _npy(shape: tuple, descr: str, data: bytes = b"") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue() + data


def _good_npz_members() -> dict[str, bytes]:
    members = {}
    for key, array in (("x_train", np.zeros((4, 28, 28), np.uint8)), ("y_train", np.arange(4) % 2),
                       ("x_test", np.zeros((2, 28, 28), np.uint8)), ("y_test", np.arange(2) % 2)):
        out = io.BytesIO()
        np.save(out, array)
        members[key] = out.getvalue()
    return members


@st.composite
def _bad_npz(draw) -> bytes:
    """The bytes of an .npz with one defect."""
    kind = draw(st.sampled_from(["declared shape", "object dtype", "truncated zip", "junk after PK", "npy renamed",
                                 "member not npy", "missing member", "truncated member"]))
    TRIED[f"npz: {kind}"] += 1
    members = _good_npz_members()
    key = draw(st.sampled_from(sorted(members)))
    if kind == "declared shape":
        shape = tuple(draw(st.lists(st.integers(1, 2**40), min_size=1, max_size=4)))
        members[key] = _npy(shape, draw(st.sampled_from(["|u1", "<i8", "<f4", "<U10", "<c16"])))
    elif kind == "object dtype":
        members[key] = _npy((3,), "|O", b"\x80\x04N.")
    elif kind == "npy renamed":
        return members["x_train"]
    elif kind == "junk after PK":
        return b"PK\x03\x04" + draw(st.binary(max_size=200))
    elif kind == "member not npy":
        members[key] = draw(st.binary(max_size=200))
    elif kind == "missing member":
        del members[key]
    elif kind == "truncated member":
        members[key] = members[key][: draw(st.integers(0, len(members[key]) - 1))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    data = out.getvalue()
    return data[: draw(st.integers(0, len(data) - 1))] if kind == "truncated zip" else data


@CASES
@given(data=_bad_npz())
def test_bad_npz_files_are_one_line_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as err:
            load_arrays(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(str(path)), err.value.problems
    assert peak < 64 * 2**20  # nothing the header declares is allocated before it is checked


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_bad_npz())
def test_bad_npz_files_exit_2_through_the_cli(tmp_path: Path, data: bytes, capsys) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    _assert_one_line_and_nothing_written(["run", "quick", "--data", str(path), "--storage",
                                          f"sqlite:///{tmp_path / 's.db'}"], tmp_path, capsys, str(path))


# --- storage URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["\r", "bad\nurl", "\x85", "a\u2028b", "{", "sqlite:///\x00x",
                                 "sqlite:///" + "d/" * 2000 + "x.db", "sqlite:///" + "n" * 300 + "/x.db"])
def test_storage_urls_with_control_characters_braces_or_impossible_paths(tmp_path: Path, url: str, capsys) -> None:
    _assert_one_line_and_nothing_written(["studies", f"--storage={url}"], tmp_path, capsys, "")
    _assert_one_line_and_nothing_written(["run", "quick", f"--storage={url}"], tmp_path, capsys, "")


_NOT_URLS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40).filter(
    lambda u: "://" not in u and not u.startswith("sqlite:"))
_UNREACHABLE = st.builds(lambda dialect, db: f"{dialect}://me:s3cret-pw@localhost:1/{db}?sslpassword=s3cret-pw",
                         st.sampled_from(["nosuchdb", "postgresql+nosuchdriver", "mysql+nosuchdriver", "oracle",
                                          "postgresql", "mssql+nosuch"]), st.text("abc", min_size=1, max_size=6))
_MISSING_SQLITE = st.builds(lambda folder, name: f"sqlite:///{folder}/{name}.db",
                            st.sampled_from(["missing", "missing/deeper", "."]),
                            st.text("abc_", min_size=1, max_size=20))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.one_of(_NOT_URLS, _UNREACHABLE, _MISSING_SQLITE),
       command=st.sampled_from(["studies", "report", "trials", "export"]))
def test_bad_storage_urls_for_reading_commands_exit_2(tmp_path: Path, url: str, command: str, capsys) -> None:
    """Commands that read a storage never create one: a bad or missing one is one line, the password masked."""
    TRIED["storage url (read)"] += 1
    line = _assert_one_line_and_nothing_written([command, f"--storage={url}"], tmp_path, capsys, "", seconds=15)
    assert "s3cret-pw" not in line


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.one_of(_NOT_URLS.filter(bool), _UNREACHABLE))
def test_bad_storage_urls_for_run_exit_2(tmp_path: Path, write_sweep, url: str, capsys) -> None:
    TRIED["storage url (run)"] += 1
    sweep = write_sweep()
    line = _assert_one_line_and_nothing_written(["run", str(sweep), f"--storage={url}"], tmp_path, capsys, "",
                                                seconds=15)
    assert "s3cret-pw" not in line
