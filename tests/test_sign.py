"""`xai-audit sign` and the signature checks of `xai-audit verify` (issue 19, item 3)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, plan_text
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from typer.testing import CliRunner

from xai_audit.cli import app
from xai_audit.verify.signing import PAYLOAD_TYPE, PREDICATE_TYPE, REPORT_FILES, STATEMENT_TYPE, keyid, pae

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A tiny report (12 images, no explainer, one check): report.html, report.pdf, results.json, the manifest,
    checks.xml and the model card; the plan lies beside the report folder, as with `xai-audit run plan.yaml`."""
    root = tmp_path_factory.mktemp("signed")
    (root / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), root / "weights.pt")
    (root / "plan.yaml").write_text(plan_text(n=12, extra="checks:\n  - accuracy >= 0\n"))
    result = runner.invoke(app, ["run", str(root / "plan.yaml"), "--out", str(root / "out"), "--no-cache", "-q",
                                 "--formats", "html,pdf,json,card"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def report(built, tmp_path) -> Path:
    """A fresh copy of the report folder for one test (its plan stays the built one)."""
    return Path(shutil.copytree(built / "out", tmp_path / "out"))


def _ed25519_key(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _sign(report: Path, key: Path, name: str = "Ada Lovelace", role: str = "model risk reviewer", *extra: str):
    return runner.invoke(app, ["sign", str(report), "--name", name, "--role", role, "--key", str(key), *extra])


def _verify(report: Path, *extra: str):
    return runner.invoke(app, ["verify", str(report), "--no-load", *extra])


def _envelopes(report: Path) -> list[Path]:
    return sorted((report / "signatures").glob("*.dsse.json"))


def test_sign_writes_an_in_toto_statement_in_dsse_over_every_report_file(report, built, tmp_path):
    key = _ed25519_key(tmp_path / "ada.pem")
    result = _sign(report, key, "Ada Lovelace", "model risk reviewer", "--statement", "Approved for the pilot")
    assert result.exit_code == 0, result.output
    [env_path] = _envelopes(report)
    assert env_path.name.startswith("ada-lovelace-") and env_path.with_name(env_path.name[:-10] + ".pub").is_file()
    envelope = json.loads(env_path.read_text())
    assert envelope["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    predicate = statement["predicate"]
    assert (predicate["name"], predicate["role"], predicate["statement"]) == (
        "Ada Lovelace", "model risk reviewer", "Approved for the pilot")
    assert predicate["signed_at"].endswith("Z") and predicate["tool"]["name"] == "xai-audit"
    import hashlib

    names = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    plan = str((built / "plan.yaml").resolve())
    assert set(names) == {n for n in REPORT_FILES if (report / n).is_file()} | {plan}
    assert {"results.json", "report.html", "report.pdf", "finetune_manifest.csv", plan} <= set(names)
    for name, digest in names.items():
        path = Path(name) if Path(name).is_absolute() else report / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # the signature is Ed25519 over DSSE's PAE, by the key whose raw bytes' SHA-256 is the keyid
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    [entry] = envelope["signatures"]
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert entry["keyid"] == hashlib.sha256(raw).hexdigest()
    public.verify(base64.b64decode(entry["sig"]), pae(PAYLOAD_TYPE, payload))  # raises when not


def test_two_signers_verify_and_are_listed(report, tmp_path):
    assert _sign(report, _ed25519_key(tmp_path / "a.pem"), "Ada Lovelace", "reviewer").exit_code == 0
    assert _sign(report, _ed25519_key(tmp_path / "g.pem"), "Grace Hopper", "provider").exit_code == 0
    assert len(_envelopes(report)) == 2
    result = _verify(report)
    assert result.exit_code == 0, result.output
    assert "valid  signature by Ada Lovelace (reviewer) at " in result.output
    assert "valid  signature by Grace Hopper (provider) at " in result.output
    assert "match  file signed by Grace Hopper report.pdf" in result.output
    assert "match  file signed by Ada Lovelace results.json" in result.output


def test_one_signer_twice_keeps_both_signatures(report, tmp_path):
    key = _ed25519_key(tmp_path / "a.pem")
    assert _sign(report, key).exit_code == 0
    first = {p.name: p.read_bytes() for p in (report / "signatures").iterdir()}
    assert _sign(report, key).exit_code == 0  # the same second maybe: another name, the first untouched
    now = {p.name: p.read_bytes() for p in (report / "signatures").iterdir()}
    assert len(_envelopes(report)) == 2 and all(now[n] == b for n, b in first.items())
    assert _verify(report).exit_code == 0


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_an_openssh_key_signs_through_ssh_keygen(report, tmp_path, monkeypatch):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "grace", "-f", str(key)], check=True)
    assert _sign(report, _ed25519_key(tmp_path / "a.pem"), "Ada Lovelace", "reviewer").exit_code == 0
    result = _sign(report, key, "Grace Hopper", "provider")
    assert result.exit_code == 0, result.output
    envelope = json.loads(next(p for p in _envelopes(report) if p.name.startswith("grace")).read_text())
    assert base64.b64decode(envelope["signatures"][0]["sig"]).startswith(b"SSHSIG")
    wire = base64.b64decode(Path(f"{key}.pub").read_text().split()[1])
    assert envelope["signatures"][0]["keyid"] == keyid(wire)
    result = _verify(report)
    assert result.exit_code == 0, result.output
    assert "signature by Grace Hopper (provider)" in result.output and "signature by Ada Lovelace" in result.output
    # pinned: the SSH key alone is trusted, so Ada's signature fails and Grace's passes (ssh-keygen -Y verify)
    result = _verify(report, "--trusted-keys", f"{key}.pub")
    assert result.exit_code == 1
    assert "valid  signature by Grace Hopper (provider)" in result.output and "a trusted key" in result.output
    assert "untrusted  signature said to be by Ada Lovelace" in result.output
    import xai_audit.verify.signing as signing

    with monkeypatch.context() as m:  # no ssh-keygen to check it: never passed as valid
        m.setattr(signing, "_ssh_keygen", lambda: None)
        result = _verify(report)
    assert result.exit_code == 1 and "unchecked  signature said to be by Grace Hopper" in result.output
    # a changed payload fails ssh-keygen's check
    envelope["payload"] = base64.b64encode(base64.b64decode(envelope["payload"]).replace(b"provider", b"approver")).decode()
    grace = next(p for p in _envelopes(report) if p.name.startswith("grace"))
    grace.write_text(json.dumps(envelope))
    result = _verify(report)
    assert result.exit_code == 1 and "invalid  signature said to be by Grace Hopper (approver)" in result.output
    assert grace.name in result.output


def test_trusted_keys_pin_the_signer(report, tmp_path):
    key = _ed25519_key(tmp_path / "a.pem")
    assert _sign(report, key).exit_code == 0
    [pub] = (report / "signatures").glob("*.pub")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(pub, trusted / "ada.pub")
    assert _verify(report, "--trusted-keys", str(trusted)).exit_code == 0
    pem = tmp_path / "ada-public.pem"  # a PEM public key is as good as an OpenSSH line
    pem.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert _verify(report, "--trusted-keys", str(pem)).exit_code == 0
    other = tmp_path / "other.pem"
    other.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = _verify(report, "--trusted-keys", str(other))
    assert result.exit_code == 1 and "untrusted  signature said to be by Ada Lovelace" in result.output
    result = _verify(report, "--trusted-keys", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "trusted keys" in result.stderr


@pytest.mark.parametrize("name", [n for n in REPORT_FILES if n != "run.log"] + ["plan"])  # no step failed: no log
def test_a_changed_byte_in_any_signed_file_fails_verify_naming_it(report, built, tmp_path, name):
    if name == "plan-as-run.yaml" and not (report / name).is_file():
        pytest.skip("this version writes no plan-as-run.yaml")
    assert _sign(report, _ed25519_key(tmp_path / "a.pem")).exit_code == 0
    assert _verify(report).exit_code == 0
    path = built / "plan.yaml" if name == "plan" else report / name
    before = path.read_bytes()
    changed = bytearray(before)
    changed[len(changed) // 2] ^= 0x01  # one bit of one byte
    path.write_bytes(bytes(changed))
    try:
        result = _verify(report)
    finally:
        path.write_bytes(before)  # the plan is shared by every test of the module
    assert result.exit_code == 1, result.output
    shown = str(path.resolve()) if name == "plan" else name
    assert f"changed  file signed by Ada Lovelace {shown}" in result.output
    flagged = [line.split()[0] for line in result.output.splitlines() if "file signed by" in line]
    assert flagged.count("changed") == 1 and set(flagged) == {"match", "changed"}  # that file only
    if name == "plan":  # the plan is also the provenance's plan file
        assert f"changed  plan file {shown}" in result.output


def test_a_tampered_envelope_fails_verify(report, tmp_path):
    assert _sign(report, _ed25519_key(tmp_path / "a.pem"), "Ada Lovelace", "reviewer").exit_code == 0
    [env_path] = _envelopes(report)
    original = env_path.read_text()
    envelope = json.loads(original)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["role"] = "chief executive"  # a claim the signer never made
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    env_path.write_text(json.dumps(envelope))
    result = _verify(report)
    assert result.exit_code == 1
    assert "invalid  signature said to be by Ada Lovelace (chief executive)" in result.output
    assert env_path.name in result.output

    # a subject's digest rewritten to a changed file's: the signature no longer holds
    statement = json.loads(base64.b64decode(json.loads(original)["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    env_path.write_text(json.dumps({**json.loads(original), "payload": base64.b64encode(
        json.dumps(statement).encode()).decode()}))
    assert _verify(report).exit_code == 1

    # another key put beside it: the keyid no longer names the key
    env_path.write_text(original)
    pub = env_path.with_name(env_path.name[:-10] + ".pub")
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub.write_bytes(other + b"\n")
    result = _verify(report)
    assert result.exit_code == 1 and "keyid" in result.output

    env_path.write_text("{not json")
    result = _verify(report)
    assert result.exit_code == 1 and "not a DSSE envelope" in result.output


def test_bad_input_is_one_line_and_exit_2(report, tmp_path):
    key = _ed25519_key(tmp_path / "a.pem")
    cases = {
        "not found": _sign(tmp_path / "nowhere", key),
        "no results.json here": _sign(tmp_path, key),
        "key": _sign(report, tmp_path / "no-such-key"),
    }
    rsa_like = tmp_path / "ec.pem"
    rsa_like.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cases["must be Ed25519"] = _sign(report, rsa_like)
    public = tmp_path / "a.pub"
    public.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    cases["a public key, not a private key"] = _sign(report, public)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    cases["cannot be read"] = _sign(report, garbage)
    cases["must not be empty"] = _sign(report, key, " ", "reviewer")
    for words, result in cases.items():
        assert result.exit_code == 2, (words, result.output)
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, (words, result.stderr)
    assert not (report / "signatures").exists() or not list((report / "signatures").iterdir())


def test_more_bad_input_is_exit_2(report, built, tmp_path, monkeypatch):
    encrypted = tmp_path / "locked.pem"
    encrypted.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    monkeypatch.delenv("XAI_AUDIT_KEY_PASSWORD", raising=False)
    result = _sign(report, encrypted)
    assert result.exit_code == 2 and "encrypted; give its password in $XAI_AUDIT_KEY_PASSWORD" in result.stderr
    monkeypatch.setenv("XAI_AUDIT_KEY_PASSWORD", "secret")
    assert _sign(report, encrypted).exit_code == 0  # the password from the environment
    monkeypatch.setenv("XAI_AUDIT_KEY_PASSWORD", "wrong")
    result = _sign(report, encrypted)
    assert result.exit_code == 2 and "cannot be read" in result.stderr

    plan = built / "plan.yaml"
    before = plan.read_bytes()
    plan.write_bytes(before + b"# edited after the run\n")
    try:
        result = _sign(report, _ed25519_key(tmp_path / "a.pem"))
    finally:
        plan.write_bytes(before)
    assert result.exit_code == 2 and "has changed since the report was written" in result.stderr

    import xai_audit.verify.signing as signing

    ssh_key = tmp_path / "id_ed25519"
    ssh_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    monkeypatch.setattr(signing, "_ssh_keygen", lambda: None)
    result = _sign(report, ssh_key)
    assert result.exit_code == 2 and "ssh-keygen (which signs with it) is not installed" in result.stderr
