"""What a run records of the code, the versions and the machine: real values, no CUDA on a CPU
run, and "unknown" instead of a failure where a value cannot be read."""

import os
import platform
import subprocess

import numpy as np
import pytest
import torch

import recallseg
from recallseg.runtime import environment as env
from recallseg.runtime.device import Runtime

CPU = Runtime(torch.device("cpu"), None, False)


def test_a_cpu_run_records_the_installed_versions_and_this_machine_without_touching_cuda(monkeypatch):
    called = []
    for module, name in ((torch.cuda, "is_available"), (torch.cuda, "get_device_properties"), (torch.cuda, "get_device_name"),
                         (torch.cuda, "max_memory_allocated"), (torch.cuda, "init"), (torch.backends.cudnn, "version")):  # fmt: skip
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: called.append(_name))
    record = env.environment(CPU)
    end = env.peak_memory("cpu")
    assert not called
    versions, machine = record["versions"], record["machine"]
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    assert versions["python"] == platform.python_version() and versions["cudnn"] is None
    assert record["code"]["recallseg"] == recallseg.__version__
    assert machine["cpu_cores"] == os.cpu_count() and machine["torch_threads"] == torch.get_num_threads()
    assert machine["device"] == "cpu" and machine["processes"] == 1 and machine["precision"] == "float32" and machine["channels_last"] is False
    assert "gpu" not in machine and "cuda_max_allocated_mib" not in end and end["cpu_peak_rss_mib"] > 0
    if os.path.isfile("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        assert not names or machine["cpu"] == names[0]


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_the_commit_and_uncommitted_changes_of_a_checkout_and_nothing_outside_one(tmp_path, monkeypatch):
    assert env.code_version(tmp_path) == {"recallseg": recallseg.__version__, "git_commit": None, "git_dirty": None}
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("no git")
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("a = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("not code")
    assert env.code_version(tmp_path)["git_commit"] == head and env.code_version(tmp_path)["git_dirty"] is False
    (tmp_path / "code.py").write_text("a = 2\n")
    assert env.code_version(tmp_path)["git_dirty"] is True
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # git is not installed
    assert env.code_version(tmp_path) == {"recallseg": recallseg.__version__, "git_commit": "unknown", "git_dirty": "unknown"}


def test_a_value_that_cannot_be_read_is_unknown_and_the_rest_is_recorded(monkeypatch):
    def broken():
        raise PermissionError("no /proc here")

    real_version = env.installed_version

    def installed_version(names):
        if names == ("albumentations",):
            raise OSError("metadata unreadable")
        return None if names == env.OPTIONAL_PACKAGES["onnxruntime"] else real_version(names)

    monkeypatch.setattr(env, "cpu_model", broken)
    monkeypatch.setattr(env, "installed_version", installed_version)
    record = env.environment(CPU)
    assert record["machine"]["cpu"] == "unknown" and record["machine"]["cpu_cores"] == os.cpu_count()
    assert record["versions"]["albumentations"] == "unknown" and record["versions"]["torch"] == torch.__version__
    assert "onnxruntime" not in record["versions"]  # an optional library is listed only where it is installed
    assert record["versions"]["numpy"] == np.__version__
    assert env.describe_environment(record)[1].startswith(f"versions: python {platform.python_version()}, torch {torch.__version__}")
    assert env.describe_environment(None) == ["code: unknown", "versions: unknown", "machine: unknown"]  # a run that recorded none


def test_version_differences_name_what_both_records_know():
    before = {"code": {"recallseg": "0.1.0", "git_commit": "a" * 40}, "versions": {"torch": "2.8.0", "numpy": "2.0", "cudnn": None}}
    now = {"code": {"recallseg": "0.1.0", "git_commit": "b" * 40}, "versions": {"torch": "2.14.1", "numpy": "2.0", "cudnn": "92400"}}
    assert env.version_differences(before, now) == [f"commit {'a' * 12} -> {'b' * 12}", "torch 2.8.0 -> 2.14.1"]
    assert env.version_differences(before, {"code": "unknown"}) == []


def test_a_gpu_run_records_the_gpu_its_driver_cudnn_and_the_memory_torch_allocated(monkeypatch):
    """The GPU branch, with torch.cuda's answers stood in for (the record asks only these)."""
    from types import SimpleNamespace

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(name="Some GPU", total_memory=80 * 2**30, major=9, minor=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**29)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(env, "gpu_driver", lambda: "550.54.15")
    record = env.environment(Runtime(gpu, torch.bfloat16, True, world_size=4))
    machine = record["machine"]
    assert (machine["gpu"], machine["gpu_memory_gib"], machine["gpu_capability"], machine["gpu_driver"]) == ("Some GPU", 80.0, "9.0", "550.54.15")
    assert (machine["device"], machine["processes"], machine["precision"], machine["channels_last"]) == ("cuda:0", 4, "bfloat16", True)
    assert record["versions"]["cudnn"] == "91002" and env.peak_memory("cuda", gpu)["cuda_max_allocated_mib"] == 1536.0
    assert env.describe_environment(record)[2].startswith("machine: Some GPU (80.0 GiB, driver 550.54.15); CPU ")
