"""Unit tests for mirror.config: flag > environment > file > default precedence, validation and redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mirror.config import DOCKER_HUB, ConfigError, Listen, Settings, load

SECRET = "hunter2-very-secret"


def _write(tmp_path: Path, text: str, name: str = "mirror.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    """With no flags, environment or file, every setting has its documented default."""
    settings = load({}, {}, None)
    assert (settings.listen, settings.cache_dir, settings.upstream, settings.tag_ttl) == (
        Listen("0.0.0.0", 5000),
        Path("./cache"),
        "https://registry-1.docker.io",
        300.0,
    )


def test_defaults_have_no_credentials() -> None:
    """By default no upstream username or password is set."""
    settings = load({}, {}, None)
    assert (settings.upstream_username, settings.upstream_password) == (None, None)


def test_none_flags_are_ignored() -> None:
    """A flag given as None (not passed on the command line) does not override anything."""
    settings = load({"listen": None, "cache_dir": None, "upstream": None}, {"MIRROR_LISTEN": "1.2.3.4:80"})
    assert (settings.listen, settings.upstream) == (Listen("1.2.3.4", 80), DOCKER_HUB)


# --- precedence ---------------------------------------------------------------------------------

# For each key: (file TOML value, env value, flag value, expected setting from file, env, flag).
PRECEDENCE = [
    pytest.param(
        "listen",
        '"10.0.0.1:1000"',
        "10.0.0.2:2000",
        "10.0.0.3:3000",
        (Listen("10.0.0.1", 1000), Listen("10.0.0.2", 2000), Listen("10.0.0.3", 3000)),
        id="listen",
    ),
    pytest.param(
        "cache_dir",
        '"/file/cache"',
        "/env/cache",
        "/flag/cache",
        (Path("/file/cache"), Path("/env/cache"), Path("/flag/cache")),
        id="cache_dir",
    ),
    pytest.param(
        "upstream",
        '"https://file.example"',
        "https://env.example",
        "https://flag.example",
        ("https://file.example", "https://env.example", "https://flag.example"),
        id="upstream",
    ),
]


@pytest.mark.parametrize(("key", "file_value", "env_value", "flag_value", "expected"), PRECEDENCE)
def test_flag_beats_env_and_file(
    tmp_path: Path, key: str, file_value: str, env_value: str, flag_value: str, expected: tuple[Any, ...]
) -> None:
    """A flag wins over the environment and the config file."""
    path = _write(tmp_path, f"{key} = {file_value}\n")
    settings = load({key: flag_value}, {f"MIRROR_{key.upper()}": env_value}, path)
    assert getattr(settings, key) == expected[2]


@pytest.mark.parametrize(("key", "file_value", "env_value", "flag_value", "expected"), PRECEDENCE)
def test_env_beats_file(
    tmp_path: Path, key: str, file_value: str, env_value: str, flag_value: str, expected: tuple[Any, ...]
) -> None:
    """An environment variable wins over the config file."""
    path = _write(tmp_path, f"{key} = {file_value}\n")
    settings = load({}, {f"MIRROR_{key.upper()}": env_value}, path)
    assert getattr(settings, key) == expected[1]


@pytest.mark.parametrize(("key", "file_value", "env_value", "flag_value", "expected"), PRECEDENCE)
def test_file_beats_default(
    tmp_path: Path, key: str, file_value: str, env_value: str, flag_value: str, expected: tuple[Any, ...]
) -> None:
    """A config file value wins over the default."""
    path = _write(tmp_path, f"{key} = {file_value}\n")
    settings = load({}, {}, path)
    assert getattr(settings, key) == expected[0]


@pytest.mark.parametrize(("key", "file_value", "env_value", "flag_value", "expected"), PRECEDENCE)
def test_flag_beats_default(
    key: str, file_value: str, env_value: str, flag_value: str, expected: tuple[Any, ...]
) -> None:
    """A flag alone overrides the default."""
    assert getattr(load({key: flag_value}, {}, None), key) == expected[2]


def test_file_and_env_merge_per_key(tmp_path: Path) -> None:
    """Keys from the file and keys from the environment combine; each key takes its own winner."""
    path = _write(tmp_path, 'tag_ttl = 42\nupstream = "https://file.example"\n')
    settings = load({}, {"MIRROR_UPSTREAM": "https://env.example"}, path)
    assert (settings.tag_ttl, settings.upstream) == (42.0, "https://env.example")


def test_mirror_config_env_names_the_file(tmp_path: Path) -> None:
    """MIRROR_CONFIG names the config file when no file is passed explicitly."""
    path = _write(tmp_path, "tag_ttl = 7\n")
    assert load({}, {"MIRROR_CONFIG": str(path)}, None).tag_ttl == 7.0


def test_explicit_config_file_beats_mirror_config(tmp_path: Path) -> None:
    """An explicit config file (--config) is used instead of the one MIRROR_CONFIG names."""
    env_file = _write(tmp_path, "tag_ttl = 7\n", "env.toml")
    flag_file = _write(tmp_path, "tag_ttl = 8\n", "flag.toml")
    assert load({}, {"MIRROR_CONFIG": str(env_file)}, flag_file).tag_ttl == 8.0


def test_empty_mirror_config_means_no_file() -> None:
    """An empty MIRROR_CONFIG is treated as unset."""
    assert load({}, {"MIRROR_CONFIG": ""}, None) == Settings()


@pytest.mark.parametrize(
    ("listen", "shown"),
    [
        (Listen("0.0.0.0", 5000), "0.0.0.0:5000"),
        (Listen("::", 5000), "[::]:5000"),
        (Listen("::1", 80), "[::1]:80"),
    ],
)
def test_listen_address_prints_ipv6_in_brackets(listen: Listen, shown: str) -> None:
    """An IPv6 listen address is shown as `[host]:port`, as it is written in the config."""
    assert str(listen) == shown


# --- values parsed from every source ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "env_value", "expected"),
    [
        ("listen", "127.0.0.1:8080", Listen("127.0.0.1", 8080)),
        ("listen", ":8080", Listen("0.0.0.0", 8080)),
        ("listen", "[::1]:8080", Listen("::1", 8080)),
        ("listen", "[::]:5000", Listen("::", 5000)),
        ("listen", "localhost:65535", Listen("localhost", 65535)),
        ("listen", "h:1", Listen("h", 1)),
        ("upstream", "https://registry.example/", "https://registry.example"),
        ("upstream", "http://localhost:5001", "http://localhost:5001"),
        ("upstream", "http://[::1]:5001/", "http://[::1]:5001"),
        ("referrers_ttl", "45", 45.0),
        ("upstream_username", "bob", "bob"),
        ("upstream_password", SECRET, SECRET),
        ("tag_ttl", "0", 0.0),
        ("tag_ttl", "12.5", 12.5),
        ("connect_timeout", "0.5", 0.5),
        ("read_timeout", "120", 120.0),
        ("auth_realms", "Auth.Example.com, other.example ,", ("auth.example.com", "other.example")),
        ("auth_realms", "", ()),
        ("log_format", "json", "json"),
        ("log_format", "console", "console"),
        ("log_level", "debug", "debug"),
        ("scrub_rate", "8M", 8 * 1024**2),
        ("scrub_rate", "0", 0),
    ],
)
def test_env_values_parsed(key: str, env_value: str, expected: object) -> None:
    """Each MIRROR_* variable is parsed into the setting's typed value."""
    assert getattr(load({}, {f"MIRROR_{key.upper()}": env_value}, None), key) == expected


def test_file_values_parsed(tmp_path: Path) -> None:
    """TOML values of their native types are accepted for every key."""
    path = _write(
        tmp_path,
        'listen = "127.0.0.1:5001"\n'
        'cache_dir = "/var/cache/mirror"\n'
        'upstream = "https://r.example"\n'
        'upstream_username = "u"\n'
        'upstream_password = "p"\n'
        "tag_ttl = 60\n"
        "connect_timeout = 1.5\n"
        "read_timeout = 30\n"
        'auth_realms = ["Auth.R.example"]\n'
        'log_format = "console"\n'
        'log_level = "warning"\n',
    )
    assert load({}, {}, path) == Settings(
        listen=Listen("127.0.0.1", 5001),
        cache_dir=Path("/var/cache/mirror"),
        upstream="https://r.example",
        upstream_username="u",
        upstream_password="p",
        tag_ttl=60.0,
        connect_timeout=1.5,
        read_timeout=30.0,
        auth_realms=("auth.r.example",),
        log_format="console",
        log_level="warning",
    )


# --- bad values ---------------------------------------------------------------------------------

BAD_ENV = [
    ("listen", "5000"),
    ("listen", "host:"),
    ("listen", "host:0"),
    ("listen", "host:65536"),
    ("listen", "host:-1"),
    ("listen", "host:http"),
    ("cache_dir", ""),
    ("upstream", "ftp://registry.example"),
    ("upstream", "registry.example"),
    ("upstream", "https://"),
    ("upstream", "https://r.example/?x=1"),
    ("upstream", "https://r.example/#frag"),
    ("upstream", "https://user@r.example"),
    ("upstream_username", ""),
    ("upstream_password", ""),
    ("tag_ttl", "-1"),
    ("tag_ttl", "soon"),
    ("tag_ttl", "nan"),
    ("tag_ttl", "inf"),
    ("tag_ttl", "1e7"),
    ("connect_timeout", "0"),
    ("connect_timeout", "-0.5"),
    ("read_timeout", "0"),
    ("read_timeout", "x"),
    ("log_format", "JSON"),
    ("log_format", "xml"),
    ("log_level", "trace"),
    ("log_level", "INFO"),
    ("scrub_rate", "-1"),
    ("scrub_rate", "fast"),
]


@pytest.mark.parametrize(("key", "value"), BAD_ENV)
def test_bad_env_value_names_key_and_variable(key: str, value: str) -> None:
    """A bad MIRROR_* value raises ConfigError naming both the variable and the setting."""
    name = f"MIRROR_{key.upper()}"
    with pytest.raises(ConfigError) as info:
        load({}, {name: value}, None)
    assert name in str(info.value)
    assert f"for {key}:" in str(info.value)


@pytest.mark.parametrize(
    ("key", "toml_value"),
    [
        ("listen", "5000"),
        ("listen", '"nohost"'),
        ("cache_dir", "5"),
        ("cache_dir", '""'),
        ("upstream", '"gopher://x"'),
        ("upstream", "1"),
        ("upstream_username", "7"),
        ("upstream_username", '""'),
        ("upstream_password", "7"),
        ("tag_ttl", '"x"'),
        ("tag_ttl", "-5"),
        ("tag_ttl", "[1]"),
        ("connect_timeout", "0"),
        ("read_timeout", "-1.0"),
        ("auth_realms", "5"),
        ("auth_realms", "[1, 2]"),
        ("log_format", '"yaml"'),
        ("log_level", "1"),
    ],
)
def test_bad_file_value_names_key(tmp_path: Path, key: str, toml_value: str) -> None:
    """A bad value in the config file raises ConfigError naming the setting and the file."""
    path = _write(tmp_path, f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError) as info:
        load({}, {}, path)
    assert f"for {key}:" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("listen", "nope"), ("cache_dir", ""), ("upstream", "file:///etc")],
)
def test_bad_flag_value_names_flag(key: str, value: str) -> None:
    """A bad flag value raises ConfigError naming the --flag and the setting."""
    with pytest.raises(ConfigError) as info:
        load({key: value}, {}, None)
    assert f"--{key.replace('_', '-')}" in str(info.value)
    assert f"for {key}:" in str(info.value)


def test_bad_password_from_file_is_not_echoed(tmp_path: Path) -> None:
    """A bad upstream_password in the file is reported by key with `***`, never its value."""
    path = _write(tmp_path, "upstream_password = 123456789\n")
    with pytest.raises(ConfigError) as info:
        load({}, {}, path)
    assert "123456789" not in str(info.value)
    assert "***" in str(info.value)
    assert "upstream_password" in str(info.value)


def test_bad_password_list_is_not_echoed(tmp_path: Path) -> None:
    """A password of the wrong type (a list) is reported by key, never by its contents."""
    path = _write(tmp_path, f'upstream_password = ["{SECRET}"]\n')
    with pytest.raises(ConfigError) as info:
        load({}, {}, path)
    assert SECRET not in str(info.value)
    assert "upstream_password" in str(info.value)


def test_other_bad_values_are_shown() -> None:
    """A bad non-secret value is echoed so the operator can see what was wrong."""
    with pytest.raises(ConfigError) as info:
        load({}, {"MIRROR_LISTEN": "not-a-port"}, None)
    assert "'not-a-port'" in str(info.value)


def test_bad_upstream_with_credentials_does_not_echo_password() -> None:
    """An upstream URL rejected for carrying credentials is reported without the password."""
    with pytest.raises(ConfigError) as info:
        load({}, {"MIRROR_UPSTREAM": f"https://user:{SECRET}@registry.example"}, None)
    assert SECRET not in str(info.value)


def test_boolean_seconds_rejected(tmp_path: Path) -> None:
    """A TOML boolean is not a number of seconds."""
    path = _write(tmp_path, "tag_ttl = true\n")
    with pytest.raises(ConfigError, match="tag_ttl"):
        load({}, {}, path)


# --- unknown keys and files ---------------------------------------------------------------------


def test_unknown_file_key_is_named(tmp_path: Path) -> None:
    """An unknown key in the config file raises ConfigError naming it."""
    path = _write(tmp_path, 'tag_ttl = 5\nupstream_pasword = "typo"\n')
    with pytest.raises(ConfigError, match="unknown key upstream_pasword"):
        load({}, {}, path)


def test_unknown_file_key_value_not_echoed(tmp_path: Path) -> None:
    """The unknown-key error names the key but does not echo its (possibly secret) value."""
    path = _write(tmp_path, f'upstream_pasword = "{SECRET}"\n')
    with pytest.raises(ConfigError) as info:
        load({}, {}, path)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"MIRROR_PORT": "tcp://10.0.0.1:5000"},
        {"MIRROR_PORT_5000_TCP": "tcp://10.0.0.1:5000", "MIRROR_SERVICE_HOST": "10.0.0.1"},
        {"MIRROR_SERVICE_PORT": "5000", "MIRROR_PORT_5000_TCP_PROTO": "tcp"},
        {"MIRROR_UNKNOWN": "whatever"},
        {"mirror_listen": "bad"},
    ],
)
def test_unknown_mirror_env_ignored(environ: dict[str, str]) -> None:
    """MIRROR_* variables that name no setting (as Kubernetes injects) are ignored, not errors."""
    assert load({}, environ, None) == Settings()


def test_missing_config_file_is_config_error(tmp_path: Path) -> None:
    """A config file that cannot be read raises ConfigError naming the file."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load({}, {}, path)


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    """A config file that is not TOML raises ConfigError naming the file."""
    path = _write(tmp_path, "listen = [unterminated\n")
    with pytest.raises(ConfigError, match=r"mirror\.toml"):
        load({}, {}, path)


# --- redaction ----------------------------------------------------------------------------------


def test_redacted_hides_password() -> None:
    """redacted() replaces the upstream password with `***`."""
    settings = load({}, {"MIRROR_UPSTREAM_USERNAME": "bob", "MIRROR_UPSTREAM_PASSWORD": SECRET}, None)
    redacted = settings.redacted()
    assert (redacted["upstream_username"], redacted["upstream_password"]) == ("bob", "***")


def test_redacted_never_contains_password_anywhere() -> None:
    """No value of redacted() contains the password text."""
    settings = load({}, {"MIRROR_UPSTREAM_PASSWORD": SECRET}, None)
    assert SECRET not in repr(settings.redacted())


def test_redacted_keeps_unset_password_none() -> None:
    """redacted() shows an unset password as None, not `***`."""
    assert load({}, {}, None).redacted()["upstream_password"] is None


def test_redacted_is_plain_values() -> None:
    """redacted() renders listen, cache_dir and auth_realms as plain JSON-able values."""
    redacted = load({}, {"MIRROR_AUTH_REALMS": "a.example,b.example"}, None).redacted()
    assert (redacted["listen"], redacted["cache_dir"], redacted["auth_realms"]) == (
        "0.0.0.0:5000",
        "cache",
        ["a.example", "b.example"],
    )


def test_repr_never_contains_password() -> None:
    """repr() and str() of Settings never contain the upstream password."""
    settings = load({}, {"MIRROR_UPSTREAM_PASSWORD": SECRET}, None)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_settings_are_frozen() -> None:
    """Settings cannot be mutated after load."""
    settings = load({}, {}, None)
    with pytest.raises(AttributeError):
        settings.tag_ttl = 1.0  # type: ignore[misc]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.toml"
    path.write_text(text)
    return path


def test_upstream_tables_add_registries_inheriting_defaults(tmp_path: Path) -> None:
    """Each [[upstreams]] adds a registry after docker.io; unset TTL and timeouts inherit the top level."""
    path = _file(
        tmp_path,
        'tag_ttl = 60\nread_timeout = 5\n[[upstreams]]\nregistry = "ghcr.io"\n'
        '[[upstreams]]\nregistry = "quay.io"\nurl = "http://127.0.0.1:9000"\ntag_ttl = 10\naliases = ["q"]\n',
    )
    registries = load({}, {}, path).registries()
    assert [r.registry for r in registries] == ["docker.io", "ghcr.io", "quay.io"]
    assert registries[1].url == "https://ghcr.io"
    assert (registries[1].tag_ttl, registries[1].read_timeout) == (60, 5)
    assert (registries[2].url, registries[2].tag_ttl, registries[2].aliases) == (
        "http://127.0.0.1:9000",
        10,
        ("q",),
    )


@pytest.mark.parametrize(
    ("top", "table", "expected"),
    [
        ("", "", (60.0, 60.0)),
        ("", "tag_ttl = 10\n", (60.0, 10.0)),
        ("referrers_ttl = 30\n", "tag_ttl = 10\n", (30.0, 30.0)),
        ("referrers_ttl = 30\n", "referrers_ttl = 5\n", (30.0, 5.0)),
    ],
)
def test_referrers_ttl_defaults_to_the_tag_ttl(
    tmp_path: Path, top: str, table: str, expected: tuple[float, float]
) -> None:
    """referrers_ttl: the upstream's own, else the top-level one, else the upstream's tag TTL."""
    path = _file(tmp_path, f'tag_ttl = 60\n{top}[[upstreams]]\nregistry = "ghcr.io"\n{table}')
    docker, ghcr = load({}, {}, path).registries()
    assert (docker.referrers_ttl, ghcr.referrers_ttl) == expected


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('url = "https://ghcr.io"', "registry is required"),
        ('registry = "ghcr.io"\ncolour = "red"', "unknown key colour"),
        ('registry = "docker.io"', "top-level upstream keys"),
        ('registry = "Not A Host"', "for registry"),
        ('registry = "ghcr.io"\naliases = ["../x"]', "for aliases"),
        ('registry = "ghcr.io"\npassword = "a"\npassword_env = "B"', "only one of"),
        ('registry = "ghcr.io"\npassword_env = "UNSET_VARIABLE_X"', "not set"),
        ('registry = "ghcr.io"\npassword_file = "/nonexistent/secret"', "cannot read password_file"),
        (
            'registry = "ghcr.io"\naliases = ["dockerhub"]\n'
            '[[upstreams]]\nregistry = "quay.io"\naliases = ["dockerhub"]',
            "dockerhub names both",
        ),
    ],
)
def test_bad_upstream_table_is_a_config_error(tmp_path: Path, table: str, message: str) -> None:
    """A broken [[upstreams]] table is refused with a message naming the problem."""
    with pytest.raises(ConfigError, match=message):
        load({}, {}, _file(tmp_path, f"[[upstreams]]\n{table}\n"))


def test_upstream_password_sources(tmp_path: Path) -> None:
    """An upstream password comes inline, from an environment variable or from a file; never printed."""
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    path = _file(
        tmp_path,
        f'[[upstreams]]\nregistry = "a.io"\nusername = "u"\npassword_env = "A_PW"\n'
        f'[[upstreams]]\nregistry = "b.io"\nusername = "u"\npassword_file = "{secret}"\n',
    )
    settings = load({}, {"A_PW": "from-env"}, path)
    assert [u.password for u in settings.upstreams] == ["from-env", "from-file"]
    shown = repr(settings) + str(settings.redacted())
    assert "from-env" not in shown
    assert "from-file" not in shown


def test_shipped_example_config_loads_to_the_defaults() -> None:
    """deploy/examples/config.toml is valid and, as shipped, changes no default."""
    example = Path(__file__).parents[2] / "deploy" / "examples" / "config.toml"
    assert load({}, {}, example) == load({}, {})


def test_top_level_password_file_is_read_and_never_shown(tmp_path: Path) -> None:
    """`upstream_password_file` (file or MIRROR_UPSTREAM_PASSWORD_FILE) gives Docker Hub's password."""
    secret = tmp_path / "secret"
    secret.write_text("hub-token\n")
    from_file = load({}, {}, _file(tmp_path, f'upstream_password_file = "{secret}"\n'))
    from_env = load({}, {"MIRROR_UPSTREAM_PASSWORD_FILE": str(secret)})
    assert from_file.upstream_password == from_env.upstream_password == "hub-token"
    assert "hub-token" not in repr(from_file) + str(from_file.redacted())


@pytest.mark.parametrize(
    ("environ", "content", "message"),
    [
        ({"MIRROR_UPSTREAM_PASSWORD": "x"}, "p\n", "only one of upstream_password, upstream_password_file"),
        ({}, None, "cannot read upstream_password_file"),
        ({}, "\n", "is empty"),
    ],
)
def test_bad_top_level_password_file_is_a_config_error(
    tmp_path: Path, environ: dict[str, str], content: str | None, message: str
) -> None:
    """A password file that is missing, empty, or given beside a password is refused, naming the key."""
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load({}, environ, _file(tmp_path, f'upstream_password_file = "{secret}"\n'))


# --- shared mode --------------------------------------------------------------------------------

PEER_SECRET = "peer-secret-0123456789abcdef"
SHARED_ENV = {
    "MIRROR_REDIS_URL": "redis://:redis-pass@10.0.0.9:6379/1",
    "MIRROR_ADVERTISE_URL": "http://10.1.2.3:5000",
    "MIRROR_PEER_SECRET": PEER_SECRET,
}


def test_shared_mode_is_off_without_redis_url() -> None:
    """Without redis_url nothing of the shared mode is set."""
    settings = load({}, {}, None)
    assert (settings.shared, settings.redis_url, settings.advertise_url) == (False, None, None)


def test_shared_mode_from_the_environment() -> None:
    """MIRROR_REDIS_URL, MIRROR_ADVERTISE_URL and MIRROR_PEER_SECRET turn the shared mode on."""
    settings = load({}, SHARED_ENV, None)
    assert settings.shared
    assert settings.redis_url is not None
    assert (settings.redis_url.hosts, settings.redis_url.db) == ((("10.0.0.9", 6379),), 1)
    assert (settings.advertise_url, settings.peer_secret) == ("http://10.1.2.3:5000", PEER_SECRET)


@pytest.mark.parametrize("missing", ["MIRROR_ADVERTISE_URL", "MIRROR_PEER_SECRET"])
def test_redis_url_needs_an_advertise_url_and_a_peer_secret(missing: str) -> None:
    """A shared mode without a way for peers to reach or trust this replica is a config error."""
    env = {k: v for k, v in SHARED_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match="redis_url needs advertise_url"):
        load({}, env, None)


def test_peer_secret_file_is_read(tmp_path: Path) -> None:
    """peer_secret_file gives the secret from a file (a mounted Kubernetes Secret), stripped."""
    secret_file = _write(tmp_path, PEER_SECRET + "\n", "peer-secret")
    env = {k: v for k, v in SHARED_ENV.items() if k != "MIRROR_PEER_SECRET"}
    settings = load({}, {**env, "MIRROR_PEER_SECRET_FILE": str(secret_file)}, None)
    assert settings.peer_secret == PEER_SECRET


def test_peer_secret_and_peer_secret_file_together_are_an_error(tmp_path: Path) -> None:
    """Only one source of the peer secret may be given."""
    secret_file = _write(tmp_path, PEER_SECRET, "peer-secret")
    with pytest.raises(ConfigError, match="only one of peer_secret"):
        load({}, {**SHARED_ENV, "MIRROR_PEER_SECRET_FILE": str(secret_file)}, None)


def test_a_short_peer_secret_is_refused_without_being_shown() -> None:
    """A guessable peer secret is refused, and the error does not repeat it."""
    with pytest.raises(ConfigError, match="at least 16") as raised:
        load({}, {**SHARED_ENV, "MIRROR_PEER_SECRET": "short-secret"}, None)
    assert "short-secret" not in str(raised.value)


def test_a_bad_redis_url_error_hides_its_password() -> None:
    """A bad redis_url with credentials is named in the error, its value not shown."""
    with pytest.raises(ConfigError, match="redis_url") as raised:
        load({}, {**SHARED_ENV, "MIRROR_REDIS_URL": "redis://:redis-pass@h:0/0"}, None)
    assert "redis-pass" not in str(raised.value)


def test_shared_secrets_are_redacted() -> None:
    """--print-config shows the Redis password and the peer secret as ***."""
    shown = str(load({}, SHARED_ENV, None).redacted())
    assert "redis-pass" not in shown
    assert PEER_SECRET not in shown
    assert "redis://:***@10.0.0.9:6379/1" in shown


def test_redis_timeouts_and_lease_are_settings(tmp_path: Path) -> None:
    """The Redis timeout and cool-down, the lease and the hint TTL come from the config file."""
    path = _write(tmp_path, "redis_timeout = 0.1\nredis_cooldown = 2\nlease_ttl = 3\npeer_hint_ttl = 60\n")
    settings = load({}, {}, path)
    found = (settings.redis_timeout, settings.redis_cooldown, settings.lease_ttl, settings.peer_hint_ttl)
    assert found == (0.1, 2.0, 3.0, 60.0)


# --- serving: TLS and client auth --------------------------------------------------------------------


def test_tls_and_auth_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    """TLS files from flags, the client CA from the environment, auth files and metrics_auth from the file."""
    config = _write(tmp_path, 'auth_htpasswd = "/etc/mirror/htpasswd"\nmetrics_auth = true\n')
    settings = load({"tls_cert": "/c.pem", "tls_key": "/k.pem"}, {"MIRROR_TLS_CLIENT_CA": "/ca.pem"}, config)
    assert (settings.tls_cert, settings.tls_key, settings.tls_client_ca) == (
        Path("/c.pem"),
        Path("/k.pem"),
        Path("/ca.pem"),
    )
    assert (settings.auth_htpasswd, settings.metrics_auth) == (Path("/etc/mirror/htpasswd"), True)
    assert settings.redacted()["tls_cert"] == "/c.pem"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"tls_cert": "/c.pem"}, "tls_key"),
        ({"tls_key": "/k.pem"}, "tls_cert"),
        ({"tls_client_ca": "/ca.pem"}, "tls_client_ca"),
        ({"metrics_auth": "true"}, "metrics_auth"),
        ({"reload_interval": "0"}, "reload_interval"),
    ],
)
def test_incomplete_serving_settings_are_errors(flags: dict[str, Any], named: str) -> None:
    """Half a TLS pair, a client CA without TLS, metrics_auth without auth, a zero reload interval."""
    with pytest.raises(ConfigError, match=named):
        load(flags, {}, None)


def test_the_shared_mode_refuses_client_certificates() -> None:
    """Peers present no client certificate, so redis_url and tls_client_ca exclude each other."""
    env = {
        **SHARED_ENV,
        "MIRROR_TLS_CERT": "/c.pem",
        "MIRROR_TLS_KEY": "/k.pem",
        "MIRROR_TLS_CLIENT_CA": "/ca",
    }
    with pytest.raises(ConfigError, match="tls_client_ca"):
        load({}, env, None)


def test_a_replica_serving_https_advertises_an_https_url() -> None:
    """With tls_cert, peers must be told an https:// advertise URL."""
    with pytest.raises(ConfigError, match="advertise_url must be an https"):
        load({}, {**SHARED_ENV, "MIRROR_TLS_CERT": "/c.pem", "MIRROR_TLS_KEY": "/k.pem"}, None)
