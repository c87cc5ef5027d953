from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.errors import ConfigError
from swarm_engine.vm.options import ProcessOptions


def test_precedence_is_flag_then_env_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("SWARM_MAX_VMS", "SWARM_BACKEND", "SWARM_POLL_INTERVAL", "SWARM_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text(
        'max_vms = 3\nbackend = "qemu"\npoll_interval = 2.5\n[backend_options.qemu]\nwarm = 2\n'
    )
    assert load_settings().poll_interval == 2.5  # file beats default
    assert load_settings().lease_ttl == 30  # default
    monkeypatch.setenv("SWARM_MAX_VMS", "7")
    monkeypatch.setenv("SWARM_BACKEND_OPTIONS", '{"process": {"isolation": "none"}}')
    settings = load_settings()
    assert settings.max_vms == 7  # env beats file
    assert settings.backend == "qemu"
    process = settings.backend_options["process"]
    assert isinstance(process, ProcessOptions) and process.isolation == "none"
    assert load_settings(max_vms=9).max_vms == 9  # flag beats env
    assert settings.tickets_path == tmp_path / "tickets.db"


def test_bad_values_are_one_line_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.setenv("SWARM_BACKEND_OPTIONS", "{nope")
    with pytest.raises(ConfigError, match="SWARM_BACKEND_OPTIONS is not valid JSON"):
        load_settings()
    monkeypatch.delenv("SWARM_BACKEND_OPTIONS")
    (tmp_path / "config.toml").write_text("unknown_setting = 1\n")
    with pytest.raises(ConfigError, match="unknown_setting"):
        load_settings()


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('[backend_options.qemu]\naccel = "warp"\n', "accel: Input should be"),
        ("[backend_options.qemu]\nno_such_option = 1\n", "no_such_option: Extra inputs"),
        ("[backend_options.qemu]\nwarm = -1\n", "warm: Input should be greater"),
        ("[backend_options.process]\nisolation = 3\n", "isolation: Input should be"),
        ("[backend_options.docker]\nx = 1\n", "tag 'docker'"),
        ('[backend_options.qemu]\nbackend = "process"\n', "holds options of backend 'process'"),
    ],
)
def test_backend_options_are_checked_when_settings_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, problem: str
) -> None:
    """Each `[backend_options.<name>]` is validated against that backend's model at load
    (a ConfigError at start-up), not when the backend is first created."""
    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.delenv("SWARM_BACKEND_OPTIONS", raising=False)
    (tmp_path / "config.toml").write_text(table)
    with pytest.raises(ConfigError, match=problem):
        load_settings()


def test_backend_options_are_typed_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm_engine.vm.qemu.config import QemuOptions

    monkeypatch.setenv("SWARM_HOME", str(tmp_path))
    monkeypatch.setenv("SWARM_BACKEND_OPTIONS", '{"qemu": {"warm": 2, "accel": "tcg"}}')
    options = load_settings().backend_options["qemu"]
    assert isinstance(options, QemuOptions)
    assert (options.warm, options.accel, options.kill_grace) == (2, "tcg", 10.0)
