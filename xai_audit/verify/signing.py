"""Sign-off: a reviewer signs a report; ``xai-audit verify`` checks every signature and every signed byte.

``xai-audit sign DIR --name NAME --role ROLE --key KEY`` writes one attestation per signer under
``DIR/signatures/``: an in-toto Statement v1 whose subjects are the SHA-256 of the report's files
(``results.json``, ``report.html``, ``report.pdf``, the plan as run, ``finetune_manifest.csv``, and
``checks.xml``, the model card ``README.md`` and ``run.log`` where the run wrote them, and the plan file the run
recorded), whose predicate says who signed,
in what role and when, wrapped in a DSSE envelope signed over DSSE's pre-authentication encoding (PAE):

    {"payloadType": "application/vnd.in-toto+json", "payload": <base64 statement>,
     "signatures": [{"keyid": <hex sha256 of the raw public key>, "sig": <base64 signature>}]}

Two kinds of key:

* an Ed25519 private key in PEM (PKCS#8, as ``openssl genpkey -algorithm ed25519`` writes it), signed with
  ``cryptography``; ``sig`` is the raw 64-byte Ed25519 signature;
* an OpenSSH private key, signed with ``ssh-keygen -Y sign -n xai-audit`` (any key type ssh-keygen signs
  with); ``sig`` is the binary SSHSIG blob, which carries the public key; verification uses
  ``ssh-keygen -Y check-novalidate``, or ``-Y verify`` against the trusted keys.

The signer's public key is written beside the envelope (``<same name>.pub``, OpenSSH format) so anyone can
check the signature; only ``--trusted-keys`` says whether that key is one the reader trusts. Each signer gets
files of their own (``<name>-<UTC time>.dsse.json``); nothing another signer wrote is ever rewritten.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xai_audit import __version__
from xai_audit.errors import XaiAuditError
from xai_audit.files import path_error, shown
from xai_audit.load.provenance import file_sha256

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: the predicate of an xai-audit sign-off (name, role, signed_at, tool, statement)
PREDICATE_TYPE = "urn:xai-audit:sign-off:v1"
#: the namespace ssh-keygen signs in (a signature made for another purpose never verifies here)
SSH_NAMESPACE = "xai-audit"
SIGNATURES = "signatures"
ENVELOPE_SUFFIX = ".dsse.json"
#: the report's files a sign-off covers, when present (results.json always); the plan file is added from
#: provenance. plan-as-run.yaml is the plan as it ran (written beside the report), checks.xml the gate's
#: JUnit file, README.md the model card, run.log the tracebacks of steps that failed
REPORT_FILES = ("results.json", "report.html", "report.pdf", "plan-as-run.yaml", "finetune_manifest.csv",
                "checks.xml", "README.md", "run.log")
#: the environment variable a PEM key's password may come from (otherwise asked on a terminal)
PASSWORD_ENV = "XAI_AUDIT_KEY_PASSWORD"


class SigningError(XaiAuditError):
    """A report could not be signed (no report, a key that cannot be read or is of the wrong type)."""


# -- DSSE ------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is signed, never the JSON around it."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text, validate=True)


def _ssh_string(data: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(data):
        raise ValueError("truncated SSH string")
    (n,) = struct.unpack(">I", data[at:at + 4])
    if at + 4 + n > len(data):
        raise ValueError("truncated SSH string")
    return data[at + 4:at + 4 + n], at + 4 + n


def _sshsig_public_key(blob: bytes) -> bytes:
    """The public key (SSH wire format) an SSHSIG signature blob was made with."""
    if not blob.startswith(b"SSHSIG"):
        raise ValueError("not an SSH signature")
    key, _ = _ssh_string(blob, 10)  # magic (6), version (4)
    return key


def _raw_key(wire: bytes) -> bytes:
    """The raw public key: Ed25519's 32 bytes out of its SSH wire form; any other key type's whole wire blob."""
    kind, at = _ssh_string(wire, 0)
    if kind == b"ssh-ed25519":
        return _ssh_string(wire, at)[0]
    return wire


def keyid(wire: bytes) -> str:
    """hex SHA-256 of the raw public key (for Ed25519 its 32 bytes)."""
    return hashlib.sha256(_raw_key(wire)).hexdigest()


def _openssh_text(wire: bytes, comment: str = "") -> str:
    kind, _ = _ssh_string(wire, 0)
    return f"{kind.decode('ascii')} {_b64(wire)}" + (f" {comment}" if comment else "")


def _wire_of_openssh(text: str) -> bytes:
    parts = text.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an OpenSSH public key")
    wire = _unb64(parts[1])
    if _ssh_string(wire, 0)[0].decode("ascii", "replace") != parts[0]:
        raise ValueError("the key's type and its data disagree")
    return wire


def _armor(blob: bytes) -> bytes:
    text = _b64(blob)
    lines = [text[i:i + 70] for i in range(0, len(text), 70)]
    return ("-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n").encode()


def _dearmor(text: bytes) -> bytes:
    body = [ln for ln in text.decode("ascii", "replace").splitlines() if ln and not ln.startswith("-----")]
    return base64.b64decode("".join(body))


# -- keys ------------------------------------------------------------------------


@dataclass
class SigningKey:
    path: Path
    kind: str  # "ed25519" (PEM, cryptography) or "ssh" (OpenSSH, ssh-keygen)
    private: Any = None

    def sign(self, message: bytes) -> tuple[bytes, bytes]:
        """(signature, the public key in SSH wire format) over ``message``."""
        if self.kind == "ed25519":
            from cryptography.hazmat.primitives import serialization

            public = self.private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                            serialization.PublicFormat.OpenSSH)
            return self.private.sign(message), _wire_of_openssh(public.decode("ascii"))
        return _ssh_sign(self.path, message)


def read_key(path: Path) -> SigningKey:
    """The signing key in ``path``: an Ed25519 PEM private key, or an OpenSSH private key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise path_error(exc, "key", path) from None
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        if _ssh_keygen() is None:
            raise SigningError(f"key {shown(path)}: an OpenSSH key, and ssh-keygen (which signs with it) is not "
                               "installed; install OpenSSH or use an Ed25519 PEM key")
        return SigningKey(path, "ssh")
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        what = "a public key, not a private key" if (b"PUBLIC KEY" in data or data.startswith(b"ssh-")) else \
            "not a PEM or OpenSSH private key"
        raise SigningError(f"key {shown(path)}: {what}; sign with your Ed25519 (PEM) or OpenSSH private key")
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    password = None
    if b"ENCRYPTED" in data:
        password = os.environ.get(PASSWORD_ENV)
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {shown(path)}: ")
        if password is None:
            raise SigningError(f"key {shown(path)}: encrypted; give its password in ${PASSWORD_ENV} or sign "
                               "from a terminal")
    try:
        private = serialization.load_pem_private_key(data, password=password.encode() if password else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(f"key {shown(path)}: cannot be read: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        kind = type(private).__name__.replace("PrivateKey", "").lstrip("_") or "another kind"
        raise SigningError(f"key {shown(path)}: a {kind} key; a PEM key must be Ed25519 "
                           "(openssl genpkey -algorithm ed25519), or use an OpenSSH key")
    return SigningKey(path, "ed25519", private)


def _ssh_keygen() -> str | None:
    return shutil.which("ssh-keygen")


def _ssh_sign(path: Path, message: bytes) -> tuple[bytes, bytes]:
    keygen = _ssh_keygen()
    if keygen is None:
        raise SigningError("ssh-keygen is not installed")
    try:
        done = subprocess.run([keygen, "-Y", "sign", "-n", SSH_NAMESPACE, "-f", str(path)], input=message,
                              capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SigningError(f"key {shown(path)}: ssh-keygen could not sign: {exc}") from None
    if done.returncode != 0:
        why = [ln for ln in done.stderr.decode("utf-8", "replace").splitlines() if ln.strip()
               and not ln.startswith("Signing data")]
        raise SigningError(f"key {shown(path)}: ssh-keygen could not sign with it: "
                           f"{why[-1] if why else 'exit status ' + str(done.returncode)}")
    try:
        blob = _dearmor(done.stdout)
        return blob, _sshsig_public_key(blob)
    except ValueError as exc:
        raise SigningError(f"key {shown(path)}: ssh-keygen wrote no usable signature: {exc}") from None


# -- signing ---------------------------------------------------------------------


def report_folder(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the report folder, its results.json) for a folder or its results.json; SigningError when not a report."""
    folder = Path(folder)
    if folder.name == "results.json" and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise SigningError(f"report folder {shown(folder)}: " + ("not a folder" if folder.exists() else "not found"))
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise SigningError(f"{shown(path)}: no results.json here (sign the folder a run wrote)") from None
    except (OSError, ValueError) as exc:
        raise SigningError(f"{shown(path)}: not a readable results.json: {exc}") from None
    if not isinstance(results, dict) or "provenance" not in results:
        raise SigningError(f"{shown(path)}: not an xai-audit results.json (no provenance)")
    return folder, results


def signed_files(folder: Path, results: dict[str, Any]) -> list[tuple[str, Path]]:
    """(subject name, path) of every file a sign-off covers: the report's files here, then the plan.

    A file in the folder is named relative to it (the folder may move); a plan outside it by its path."""
    files = [(name, folder / name) for name in REPORT_FILES if (folder / name).is_file()]
    plan = ((results.get("provenance") or {}).get("plan_file") or {})
    if isinstance(plan, dict) and isinstance(plan.get("path"), str):
        path = Path(plan["path"])
        if not path.is_file():
            raise SigningError(f"plan file {shown(path)} (the report's provenance.plan_file) is missing; "
                               "a sign-off covers the plan as run")
        if plan.get("sha256") and file_sha256(path) != plan["sha256"]:
            raise SigningError(f"plan file {shown(path)} has changed since the report was written "
                               "(its sha256 differs from provenance.plan_file); sign a report of this plan")
        try:
            name = path.resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            name = str(path.resolve())
        if name not in {n for n, _ in files}:
            files.append((name, path))
    return files


def statement(folder: Path, results: dict[str, Any], *, name: str, role: str, signed_at: str,
              text: str | None = None) -> dict[str, Any]:
    """The in-toto Statement v1 a signer signs: every signed file's sha256, and who, as what, when."""
    predicate: dict[str, Any] = {
        "name": name, "role": role, "signed_at": signed_at,
        "tool": {"name": "xai-audit", "version": __version__},
        "report_title": results.get("title"),
    }
    if text:
        predicate["statement"] = text
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": file_sha256(p)}} for n, p in signed_files(folder, results)],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def slug(name: str) -> str:
    """A file-name-safe form of a person's name: lower case ASCII letters, digits and dashes."""
    import unicodedata

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60] or "signer"


@dataclass
class Signed:
    envelope: Path
    public_key: Path
    statement: dict[str, Any]
    keyid: str


def sign_report(folder: Path, *, name: str, role: str, key: Path, text: str | None = None,
                now: _dt.datetime | None = None) -> Signed:
    """Sign the report in ``folder`` with ``key``: writes ``signatures/<name>-<time>.dsse.json`` and its ``.pub``."""
    if not name.strip() or not role.strip():
        raise SigningError("--name and --role must not be empty: a sign-off says who signed and as what")
    folder, results = report_folder(folder)
    signer = read_key(key)  # before any work: a key that cannot sign stops here
    when = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc).replace(microsecond=0)
    stmt = statement(folder, results, name=name.strip(), role=role.strip(),
                     signed_at=when.strftime("%Y-%m-%dT%H:%M:%SZ"), text=text)
    payload = json.dumps(stmt, indent=2, ensure_ascii=False, sort_keys=False).encode("utf-8")
    sig, wire = signer.sign(pae(PAYLOAD_TYPE, payload))
    kid = keyid(wire)
    envelope = {"payloadType": PAYLOAD_TYPE, "payload": _b64(payload), "signatures": [{"keyid": kid, "sig": _b64(sig)}]}
    out = folder / SIGNATURES
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise path_error(exc, "signatures folder", out) from None
    stem = f"{slug(name)}-{when.strftime('%Y%m%dT%H%M%SZ')}"
    pub_text = (_openssh_text(wire, name.strip().replace("\n", " ")) + "\n").encode("utf-8")
    env_bytes = (json.dumps(envelope, indent=2) + "\n").encode("utf-8")
    for n in range(1, 1000):  # a name no one has used: the public key first, the envelope last (it completes it)
        candidate = stem if n == 1 else f"{stem}-{n}"
        pub, env = out / f"{candidate}.pub", out / f"{candidate}{ENVELOPE_SUFFIX}"
        if env.exists() or pub.exists():
            continue
        if _write_new(pub, pub_text):
            if _write_new(env, env_bytes):
                return Signed(env, pub, stmt, kid)
            with contextlib.suppress(OSError):
                pub.unlink()
    raise SigningError(f"signatures folder {shown(out)}: no free name for {stem}")


def _write_new(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically without replacing anything there: False when ``path`` exists."""
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise path_error(exc, "cannot write", path) from None
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)
        try:
            os.link(temp, path)  # fails when the name is taken: never rewrites another signer's file
        except FileExistsError:
            return False
        return True
    except OSError as exc:
        raise path_error(exc, "cannot write", path) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


# -- verifying -------------------------------------------------------------------


def read_trusted_keys(path: Path) -> dict[str, bytes]:
    """{keyid: SSH wire key} from a file of public keys (OpenSSH lines, as in authorized_keys, or PEM) or from
    every ``*.pub`` / ``*.pem`` file of a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted([*path.glob("*.pub"), *path.glob("*.pem")])
        if not files:
            raise SigningError(f"trusted keys {shown(path)}: no *.pub or *.pem file in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise SigningError(f"trusted keys {shown(path)}: not found")
    keys: dict[str, bytes] = {}
    for file in files:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningError(f"trusted keys {shown(file)}: cannot be read: {exc}") from None
        found = _keys_in(text, file)
        if not found:
            raise SigningError(f"trusted keys {shown(file)}: no public key in it (OpenSSH lines or PEM)")
        keys.update({keyid(w): w for w in found})
    return keys


def _keys_in(text: str, file: Path) -> list[bytes]:
    from cryptography.hazmat.primitives import serialization

    found = []
    for block in re.findall(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", text, re.DOTALL):
        try:
            public = serialization.load_pem_public_key(block.encode())
            line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        except (ValueError, TypeError) as exc:
            raise SigningError(f"trusted keys {shown(file)}: a PEM public key cannot be read: {exc}") from None
        found.append(_wire_of_openssh(line.decode("ascii")))
    text = re.sub(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", "", text, flags=re.DOTALL)
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(_wire_of_openssh(line))
        except ValueError as exc:
            raise SigningError(f"trusted keys {shown(file)}, line {number}: {exc}") from None
    return found


def verify_signatures(folder: Path, trusted: dict[str, bytes] | None = None) -> list[dict[str, Any]]:
    """One row per signature and per file it signed, as ``verify_report``'s rows:
    ``{what, path, status, expected, found}``; a signature's status is valid, invalid, untrusted or unchecked,
    a signed file's match, changed or missing. Nothing when the report has no ``signatures/`` folder."""
    folder = Path(folder)
    out = folder / SIGNATURES
    if not out.is_dir():
        return []
    rows: list[dict[str, Any]] = []
    for env_path in sorted(out.glob(f"*{ENVELOPE_SUFFIX}")):
        rows.extend(_verify_one(folder, env_path, trusted))
    return rows


def _row(what: str, path: str, status: str, expected: Any = None, found: Any = None) -> dict[str, Any]:
    return {"what": what, "path": path, "status": status, "expected": expected, "found": found}


def _verify_one(folder: Path, env_path: Path, trusted: dict[str, bytes] | None) -> list[dict[str, Any]]:
    shown_path = f"{SIGNATURES}/{env_path.name}"
    try:
        envelope = json.loads(env_path.read_text())
        payload = _unb64(envelope["payload"])
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE!r}")
        entries = envelope["signatures"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("no signatures")
        stmt = json.loads(payload)
        if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
            raise ValueError("the payload is not an in-toto Statement v1")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [_row(f"signature (not a DSSE envelope: {exc})", shown_path, "invalid")]
    message = pae(PAYLOAD_TYPE, payload)
    pub_path = env_path.with_name(env_path.name[: -len(ENVELOPE_SUFFIX)] + ".pub")
    checked: list[tuple[str, str, str]] = []  # (status, keyid, why)
    for entry in entries:
        checked.append(_check_entry(entry, message, pub_path, trusted))
    predicate = stmt.get("predicate") if isinstance(stmt.get("predicate"), dict) else {}
    who = f"{predicate.get('name', '?')} ({predicate.get('role', '?')}) at {predicate.get('signed_at', '?')}"
    bad = [c for c in checked if c[0] != "valid"]
    if bad:
        status, kid, why = bad[0]
        return [_row(f"signature said to be by {who}: {why}", shown_path, status, found=kid)]
    if stmt.get("predicateType") != PREDICATE_TYPE:
        return [_row(f"signature by {who}: predicateType {stmt.get('predicateType')!r} is not an xai-audit "
                     "sign-off", shown_path, "invalid")]
    kids = ", ".join(k[:16] for _, k, _ in checked)
    pinned = "a trusted key" if trusted is not None else "key not pinned (--trusted-keys)"
    rows = [_row(f"signature by {who}, key {kids}, {pinned}", shown_path, "valid", found=kids)]
    subjects = stmt.get("subject") if isinstance(stmt.get("subject"), list) else []
    if not subjects:
        rows.append(_row(f"signature by {who}: signs no file", shown_path, "invalid"))
    for subject in subjects:
        rows.append(_subject_row(folder, subject, predicate.get("name", "?")))
    return rows


def _subject_row(folder: Path, subject: Any, name: str) -> dict[str, Any]:
    try:
        sub_name, expected = subject["name"], subject["digest"]["sha256"]
        if not isinstance(sub_name, str) or not isinstance(expected, str):
            raise TypeError
    except (KeyError, TypeError):
        return _row(f"file signed by {name}: a subject without a name and sha256", "", "invalid")
    path = Path(sub_name) if Path(sub_name).is_absolute() else folder / sub_name
    what = f"file signed by {name}"
    if ".." in Path(sub_name).parts:
        return _row(what + " (a name outside the report)", sub_name, "invalid", expected)
    if not path.is_file():
        return _row(what, sub_name, "missing", expected)
    found = file_sha256(path)
    return _row(what, sub_name, "match" if found == expected else "changed", expected, found)


def _check_entry(entry: Any, message: bytes, pub_path: Path, trusted: dict[str, bytes] | None) -> tuple[str, str, str]:
    """(valid | invalid | untrusted | unchecked, keyid, why) for one signature of an envelope."""
    if not isinstance(entry, dict):
        return "invalid", "", "a signature entry that is not an object"
    kid = str(entry.get("keyid", ""))
    try:
        sig = _unb64(entry.get("sig"))
    except ValueError:
        return "invalid", kid, "its signature is not base64"
    beside = None
    if pub_path.is_file():
        try:
            beside = _wire_of_openssh(pub_path.read_text().strip())
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return "invalid", kid, f"{pub_path.name}: {exc}"
    if sig.startswith(b"SSHSIG"):
        try:
            wire = _sshsig_public_key(sig)
        except ValueError as exc:
            return "invalid", kid, f"a broken SSH signature ({exc})"
        if beside is not None and beside != wire:
            return "invalid", kid, f"{pub_path.name} is not the key the SSH signature was made with"
    else:
        if beside is None:
            return "invalid", kid, f"no public key beside it ({pub_path.name})"
        wire = beside
    if keyid(wire) != kid:
        return "invalid", kid, "its keyid is not the SHA-256 of the key that signed"
    if trusted is not None and kid not in trusted:
        return "untrusted", kid, f"key {kid[:16]} is not among the trusted keys"
    if sig.startswith(b"SSHSIG"):
        return _ssh_check(sig, message, wire, kid, trusted is not None)
    kind = _ssh_string(wire, 0)[0]
    if kind != b"ssh-ed25519":
        return "invalid", kid, f"a {kind.decode('ascii', 'replace')} key with a raw signature (only Ed25519 is)"
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(_raw_key(wire)).verify(sig, message)
    except (InvalidSignature, ValueError):
        return "invalid", kid, "the signature does not match the envelope's payload (it was changed after signing)"
    return "valid", kid, ""


def _ssh_check(sig: bytes, message: bytes, wire: bytes, kid: str, pinned: bool) -> tuple[str, str, str]:
    keygen = _ssh_keygen()
    if keygen is None:
        return "unchecked", kid, "an SSH signature, and ssh-keygen is not installed to check it"
    with tempfile.TemporaryDirectory(prefix="xai-audit-sig-") as tmp:
        sig_file = Path(tmp) / "sig"
        sig_file.write_bytes(_armor(sig))
        if pinned:  # -Y verify: the signature must be by this key, allowed for our namespace
            allowed = Path(tmp) / "allowed_signers"
            allowed.write_text(f'* namespaces="{SSH_NAMESPACE}" {_openssh_text(wire)}\n')
            cmd = [keygen, "-Y", "verify", "-f", str(allowed), "-I", "signer", "-n", SSH_NAMESPACE, "-s", str(sig_file)]
        else:
            cmd = [keygen, "-Y", "check-novalidate", "-n", SSH_NAMESPACE, "-s", str(sig_file)]
        try:
            done = subprocess.run(cmd, input=message, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return "unchecked", kid, f"ssh-keygen could not run: {exc}"
    if done.returncode != 0:
        return "invalid", kid, "the SSH signature does not match the envelope's payload (it was changed after signing)"
    return "valid", kid, ""
