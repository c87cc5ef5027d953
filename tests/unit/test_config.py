from pathlib import Path

import pytest

from swarm_engine.config import load_settings
from swarm_engine.errors import ConfigError


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
    assert settings.backend_options == {"process": {"isolation": "none"}}
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
