"""The systemd units, checked by the real systemd-analyze (.ci/run installs it).

``verify`` needs ExecStart to name an existing executable, so the test checks
copies whose ExecStart points at a real wrapper script; everything else in the
units is as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

UNITS = REPO / "systemd"
SHIPPED_BINARY = "/usr/local/bin/mirrorsync"
EXPOSURE_RE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?) ")
MAX_EXPOSURE = 2.0


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is missing: install systemd (.ci/run does)"
    return tool


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values (keys may repeat) of a unit file, comments and sections ignored."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def unit_copies(tmp_path: Path) -> tuple[Path, Path]:
    """The units in tmp_path, ExecStart pointing at a real executable wrapper."""
    wrapper = tmp_path / "bin" / "mirrorsync"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m mirrorsync "$@"\n')
    wrapper.chmod(0o755)
    service_text = (UNITS / "mirrorsync.service").read_text()
    assert service_text.count(f"ExecStart={SHIPPED_BINARY} ") == 1
    service = tmp_path / "mirrorsync.service"
    service.write_text(service_text.replace(SHIPPED_BINARY, str(wrapper)))
    timer = tmp_path / "mirrorsync.timer"
    shutil.copy(UNITS / "mirrorsync.timer", timer)
    return service, timer


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze(), "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=units[0].parent,
    )


def exposure(service: Path) -> float:
    done = subprocess.run(
        [analyze(), "security", "--offline=true", "--no-pager", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=service.parent,
    )
    match = EXPOSURE_RE.search(done.stdout)
    assert match is not None, done.stdout + done.stderr
    assert match[1] == service.name
    return float(match[2])


def test_units_say_what_the_issue_asks() -> None:
    service = unit_settings(UNITS / "mirrorsync.service")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [f"{SHIPPED_BINARY} -c /etc/mirrorsync/mirrorsync.yaml once"]
    for key, value in {
        "DynamicUser": "yes",
        "StateDirectory": "mirrorsync",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    assert "PrivateNetwork" not in service  # it must reach the caches
    assert service["LoadCredential"] and service["EnvironmentFile"]
    timer = unit_settings(UNITS / "mirrorsync.timer")
    assert timer["OnCalendar"] == ["hourly"]
    assert timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] and timer["WantedBy"] == ["timers.target"]


def test_the_unit_gives_a_run_more_time_than_its_run_deadline() -> None:
    """systemd's TimeoutStartSec kills the run (SIGTERM); http.run_deadline
    makes it end by itself first, with time left to commit and report."""
    from mirrorsync.config import HttpConfig

    (timeout,) = unit_settings(UNITS / "mirrorsync.service")["TimeoutStartSec"]
    done = subprocess.run(
        [analyze(), "timespan", timeout], capture_output=True, text=True, timeout=60
    )
    micros = re.search(r"μs: (\d+)", done.stdout)
    assert micros is not None, done.stdout + done.stderr
    seconds = int(micros[1]) / 1e6
    run_deadline = HttpConfig().run_deadline_seconds
    assert run_deadline + 15 * 60 <= seconds <= run_deadline + 60 * 60, (timeout, run_deadline)


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    service, timer = unit_copies(tmp_path)
    done = verify(service, timer)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing binary are reported."""
    service, timer = unit_copies(tmp_path)
    text = service.read_text().replace("ProtectHome=yes", "ProtectHomee=yes")
    service.write_text(text)
    done = verify(service, timer)
    assert "ProtectHomee" in done.stderr
    (tmp_path / "bin" / "mirrorsync").unlink()
    done = verify(service, timer)
    assert done.returncode != 0 and "mirrorsync" in done.stderr


def test_service_exposure_is_at_most_2(tmp_path: Path) -> None:
    service, _ = unit_copies(tmp_path)
    level = exposure(service)
    assert level <= MAX_EXPOSURE, f"systemd-analyze security rates the service {level}"


def test_exposure_check_rejects_an_unsandboxed_service(tmp_path: Path) -> None:
    """Control: the same ExecStart without the sandbox scores far above the bound."""
    service, _ = unit_copies(tmp_path)
    exec_start = next(
        line for line in service.read_text().splitlines() if line.startswith("ExecStart=")
    )
    service.write_text(f"[Service]\nType=oneshot\n{exec_start}\n")
    assert exposure(service) > MAX_EXPOSURE


def test_the_copy_path_drop_in_verifies_and_makes_a_copy_writable(tmp_path: Path) -> None:
    """systemd/copy-path.conf is a valid drop-in naming a copy's path writable."""
    drop_in = (UNITS / "copy-path.conf").read_text()
    settings = unit_settings(UNITS / "copy-path.conf")
    assert settings["ReadWritePaths"] == ["/srv/spack-cache"]
    assert "useradd --system --user-group" in drop_in and "mirrorsync" in drop_in
    assert "copy-path.conf" in (UNITS / "mirrorsync.service").read_text()
    service, timer = unit_copies(tmp_path)
    copy = tmp_path / "srv-spack-cache"
    copy.mkdir()
    (tmp_path / "mirrorsync.service.d").mkdir()
    installed = tmp_path / "mirrorsync.service.d" / "copy-path.conf"
    installed.write_text(drop_in.replace("/srv/spack-cache", str(copy)))
    done = verify(service, timer)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr
    # The control: the drop-in is read (a misspelt key in it is reported).
    installed.write_text(installed.read_text().replace("ReadWritePaths", "ReadWritePathz"))
    assert "ReadWritePathz" in verify(service, timer).stderr


# -- mirrorsync-web.service (mirrorsync serve) -----------------------------------

WEB = UNITS / "mirrorsync-web.service"


def web_unit_copy(tmp_path: Path) -> Path:
    """mirrorsync-web.service in tmp_path, ExecStart pointing at a real wrapper."""
    unit_copies(tmp_path)  # makes the wrapper
    text = WEB.read_text()
    assert text.count(f"ExecStart={SHIPPED_BINARY} ") == 1
    copy = tmp_path / WEB.name
    copy.write_text(text.replace(SHIPPED_BINARY, str(tmp_path / "bin" / "mirrorsync")))
    return copy


def test_web_unit_serves_read_only_sandboxed_as_the_timers_service() -> None:
    web = unit_settings(WEB)
    service = unit_settings(UNITS / "mirrorsync.service")
    assert web["Type"] == ["exec"]
    assert web["ExecStart"] == [
        f"{SHIPPED_BINARY} -c /etc/mirrorsync/mirrorsync.yaml serve --listen 127.0.0.1:8080"
    ]
    # The same dynamic user as the timer's service (named after it), reading its state.
    assert web["DynamicUser"] == ["yes"] and web["User"] == ["mirrorsync"]
    assert web["StateDirectory"] == service["StateDirectory"]
    assert web["ReadOnlyPaths"] == ["%S/mirrorsync"]
    assert "ReadWritePaths" not in web and "LoadCredential" not in web
    sandbox = [
        key
        for key in service
        if key.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))
        or key in ("NoNewPrivileges", "LockPersonality", "MemoryDenyWriteExecute", "RemoveIPC")
    ]
    assert len(sandbox) > 20
    for key in sandbox:
        assert web.get(key) == service[key], key


def test_web_unit_verifies_and_exposure_is_at_most_2(tmp_path: Path) -> None:
    web = web_unit_copy(tmp_path)
    done = verify(web)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr
    level = exposure(web)
    assert level <= MAX_EXPOSURE, f"systemd-analyze security rates the web service {level}"
