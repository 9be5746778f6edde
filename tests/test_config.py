"""Settings: flags over env vars over defaults; --help and the README list every option."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from crdt_server.config import Settings, config_table, env_name, load_settings

from .conftest import ROOT


def test_defaults_match_the_contract():
    s = load_settings([], {})
    assert (s.host, s.port, s.data_dir) == ("127.0.0.1", 3000, Path("./data"))
    assert s.sqlite_path == Path("./data/crdt-server.db")
    assert s.max_message_size == 4 * 1024 * 1024 and s.room_grace == 30.0


def test_flags_override_env_vars_override_defaults():
    env = {"CRDT_SERVER_PORT": "4000", "CRDT_SERVER_HOST": "0.0.0.0"}
    assert load_settings([], env).port == 4000
    s = load_settings(["--port", "5000"], env)
    assert (s.port, s.host) == (5000, "0.0.0.0")
    # SQLAlchemy-style URLs: three slashes then a relative path, four for an absolute one
    assert load_settings(["--database-url", "sqlite:////tmp/x.db"], {}).sqlite_path == Path("/tmp/x.db")
    assert load_settings(["--database-url", "sqlite:///x.db"], {}).sqlite_path == Path("x.db")


def test_bad_values_exit_with_a_message():
    with pytest.raises(SystemExit) as info:
        load_settings(["--port", "eighty"], {})
    assert "invalid --port / CRDT_SERVER_PORT" in str(info.value)
    with pytest.raises(SystemExit):
        load_settings(["--durability", "sometimes"], {})


def test_help_documents_every_flag_and_env_var():
    out = subprocess.run([sys.executable, "-m", "crdt_server", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for f in dataclasses.fields(Settings):
        assert "--" + f.name.replace("_", "-") in out
        assert env_name(f.name) in out


def test_readme_configuration_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert config_table() in readme, "regenerate with `uv run python -m crdt_server.config`"
