"""tools/testbed.py judges a host it just started by its own process, not by the namespace.

Right after the start, `ip netns exec` has not yet entered the namespace, so the namespace is empty
although sshd is on its way (CI once failed `molecule test -s server` on exactly that).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(name="testbed")
def fixture_testbed(monkeypatch):
    spec = importlib.util.spec_from_file_location("testbed_under_test", TOOLS / "testbed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "netns_pids", lambda tools, namespace: [])  # the namespace looks empty
    return module


def host(testbed):
    return testbed.Host(name="dev1", octet=11, prefix="tpx", subnet="169.254.250")


def test_a_starting_host_with_an_empty_namespace_is_waited_for(testbed, tmp_path, monkeypatch):
    answers = iter([b"", b"", testbed.SSH_BANNER + b"_9.2\r\n"])
    monkeypatch.setattr(testbed, "ssh_banner", lambda address, timeout=1.0: next(answers))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        testbed.wait_for_sshd({}, [host(testbed)], tmp_path, {"dev1": proc})
    finally:
        proc.kill()
        proc.wait()


def test_a_started_host_whose_process_ended_fails_at_once(testbed, tmp_path, monkeypatch):
    monkeypatch.setattr(testbed, "ssh_banner", lambda address, timeout=1.0: b"")
    (tmp_path / "dev1").mkdir()
    (tmp_path / "dev1" / "sshd.log").write_text("Bind to port 22 on 169.254.250.11 failed\n")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(testbed.TestbedError, match=r"(?s)sshd of dev1 exited.*Bind to port 22"):
        testbed.wait_for_sshd({}, [host(testbed)], tmp_path, {"dev1": proc})


def test_a_host_already_up_is_judged_by_its_namespace(testbed, tmp_path, monkeypatch):
    monkeypatch.setattr(testbed, "ssh_banner", lambda address, timeout=1.0: b"")
    (tmp_path / "dev1").mkdir()
    (tmp_path / "dev1" / "sshd.log").write_text("")
    with pytest.raises(testbed.TestbedError, match="sshd of dev1 exited"):
        testbed.wait_for_sshd({}, [host(testbed)], tmp_path)
