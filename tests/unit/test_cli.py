"""Unit tests for mirror.cli: exit status and messages for bad configuration, and `--print-config`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from mirror import cli, log

SECRET = "cli-secret-password"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without MIRROR_* variables from the developer's or CI's environment."""
    for name in list(os.environ):
        if name.upper().startswith("MIRROR_"):
            monkeypatch.delenv(name)


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("main tried to build the app or start the server")


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make building the app or running the server fail the test instead of listening on a port."""
    monkeypatch.setattr(web, "run_app", _forbidden)
    monkeypatch.setattr(cli, "serve", _forbidden)


@pytest.mark.parametrize("listen", ["nope", "host:0", "host:70000", ":"])
def test_bad_listen_flag_exits_2_naming_key(listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --listen makes main return 2 with a stderr message naming --listen and the listen key."""
    status = cli.main(["serve", "--listen", listen])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("mirror: --listen: bad value")
    assert "for listen:" in err


def test_bad_env_value_exits_2_naming_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad MIRROR_* value makes main return 2 with a stderr message naming the variable."""
    monkeypatch.setenv("MIRROR_TAG_TTL", "-3")
    status = cli.main(["serve", "--print-config"])
    assert (status, "MIRROR_TAG_TTL" in capsys.readouterr().err) == (2, True)


def test_unknown_config_file_key_exits_2_naming_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown key in the --config file makes main return 2 naming the key on stderr."""
    path = tmp_path / "mirror.toml"
    path.write_text('listen = "127.0.0.1:5000"\ncahce_dir = "/tmp/x"\n')
    status = cli.main(["serve", "--config", str(path), "--print-config"])
    captured = capsys.readouterr()
    assert status == 2
    assert "unknown key cahce_dir" in captured.err
    assert captured.out == ""


def test_mirror_config_env_file_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad key in the file named by MIRROR_CONFIG also makes main return 2 naming the key."""
    path = tmp_path / "mirror.toml"
    path.write_text("colour = 1\n")
    monkeypatch.setenv("MIRROR_CONFIG", str(path))
    status = cli.main(["serve", "--print-config"])
    assert (status, "unknown key colour" in capsys.readouterr().err) == (2, True)


def test_print_config_prints_effective_settings_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --print-config` prints the effective settings as JSON with the password as `***`."""
    monkeypatch.setenv("MIRROR_UPSTREAM_USERNAME", "bob")
    monkeypatch.setenv("MIRROR_UPSTREAM_PASSWORD", SECRET)
    monkeypatch.setenv("MIRROR_TAG_TTL", "42")
    status = cli.main(
        ["serve", "--print-config", "--listen", "127.0.0.1:6000", "--upstream", "https://r.example/"]
    )
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert status == 0
    assert (printed["listen"], printed["upstream"], printed["tag_ttl"]) == (
        "127.0.0.1:6000",
        "https://r.example",
        42.0,
    )
    assert (printed["upstream_username"], printed["upstream_password"]) == ("bob", "***")


def test_print_config_never_prints_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither stdout nor stderr of `--print-config` contains the password."""
    monkeypatch.setenv("MIRROR_UPSTREAM_PASSWORD", SECRET)
    cli.main(["serve", "--print-config"])
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


def test_print_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """`--print-config` with nothing set shows the documented defaults."""
    assert cli.main(["serve", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["listen"], printed["cache_dir"], printed["upstream"], printed["tag_ttl"]) == (
        "0.0.0.0:5000",
        "cache",
        "https://registry-1.docker.io",
        300.0,
    )


def test_print_config_flag_beats_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --cache-dir flag overrides MIRROR_CACHE_DIR in the printed settings."""
    monkeypatch.setenv("MIRROR_CACHE_DIR", "/from/env")
    cli.main(["serve", "--print-config", "--cache-dir", "/from/flag"])
    assert json.loads(capsys.readouterr().out)["cache_dir"] == "/from/flag"


def test_missing_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Running without a subcommand is an argparse usage error with exit status 2."""
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_an_unusable_tls_pair_exits_2_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve with a certificate file that is not PEM returns 2 with a message naming tls_cert."""
    from mirror import app as app_module

    monkeypatch.setattr(cli, "serve", lambda settings: app_module.serving(settings) and None)
    monkeypatch.setattr(log, "configure", lambda *args: None)  # keep structlog off capsys's stderr
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    status = cli.main(["serve", "--tls-cert", str(cert), "--tls-key", str(key), "--cache-dir", str(tmp_path)])
    assert status == 2
    assert f"cannot load tls_cert {cert}" in capsys.readouterr().err
