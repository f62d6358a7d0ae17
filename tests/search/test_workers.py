"""Local workers' share of the machine: core lists, splitting the cores, pinning a process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_sweep._base.settings import allowed_cpus, format_cpu_list, parse_cpu_list, pin_to_cpus
from mnist_sweep.cli.main import main
from mnist_sweep.errors import InputError
from mnist_sweep.search.workers import cpu_shares


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
