"""The keys file, key hashes, the key a caller presents, and the scope each key gives."""

import hashlib
import hmac
from pathlib import Path

import pytest

from server.api.auth import KeyRing, hash_key, parse_keys, presented_key
from server.core.scope import Scope

SECRET_HASH = hash_key("s3cret")


def test_hash_key_is_sha256_hex_with_its_prefix() -> None:
    assert hash_key("s3cret") == "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
    assert len(hash_key("s3cret")) == 71 and hash_key("s3cret ") != hash_key("s3cret")


def test_keys_file_lines_give_key_workspace_and_label() -> None:
    keys = parse_keys("# key workspace label\n\n"
                      f"{SECRET_HASH} * operations team\n"
                      "plain-key toko\n"
                      "   \n")
    assert [(k.workspace, k.label) for k in keys] == [("*", "operations team"), ("toko", "line 4")]
    # A hashed line and a line in the clear match the same way: by the key's digest.
    assert keys[0].digest == bytes.fromhex(SECRET_HASH.removeprefix("sha256:"))
    assert keys[1].digest == bytes.fromhex(hash_key("plain-key").removeprefix("sha256:"))


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("lonely-key", "expected `KEY WORKSPACE [LABEL]`"),
        ("key toko/a", "'toko/a' is not a workspace id or *"),
        ("key " + "w" * 65, "is not a workspace id or *"),
        ("sha256:abc toko", "a hash is sha256: and 64 lowercase hex digits"),
        (SECRET_HASH.upper().replace("SHA256", "sha256") + " toko", "64 lowercase hex digits"),
    ],
)
def test_bad_line_is_refused_naming_its_number(line: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_keys(f"ok-key *\n# comment\n{line}\n")
    assert str(caught.value).startswith("line 3: ") and says in str(caught.value)


def test_key_for_every_workspace_or_one_gives_its_scope() -> None:
    every, toko = parse_keys("a * ops\nb toko kapso\n")
    assert every.scope == Scope(workspace=None, label="ops")
    assert toko.scope == Scope(workspace="toko", label="kapso")


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ((("authorization", "Bearer k1"),), "k1"),
        ((("authorization", "bearer  k1 "),), "k1"),
        ((("x-api-key", " k2 "),), "k2"),
        ((("x-request-id", "r"), ("x-api-key", "k2"), ("authorization", "Bearer k1")), "k2"),
        ((), None),
        ((("authorization", "Basic eDp5"),), None),
        ((("authorization", "Bearer "),), None),
        ((("x-api-key", ""),), None),
        ((("x-api-key-bin", b"k3"),), None),
        ((("x-api-key", b"k3"),), None),  # binary values are never keys
    ],
)
def test_presented_key_is_bearer_or_x_api_key(metadata: tuple[tuple[str, str | bytes], ...],
                                              key: str | None) -> None:
    assert presented_key(metadata) == key


def _keys_file(path: Path, *lines: str) -> Path:
    path.write_text("# key workspace label\n" + "\n".join(lines) + "\n")
    return path


def test_key_ring_finds_keys_hashed_or_in_the_clear(tmp_path: Path) -> None:
    ring = KeyRing(_keys_file(tmp_path / "k.txt", f"{SECRET_HASH} * ops", "plain toko kapso"))
    assert len(ring) == 2
    found = ring.find("s3cret")
    assert found is not None and found.label == "ops"
    found = ring.find("plain")
    assert found is not None and found.workspace == "toko"
    assert ring.find(SECRET_HASH) is None  # the hash itself is not a key
    assert ring.find("nope") is None


def test_key_ring_reload_keeps_the_keys_in_use_when_the_file_turns_bad(tmp_path: Path) -> None:
    path = _keys_file(tmp_path / "k.txt", "old *")
    ring = KeyRing(path)
    _keys_file(path, "old *", "lonely-key")
    ring.reload()
    assert ring.find("old") is not None
    _keys_file(path, "new *")
    ring.reload()
    assert ring.find("old") is None and ring.find("new") is not None


def test_empty_keys_file_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no keys"):
        KeyRing(_keys_file(tmp_path / "k.txt"))


def test_every_key_is_compared_in_constant_time(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing(_keys_file(tmp_path / "k.txt", *(f"key-{i} *" for i in range(5))))
    compared: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(1)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)  # the module auth.py calls
    for presented in ("key-0", "key-4", "nope"):
        compared.clear()
        ring.find(presented)
        assert len(compared) == 5  # no early exit that would time the match's position
