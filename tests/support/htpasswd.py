"""htpasswd files for docker-registry's Basic auth, bcrypt-hashed with the system libcrypt."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_crypt_lock = threading.Lock()


def bcrypt_hash(password: str, cost: int = 5) -> str:
    """bcrypt `password` with the system libcrypt (libxcrypt supports $2b$); no Python package needed."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    except OSError as exc:
        raise RuntimeError("libcrypt (libxcrypt) not found: cannot write an htpasswd file") from exc
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    with _crypt_lock:  # crypt() returns a static buffer
        setting = lib.crypt_gensalt(b"$2b$", cost, None, 0)
        hashed = lib.crypt(password.encode(), setting) if setting else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise RuntimeError("libcrypt could not produce a bcrypt hash")
    return str(hashed.decode("ascii"))


def htpasswd_add(path: Path, user: str, password: str, *, create: bool = False) -> Path:
    """Add (or replace) a user with Apache's own `htpasswd -B` (bcrypt), as operators write the file;
    `create` starts a new file."""
    flags = "-cbB" if create else "-bB"
    subprocess.run(["htpasswd", flags, str(path), user, password], check=True, capture_output=True)
    return path


@dataclass(frozen=True)
class HtpasswdAuth:
    """docker-registry `auth.htpasswd` with a single bcrypt user."""

    username: str
    password: str
    realm: str = "mirror-test-basic"

    @property
    def creds(self) -> tuple[str, str]:
        """(username, password)."""
        return (self.username, self.password)

    def config(self, workdir: Path) -> dict[str, Any]:
        """Write the htpasswd file under `workdir`; return the `auth` config section."""
        path = workdir / "htpasswd"
        path.write_text(f"{self.username}:{bcrypt_hash(self.password)}\n")
        return {"htpasswd": {"realm": self.realm, "path": str(path)}}
