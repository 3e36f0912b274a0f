"""A torch and a torchvision that do not belong together are one line naming both, before any work."""

import pytest

from recallseg.runtime import versions


@pytest.mark.parametrize(
    "torch_version, torchvision_version, problem",
    [
        ("2.14.1+cu130", "0.29.1+cu130", None),
        ("2.8.0", "0.23.0", None),
        ("2.13.0+cpu", "0.29.1", "torch 2.13.0+cpu needs torchvision 0.28.x"),
        ("2.13.0+cpu", "0.28.0+cu128", "torch is a cpu build and torchvision a cu128 build"),
        ("2.14.1", "0.29.1+cpu", None),  # one side without a build tag: nothing to compare
    ],
)
def test_a_pair_belongs_together_when_release_and_build_match(torch_version, torchvision_version, problem):
    assert versions.mismatch(torch_version, torchvision_version) == problem


def test_every_command_refuses_a_mismatched_pair_in_one_line(monkeypatch, capsys):
    from recallseg.commands.user_errors import user_errors

    installed = {"torch": "2.13.0+cpu", "torchvision": "0.28.0+cu128"}
    monkeypatch.setattr(versions.metadata, "version", lambda name: installed[name])
    versions.check_torch_pair.cache_clear()
    ran = []
    try:
        with pytest.raises(SystemExit) as stop:
            with user_errors():
                ran.append("work")
    finally:
        versions.check_torch_pair.cache_clear()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and not ran
    assert err == (
        "error: torch 2.13.0+cpu and torchvision 0.28.0+cu128 do not belong together (torch is a cpu build and torchvision a "
        "cu128 build); install both from one index in one command, e.g. pip install --force-reinstall torch torchvision "
        "--index-url https://download.pytorch.org/whl/cpu (see docs/install.md)"
    )
