"""CurveZMQ key pairs in files: ``mpanet-keys NAME ...`` (or ``python run_pipeline.py keys NAME ...``).

Each NAME gets two files in ``--dir`` (default ``keys/``), both created with mode 0600 (owner
only) and never overwritten unless ``--force``::

    NAME.key           the public key: copy it to the peers that must know this end
    NAME.key_secret    the public and the secret key: stays on this machine

The format is ZeroMQ's certificate text (what :func:`zmq.auth.load_certificate` reads). Configs
name these files, never the keys themselves (docs/messages.md, "Security"). A secret key file that
others may read is refused, as ssh refuses a private key with loose permissions.
"""

from __future__ import annotations

import argparse
import datetime
import os
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class KeyFileError(ValueError):
    """A key file that is missing, malformed, or readable by others (the message names it)."""


def _certificate_text(public: bytes, secret: bytes | None) -> str:
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        f"#   ****  CURVE key pair written by mpanet-keys on {stamp}  ****",
        "#   ZeroMQ CURVE " + ("secret (keep it on this machine)" if secret else "public") + " certificate",
        "metadata",
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)  # born 0600: never readable by others, not even briefly
    except FileExistsError as exc:
        raise KeyFileError(
            f"{path} exists; pass --force to replace it (peers then need the new public key)"
        ) from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)  # --force on an older file with looser bits


def write_key_pair(directory: str | os.PathLike[str], name: str, force: bool = False) -> tuple[Path, Path]:
    """Generate a CURVE key pair; write ``NAME.key`` and ``NAME.key_secret`` (0600). Returns both paths."""
    import zmq

    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = zmq.curve_keypair()
    public_path, secret_path = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    _write_private(secret_path, _certificate_text(public, secret), force)
    _write_private(public_path, _certificate_text(public, None), force)
    return public_path, secret_path


def load_key_pair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a ``.key_secret`` file.

    Raises:
        KeyFileError: missing, unreadable, without a secret key, or readable by group / others.
    """
    file = Path(path)
    if not file.is_file():
        raise KeyFileError(
            f"secret key file {file} does not exist (make one: mpanet-keys NAME --dir {file.parent})"
        )
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"secret key file {file} has mode {mode:04o}; others may read it: chmod 600 {file}"
        )
    public, secret = _load(file)
    if not secret:
        raise KeyFileError(f"{file} holds no secret key (is it the public {PUBLIC_SUFFIX} file?)")
    return public, secret


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) file."""
    file = Path(path)
    if not file.is_file():
        raise KeyFileError(f"public key file {file} does not exist")
    return _load(file)[0]


def load_allowed_keys(paths: Iterable[str | os.PathLike[str]]) -> set[bytes]:
    """The public keys of ``paths``: ``.key`` files, or directories whose ``*.key`` files all count."""
    keys: set[bytes] = set()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob(f"*{PUBLIC_SUFFIX}"))
            if not files:
                raise KeyFileError(f"allow-list directory {path} holds no *{PUBLIC_SUFFIX} files")
            keys.update(load_public_key(f) for f in files)
        else:
            keys.add(load_public_key(path))
    return keys


def _load(file: Path) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{file} is not a CURVE key file ({exc})") from exc
    if public is None or len(public) != 40:
        raise KeyFileError(f"{file} holds no valid public key")
    return public, secret


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mpanet-keys",
        description="Write CurveZMQ key pairs (NAME.key public, NAME.key_secret secret; mode 0600).",
    )
    parser.add_argument("names", nargs="+", help="one key pair per name, e.g. linker edge-0 viewer")
    parser.add_argument("--dir", default="keys", help="directory of the key files (default keys/)")
    parser.add_argument("--force", action="store_true", help="replace existing files (key rotation)")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            public_path, secret_path = write_key_pair(args.dir, name, force=args.force)
            print(f"{name}: public {public_path}  secret {secret_path}  (mode 0600)")
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
