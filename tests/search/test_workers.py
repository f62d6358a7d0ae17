"""Local workers' share of the machine: core lists, splitting the cores, pinning a process, spreading over GPUs."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

import mnist_sweep as ms
from mnist_sweep._base import devices
from mnist_sweep._base.devices import Device, describe_devices, visible_gpu_ids
from mnist_sweep._base.settings import allowed_cpus, format_cpu_list, parse_cpu_list, pin_to_cpus
from mnist_sweep.cli.args import build_parser
from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError
from mnist_sweep.search.workers import WorkersResult, cpu_shares, run_workers, worker_argv, worker_places


@pytest.mark.parametrize(("jobs", "cpus", "shares"), [
    (1, [0, 1], [[0, 1]]),
    (2, [0, 1], [[0], [1]]),
    (2, [0, 1, 2], [[0, 1], [2]]),
    (3, [4, 5, 6, 7, 8, 9, 10, 11], [[4, 5, 6], [7, 8, 9], [10, 11]]),
    (3, [0, 1], None),  # more workers than cores: they share every core
    (2, [], None),
])
def test_cores_are_split_into_disjoint_runs_that_use_every_core(jobs, cpus, shares) -> None:
    assert cpu_shares(jobs, cpus) == shares


@pytest.mark.parametrize("n_cpus", range(1, 17))
def test_every_split_that_fits_uses_each_core_once_in_runs_of_near_equal_size(n_cpus: int) -> None:
    cpus = list(range(100, 100 + 2 * n_cpus, 2))  # not 0..n-1, and not consecutive numbers
    assert cpu_shares(0, cpus) is None
    for jobs in range(1, n_cpus + 3):
        shares = cpu_shares(jobs, cpus)
        if jobs > n_cpus:
            assert shares is None  # more workers than cores: they share every core
            continue
        assert shares is not None and len(shares) == jobs and all(shares)
        assert [c for share in shares for c in share] == cpus  # each core once, in order: runs of neighbours
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(("text", "cpus"), [("0", [0]), ("0-3", [0, 1, 2, 3]), ("0-1,4,6-7", [0, 1, 4, 6, 7]),
                                             ("3,1,1", [1, 3])])
def test_core_lists_read_and_write_as_linux_writes_them(text: str, cpus: list[int]) -> None:
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "3-1", "-2", "0,,1"])
def test_malformed_core_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="pinning needs Linux")
def test_a_pinned_process_runs_on_its_cores_only() -> None:
    first = allowed_cpus()[0]
    code = (f"import os; from mnist_sweep._base.settings import pin_to_cpus; pin_to_cpus([{first}]); "
            "print(sorted(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"[{first}]"


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="pinning needs Linux")
def test_pinning_to_a_core_the_process_cannot_use_is_bad_input() -> None:
    missing = max(allowed_cpus()) + 1
    with pytest.raises(InputError, match=rf"--cpus: core {missing} is not available"):
        pin_to_cpus([missing])


def test_worker_refuses_a_bad_core_list_with_one_line(write_sweep, sqlite_url: str, capsys) -> None:
    path = str(write_sweep())
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", path, "--storage", sqlite_url, "--cpus", "0-x"])
    assert exit_info.value.code == 2 and "--cpus" in capsys.readouterr().err
    if allowed_cpus() is not None:
        missing = max(allowed_cpus()) + 1
        assert main(["worker", path, "--storage", sqlite_url, "--cpus", str(missing)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"core {missing} is not available" in err


def test_without_a_gpu_workers_get_the_command_lines_and_environment_of_before() -> None:
    places, split = worker_places(2, (), cpus=[0, 1])
    assert [(p.threads, p.cpus, p.env) for p in places] == [(1, [0], {}), (1, [1], {})]
    assert split == "on cores 0 | 1"
    assert worker_argv("s.json", "quick", places[1].threads, 1, cpus=places[1].cpus) == [
        sys.executable, "-m", "mnist_sweep", "worker", "s.json", "--study", "quick", "--threads", "1",
        "--worker-id", "1", "--cpus", "1"]
    places, split = worker_places(3, (), cpus=[0, 1])  # more workers than cores: all share them
    assert [(p.threads, p.cpus, p.env) for p in places] == [(1, None, {})] * 3
    assert split == "x 1 thread(s), sharing every core"
    assert worker_argv("s.json", "quick", 1, 2) == [sys.executable, "-m", "mnist_sweep", "worker", "s.json",
                                                    "--study", "quick", "--threads", "1", "--worker-id", "2"]


def test_workers_on_gpus_are_spread_unpinned_and_do_not_preallocate_a_shared_card() -> None:
    places, split = worker_places(4, ["0", "1"], cpus=[0, 1], environ={})
    shared = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    assert [(p.threads, p.cpus) for p in places] == [(None, None)] * 4  # every core, every thread
    assert [p.env for p in places] == [{"CUDA_VISIBLE_DEVICES": gpu, **shared} for gpu in "0101"]
    assert split == "on gpu 0 | 1 | 0 | 1, sharing every core"
    assert "--threads" not in worker_argv("s.json", "quick", None, 0) and "--cpus" not in worker_argv(
        "s.json", "quick", None, 0)
    alone, _ = worker_places(2, ["0", "GPU-8f2c"], environ={})  # a GPU each: it may preallocate
    assert [p.env for p in alone] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "GPU-8f2c"}]
    own, _ = worker_places(2, ["0"], environ={"XLA_PYTHON_CLIENT_PREALLOCATE": "true"})  # the user's choice stays
    assert [p.env for p in own] == [{"CUDA_VISIBLE_DEVICES": "0", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}] * 2


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # JAX, loaded by earlier tests in this process
def test_each_worker_gets_its_own_environment() -> None:
    argv = [sys.executable, "-c", "import os; print(os.environ['WHICH'], os.environ['SHARED'])"]
    out = io.StringIO()
    result = run_workers([argv, argv], env={"SHARED": "s"}, out=out, envs=[{"WHICH": "a"}, {"WHICH": "b"}])
    assert result.codes == [0, 0] and sorted(out.getvalue().splitlines()) == ["[w1] a s", "[w2] b s"]


def test_devices_are_named_for_the_first_line(monkeypatch) -> None:
    assert describe_devices([], cores=1) == "cpu (1 core)" and describe_devices([], cores=2) == "cpu (2 cores)"
    assert describe_devices([Device("gpu", "NVIDIA H200")]) == "gpu: NVIDIA H200"
    assert describe_devices([Device("gpu", "NVIDIA H200")] * 2) == "2 gpus: 2 x NVIDIA H200"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpu_ids(2) == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu_ids(2) == ["0", "1"] and visible_gpu_ids(0) == []


def test_without_a_gpu_driver_no_framework_is_started_to_look_for_one(monkeypatch) -> None:
    monkeypatch.setattr(devices, "machine_has_gpu", lambda: False)
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: pytest.fail("started a child"))
    assert devices.accelerators_in_child("jax") == []
    assert devices.accelerators("jax") == [] or devices.machine_has_gpu()  # this machine: a CPU


def _jobs_run(write_sweep, sqlite_url, monkeypatch, seen, gpus=None, **kw):
    """``run(jobs=2)`` up to the workers' start: their command lines and environments are recorded."""
    import mnist_sweep.search.runner as runner

    if seen is not None:
        monkeypatch.setattr(runner, "accelerators_in_child", lambda backend: seen)

    def fake(argvs, env=None, out=None, envs=None):
        calls.append((argvs, envs))
        return WorkersResult(codes=[0] * len(argvs))

    calls: list = []
    monkeypatch.setattr(runner, "run_workers", fake)
    out = io.StringIO()
    ms.run(str(write_sweep()), sqlite_url, jobs=2, gpus=gpus, out=out, **kw)
    return calls[0], out.getvalue().splitlines()[0]


def test_jobs_on_a_gpu_less_machine_start_workers_as_before(write_sweep, sqlite_url, monkeypatch) -> None:
    (argvs, envs), first = _jobs_run(write_sweep, sqlite_url, monkeypatch, None)
    assert "backend jax on cpu (" in first
    assert envs == [{}, {}]
    shares = cpu_shares(2)
    for i, argv in enumerate(argvs):
        assert argv[:4] == [sys.executable, "-m", "mnist_sweep", "worker"]
        assert argv[5:] == ["--study", "tiny", "--threads", str(len(shares[i]) if shares else 1), "--worker-id",
                            str(i)] + (["--cpus", format_cpu_list(shares[i])] if shares else [])


def test_jobs_on_gpus_spread_the_workers(write_sweep, sqlite_url, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    two = [Device("gpu", "NVIDIA H200")] * 2
    (argvs, envs), first = _jobs_run(write_sweep, sqlite_url, monkeypatch, two)
    assert "backend jax on 2 gpus: 2 x NVIDIA H200" in first and "2 workers on gpu 0 | 1" in first
    assert envs == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert not any("--cpus" in argv or "--threads" in argv for argv in argvs)
    (argvs, envs), _ = _jobs_run(write_sweep, sqlite_url, monkeypatch, two, gpus=["1"])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["1", "1"]
    assert all(env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for env in envs)
    with pytest.raises(InputError, match="--gpus: no GPU 7 "):
        _jobs_run(write_sweep, sqlite_url, monkeypatch, two, gpus=["7"])
    with pytest.raises(InputError, match="JAX sees no GPU"):
        _jobs_run(write_sweep, sqlite_url, monkeypatch, [], gpus=["0"])
    with pytest.raises(InputError, match="--jobs"):
        ms.run(str(write_sweep()), sqlite_url, gpus=["0"], out=io.StringIO())


def test_gpu_lists_parse() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "quick", "--jobs", "4", "--gpus", "0,1,1"]).gpus == ["0", "1"]
    assert parser.parse_args(["run", "quick"]).gpus is None
    assert parser.parse_args(["worker", "quick"]).gpus is None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "quick", "--gpus", "0,,1"])
