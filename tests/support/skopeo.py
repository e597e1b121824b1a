"""Run skopeo hermetically (own HOME/TMPDIR/registries.conf) the way users point it at a mirror."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

SKOPEO_TIMEOUT_S = 120


class SkopeoError(AssertionError):
    """skopeo exited non-zero; the message carries its command line and stderr."""

    def __init__(self, result: subprocess.CompletedProcess[bytes]) -> None:
        self.result = result
        stderr = result.stderr.decode(errors="replace").strip()
        super().__init__(f"skopeo failed ({result.returncode}): {' '.join(map(str, result.args))}\n{stderr}")


def skopeo_env(tmpdir: Path) -> dict[str, str]:
    """Environment isolating skopeo's temp files, auth files and caches under `tmpdir`."""
    home = tmpdir / "home"
    runtime = tmpdir / "run"
    for path in (home, runtime, tmpdir / "tmp"):
        path.mkdir(parents=True, exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_AUTH", "DOCKER_", "CONTAINERS_"))
    }
    env.update(
        HOME=str(home),
        TMPDIR=str(tmpdir / "tmp"),
        XDG_RUNTIME_DIR=str(runtime),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        REGISTRY_AUTH_FILE=str(runtime / "auth.json"),
        # As root, containers/image keeps its blob-info cache in /var/lib/containers/cache whatever HOME
        # says; claiming to be rootless moves it to $XDG_DATA_HOME/containers/cache (hermetic, per tmpdir).
        _CONTAINERS_ROOTLESS_UID="1000",
    )
    return env


def run_skopeo(
    args: Sequence[str], tmpdir: Path, *, registries_conf: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run `skopeo [global opts] ARGS`; raise SkopeoError on failure if `check`."""
    cmd = ["skopeo", "--insecure-policy", "--tmpdir", str(tmpdir / "tmp")]
    if registries_conf is not None:
        # skopeo ignores CONTAINERS_REGISTRIES_CONF: only the flag works.
        cmd += ["--registries-conf", str(registries_conf)]
    registries_d = tmpdir / "registries.d"
    registries_d.mkdir(parents=True, exist_ok=True)
    cmd += ["--registries.d", str(registries_d), *args]
    result = subprocess.run(
        cmd, env=skopeo_env(tmpdir), capture_output=True, timeout=SKOPEO_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise SkopeoError(result)
    return result


def write_auth_file(tmpdir: Path, creds_by_host: dict[str, tuple[str, str]]) -> Path:
    """Write the auth.json skopeo reads under `tmpdir` (REGISTRY_AUTH_FILE), keyed by "host:port".

    Needed for mirrors and rewritten locations: containers/image drops --creds/--src-creds for any endpoint
    that is not the reference's own registry, and looks the endpoint host up in auth.json instead.
    """
    auths = {
        host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode("ascii")}
        for host, (user, password) in creds_by_host.items()
    }
    path = Path(skopeo_env(tmpdir)["REGISTRY_AUTH_FILE"])
    path.write_text(json.dumps({"auths": auths}))
    return path


def write_registries_conf(
    path: Path, mirror_host: str, prefix: str = "docker.io", mirror_path: str = "", *, insecure: bool = True
) -> Path:
    """registries.conf sending pulls of `prefix` to a mirror first (then the real registry); `insecure`
    (plain http, or TLS without verification) unless the mirror is verified HTTPS."""
    path.write_text(
        "unqualified-search-registries = []\n\n"
        "[[registry]]\n"
        f'prefix = "{prefix}"\n'
        f'location = "{prefix}"\n\n'
        "[[registry.mirror]]\n"
        f'location = "{mirror_host}{mirror_path}"\n' + ("insecure = true\n" if insecure else "")
    )
    return path


def write_direct_registries_conf(path: Path, host: str, prefix: str = "docker.io") -> Path:
    """registries.conf rewriting `prefix` straight to an insecure (http) registry, no mirror involved."""
    path.write_text(
        "unqualified-search-registries = []\n\n"
        "[[registry]]\n"
        f'prefix = "{prefix}"\n'
        f'location = "{host}"\n'
        "insecure = true\n"
    )
    return path


def _platform_args(override_arch: str | None, override_os: str | None) -> list[str]:
    args: list[str] = []
    if override_arch is not None:
        args += ["--override-arch", override_arch]
    if override_os is not None:
        args += ["--override-os", override_os]
    return args


def skopeo_copy(
    ref: str,
    dest_dir: Path,
    *,
    registries_conf: Path,
    tmpdir: Path,
    format: Literal["oci", "dir"] = "oci",
    tag: str = "latest",
    all_images: bool = False,
    override_arch: str | None = None,
    override_os: str | None = None,
    src_creds: tuple[str, str] | None = None,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """`skopeo copy docker://REF` into an OCI layout (`oci:DEST:TAG`) or a `dir:DEST` (manifest bytes kept).

    `all_images` copies every instance of a list/index (`--all`). `src_creds` only reaches the reference's
    own registry: for a mirror or rewritten location use `write_auth_file` instead.
    """
    dest = f"oci:{dest_dir}:{tag}" if format == "oci" else f"dir:{dest_dir}"
    args = [*_platform_args(override_arch, override_os), "copy", "--retry-times", "0"]
    if all_images:
        args.append("--all")
    if src_creds is not None:
        args += ["--src-creds", f"{src_creds[0]}:{src_creds[1]}"]
    args += [*extra_args, f"docker://{ref}", dest]
    return run_skopeo(args, tmpdir, registries_conf=registries_conf, check=check)


@overload
def skopeo_inspect(
    ref: str,
    registries_conf: Path,
    raw: Literal[False] = ...,
    *,
    tmpdir: Path,
    override_arch: str | None = ...,
    src_creds: tuple[str, str] | None = ...,
) -> dict[str, Any]: ...
@overload
def skopeo_inspect(
    ref: str,
    registries_conf: Path,
    raw: Literal[True],
    *,
    tmpdir: Path,
    override_arch: str | None = ...,
    src_creds: tuple[str, str] | None = ...,
) -> bytes: ...
def skopeo_inspect(
    ref: str,
    registries_conf: Path,
    raw: bool = False,
    *,
    tmpdir: Path,
    override_arch: str | None = None,
    src_creds: tuple[str, str] | None = None,
) -> dict[str, Any] | bytes:
    """`skopeo inspect --no-tags docker://REF`: parsed JSON, or with `raw` the exact manifest bytes."""
    args = [*_platform_args(override_arch, None), "inspect", "--retry-times", "0", "--no-tags"]
    if raw:
        args.append("--raw")
    if src_creds is not None:
        args += ["--creds", f"{src_creds[0]}:{src_creds[1]}"]
    args.append(f"docker://{ref}")
    out = run_skopeo(args, tmpdir, registries_conf=registries_conf).stdout
    if raw:
        return out
    parsed = json.loads(out)
    assert isinstance(parsed, dict)
    return parsed


def layout_digests(layout_dir: Path) -> set[str]:
    """Every blob digest (manifests, configs, layers) in an OCI layout or a skopeo `dir:` copy."""
    blobs = layout_dir / "blobs"
    if blobs.is_dir():
        return {f"{p.parent.name}:{p.name}" for p in blobs.glob("*/*") if p.is_file()}
    # dir: transport: blobs are named by sha256 hex; manifests are manifest.json / <digest>.manifest.json
    return {f"sha256:{p.name}" for p in layout_dir.iterdir() if len(p.name) == 64 and p.is_file()}
