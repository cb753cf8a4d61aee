#!/usr/bin/env python3
"""Independent check of the wattmesh test vectors against docs/PROTOCOL.md.

Written from the specification alone (no Rust source). The message layouts are read
from the spec's own tables at run time (section 3 common types, section 4 envelope and
kind table, section 6 message tables), so a field added, dropped or reordered in the
code but not in the document shows up here as a mismatch.

Standard library plus `cryptography` (Ed25519). Exit status is non-zero on any mismatch.

Usage: check_vectors.py [PROTOCOL.md] [vectors.json]
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ROOT = Path(__file__).resolve().parents[3]
SPEC_PATH = ROOT / "docs" / "PROTOCOL.md"
VECTORS_PATH = ROOT / "protocol" / "tests" / "vectors" / "vectors.json"

# Curve constants (spec section 5).
ELL = 2**252 + 27742317777372353535851937790883648493
P25519 = 2**255 - 19

FAILURES: list[str] = []


class SpecError(Exception):
    """The spec could not be read as expected, or a value does not fit its type."""


def ok(label: str) -> None:
    print(f"ok    {label}")


def fail(label: str, detail: str) -> None:
    print(f"FAIL  {label}: {detail}")
    FAILURES.append(label)


def check(label: str, got, want, section: str) -> bool:
    if got == want:
        ok(label)
        return True
    g = got.hex() if isinstance(got, (bytes, bytearray)) else repr(got)
    w = want.hex() if isinstance(want, (bytes, bytearray)) else repr(want)
    detail = f"spec {section} gives {g}, vector has {w}"
    if isinstance(got, (bytes, bytearray)) and isinstance(want, (bytes, bytearray)):
        i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        detail += f" (first difference at byte {i}; lengths {len(got)} vs {len(want)})"
    fail(label, detail)
    return False


def H(tag: str, *parts: bytes) -> bytes:
    """Section 1: H(tag, parts...) = SHA-256(tag ASCII || 0x00 || parts...)."""
    return hashlib.sha256(tag.encode("ascii") + b"\x00" + b"".join(parts)).digest()


# ---------------------------------------------------------------------------
# Reading the spec's tables
# ---------------------------------------------------------------------------

def section(text: str, heading_re: str) -> str:
    """Body of the first markdown section whose heading matches, up to the next heading of
    the same or a higher level."""
    m = re.search(rf"^(#+) {heading_re}.*$", text, re.M)
    if not m:
        raise SpecError(f"spec has no section matching {heading_re!r}")
    level = len(m.group(1))
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def tables(body: str) -> list[tuple[list[str], list[list[str]]]]:
    """All markdown tables in body, each as (header cells, rows of cells)."""
    out, cur = [], None
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
            elif all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            else:
                cur[1].append(cells)
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def table_with(body: str, header: list[str]) -> list[list[str]]:
    for hdr, rows in tables(body):
        if [h.lower() for h in hdr] == header:
            return rows
    raise SpecError(f"no table with header {header}")


def unquote(s: str) -> str:
    return s.strip().strip("`").strip()


def split_top(s: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "<{[(":
            depth += 1
        elif ch in ">}])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def enum_variants(text: str) -> list[tuple[int, str]]:
    """`0` Sell, `1` Buy  ->  [(0, 'Sell'), (1, 'Buy')]"""
    vs = [(int(i), n) for i, n in re.findall(r"`(\d+)`\s+(\w+)", text)]
    if not vs or [i for i, _ in vs] != list(range(len(vs))):
        raise SpecError(f"cannot read enum variants from {text!r}")
    return vs


class Spec:
    def __init__(self, text: str):
        self.text = text
        self.named: dict[str, tuple] = {}
        self.messages: dict[str, tuple] = {}   # spec name -> ("struct", fields)
        self.kinds: dict[int, str] = {}        # kind -> spec name
        self.signers: dict[int, str] = {}      # kind -> "signatures, in order" text
        self._read_common()
        self._read_envelope()
        self._read_messages()
        self._read_section10()

    # section 3
    def _read_common(self) -> None:
        body = section(self.text, r"3\. Common types")
        for name_cell, layout in table_with(body, ["name", "layout"]):
            name = unquote(name_cell)
            if layout.startswith("enum"):
                self.named[name] = ("enum", enum_variants(layout))
                continue
            fields = re.findall(r"`(\w+):\s*([^`]+)`", layout)
            if fields:
                self.named[name] = ("struct", [(f, self.parse_type(t)) for f, t in fields])
            else:
                m = re.match(r"`([^`]+)`", layout)
                if not m:
                    raise SpecError(f"cannot read layout of {name}: {layout!r}")
                self.named[name] = self.parse_type(m.group(1))

    # section 4
    def _read_envelope(self) -> None:
        body = section(self.text, r"4\. The envelope")
        rows = table_with(body, ["field", "type", "meaning"])
        self.envelope = ("struct", [(unquote(f), self.parse_type(unquote(t))) for f, t, _ in rows])
        for k, msg, sigs in table_with(body, ["kind", "message", "signatures, in order"]):
            self.kinds[int(k)] = unquote(msg)
            self.signers[int(k)] = sigs
        m = re.search(r"```\s*\n(.*?)```", body, re.S)
        if not m or "wattmesh/sig/v1" not in m.group(1):
            raise SpecError("cannot find the signing input block in section 4")
        self.signing_block = " ".join(m.group(1).split())
        lim = re.search(r"envelope is at most (\d+)\s+bytes, a payload at most (\d+) bytes", self.text)
        self.max_envelope, self.max_payload = (int(lim.group(1)), int(lim.group(2))) if lim else (None, None)

    # section 6
    def _read_messages(self) -> None:
        body = section(self.text, r"6\. Messages")
        for m in re.finditer(r"^### 6\.\d+ (\w+) \(kind (\d+)\)\s*$", body, re.M):
            name, kind = m.group(1), int(m.group(2))
            if self.kinds.get(kind) != name:
                raise SpecError(f"section 6 says {name} is kind {kind}; section 4's kind table says {self.kinds.get(kind)}")
            sub = section(body, re.escape(f"6.") + r"\d+ " + re.escape(name) + r" ")
            fields = []
            for cells in table_with(sub, ["field", "type", "rule"]):
                fname, ftype, rule = unquote(cells[0]), unquote(cells[1]), cells[2]
                t = ("enum", enum_variants(rule)) if ftype == "enum" else self.parse_type(ftype)
                fields.append((fname, t))
            self.messages[name] = ("struct", fields)
        missing = set(self.kinds.values()) - set(self.messages)
        if missing:
            raise SpecError(f"section 6 has no field table for {sorted(missing)}")

    # section 10 (prose, not tables)
    def _read_section10(self) -> None:
        body = section(self.text, r"10\. Network layer")

        def idx(enum: str, variant: str) -> int:
            m = re.search(rf"`{enum}`: enum .*?`(\d+)` {variant}\(", body, re.S)
            if not m:
                raise SpecError(f"section 10: cannot find {enum}::{variant}")
            return int(m.group(1))

        self.propose_index = idx("TradeRequest", "Propose")
        self.accept_index = idx("TradeResponse", "Accept")

    def parse_type(self, s: str) -> tuple:
        s = s.strip()
        if s == "u8":
            return ("u8",)
        if s in ("u16", "u32", "u64"):
            return ("uint", int(s[1:]))
        if s in ("i16", "i32", "i64"):
            return ("sint", int(s[1:]))
        if s in ("bool", "bytes", "string"):
            return (s,)
        m = re.fullmatch(r"\[u8;\s*(\d+)\]", s)
        if m:
            return ("fixed", int(m.group(1)))
        m = re.fullmatch(r"(list|option)<(.*)>", s)
        if m:
            return (m.group(1), self.parse_type(m.group(2)))
        m = re.fullmatch(r"\{(.*)\}", s)
        if m:
            fields = []
            for part in split_top(m.group(1)):
                f, t = part.split(":", 1)
                fields.append((f.strip(), self.parse_type(t)))
            return ("struct", fields)
        if re.fullmatch(r"[A-Z]\w*", s):
            return ("named", s)
        raise SpecError(f"unknown type {s!r}")

    def resolve(self, t: tuple) -> tuple:
        while t[0] == "named":
            if t[1] not in self.named:
                raise SpecError(f"type {t[1]} is not defined in section 3")
            t = self.named[t[1]]
        return t


# ---------------------------------------------------------------------------
# postcard (section 2)
# ---------------------------------------------------------------------------

def varint(n: int, bits: int = 64) -> bytes:
    if not 0 <= n < 2**bits:
        raise SpecError(f"{n} does not fit u{bits}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def as_bytes(v) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return bytes.fromhex(v)
    if isinstance(v, list) and all(isinstance(x, int) and 0 <= x < 256 for x in v):
        return bytes(v)
    raise SpecError(f"not a byte array: {v!r}")


def encode(spec: Spec, t: tuple, v, path: str = "") -> bytes:
    t = spec.resolve(t)
    kind = t[0]
    if kind == "u8":
        if not (isinstance(v, int) and 0 <= v < 256):
            raise SpecError(f"{path}: {v!r} is not a u8")
        return bytes([v])
    if kind == "uint":
        if not isinstance(v, int) or isinstance(v, bool):
            raise SpecError(f"{path}: {v!r} is not an integer")
        return varint(v, t[1])
    if kind == "sint":
        if not isinstance(v, int) or isinstance(v, bool) or not -(2 ** (t[1] - 1)) <= v < 2 ** (t[1] - 1):
            raise SpecError(f"{path}: {v!r} is not an i{t[1]}")
        # Zigzag, then a varint (postcard's signed integers).
        return varint(v << 1 if v >= 0 else ((-v - 1) << 1) | 1, t[1])
    if kind == "bool":
        if not isinstance(v, bool):
            raise SpecError(f"{path}: {v!r} is not a bool")
        return b"\x01" if v else b"\x00"
    if kind == "fixed":
        b = as_bytes(v)
        if len(b) != t[1]:
            raise SpecError(f"{path}: expected {t[1]} bytes, got {len(b)}")
        return b
    if kind == "bytes":
        b = as_bytes(v)
        return varint(len(b)) + b
    if kind == "string":
        if not isinstance(v, str):
            raise SpecError(f"{path}: {v!r} is not a string")
        b = v.encode("utf-8")
        return varint(len(b)) + b
    if kind == "list":
        if not isinstance(v, list):
            raise SpecError(f"{path}: {v!r} is not a list")
        return varint(len(v)) + b"".join(encode(spec, t[1], x, f"{path}[{i}]") for i, x in enumerate(v))
    if kind == "option":
        return b"\x00" if v is None else b"\x01" + encode(spec, t[1], v, path)
    if kind == "enum":
        names = {n: i for i, n in t[1]}
        if v not in names:
            raise SpecError(f"{path}: {v!r} is not one of {list(names)}")
        return varint(names[v])
    if kind == "struct":
        if not isinstance(v, dict):
            raise SpecError(f"{path}: {v!r} is not an object")
        spec_fields = [f for f, _ in t[1]]
        extra, missing = set(v) - set(spec_fields), set(spec_fields) - set(v)
        if extra or missing:
            raise SpecError(
                f"{path or 'struct'}: fields differ from the spec's table: "
                f"in vector only {sorted(extra)}, in spec only {sorted(missing)}"
            )
        # Field order comes from the spec table, never from the JSON object.
        return b"".join(encode(spec, ft, v[f], f"{path}.{f}" if path else f) for f, ft in t[1])
    raise SpecError(f"{path}: cannot encode type {t}")


# ---------------------------------------------------------------------------
# Section 4: signing input and envelope; section 6.7 Merkle; section 8 settlement
# ---------------------------------------------------------------------------

def signing_input(spec: Spec, version: int, charter: bytes, kind: int, payload: bytes) -> bytes:
    # "wattmesh/sig/v1" || 0x00 || version (1) || charter (32) || kind (1) || len(payload) u32 BE || payload
    expected_block = ('"wattmesh/sig/v1" ‖ 0x00 ‖ version (1 byte) ‖ charter (32) ‖ kind (1 byte) '
                      '‖ len(payload) as u32 BE ‖ payload')
    if spec.signing_block != expected_block:
        raise SpecError(f"section 4 signing input changed; this checker implements {expected_block!r}, "
                        f"spec now says {spec.signing_block!r}")
    return (b"wattmesh/sig/v1" + b"\x00" + bytes([version]) + charter + bytes([kind])
            + len(payload).to_bytes(4, "big") + payload)


def envelope_value(version: int, charter: bytes, kind: int, payload: bytes, sigs: list[tuple[bytes, bytes]]):
    return {
        "version": version,
        "charter": charter,
        "kind": kind,
        "payload": payload,
        "signatures": [{"signer": pk, "sig": {"r": s[:32], "s": s[32:]}} for pk, s in sigs],
    }


def merkle_root(leaves: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    """Section 6.7. leaves: (40-byte trade id, energy Wh)."""
    if not leaves:
        return H("wattmesh/merkle-empty/v1"), 0
    level = [(H("wattmesh/merkle-leaf/v1", tid + e.to_bytes(8, "big")), e) for tid, e in sorted(leaves)]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            (lh, ls), (rh, rs) = level[i], level[i + 1]
            if ls + rs >= 2**64:
                raise SpecError("Merkle sum overflow")
            nxt.append((H("wattmesh/merkle-node/v1", lh + ls.to_bytes(8, "big") + rh + rs.to_bytes(8, "big")), ls + rs))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def settle(energy: int, price: int, seller_att: dict | None, buyer_att: dict | None):
    """Section 8. Returns (delivered_wh, amount, outcome) or raises for a dispute.

    The inclusion proof (step 3) is checked separately, against the sold root. The buyer's
    attestation does not reduce delivery (step 7)."""
    if seller_att is None:
        return 0, 0, "NoSellerAttestation"
    sold = seller_att["sold"]["sum"]
    ex = seller_att["export_wh"]
    delivered = energy if ex >= sold else energy * ex // sold
    amount = delivered * price // 1000
    if delivered == energy:
        outcome = "Delivered"
    elif seller_att["coverage_permille"] < 1000:
        outcome = "ShortPartialCoverage"
    else:
        outcome = "Short"
    return delivered, amount, outcome


def field_at(spec: Spec, mtype: tuple, fields: dict, got: bytes, want: bytes) -> str:
    """Name of the top-level field whose encoding contains the first differing byte."""
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    pos = 0
    for f, t in mtype[1]:
        pos += len(encode(spec, t, fields[f], f))
        if i < pos:
            return f
    return "(past the last field)"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def nested_nodeid(spec: Spec, msg_type: tuple, fields: dict, name: str):
    """A NodeId-typed field `name` of the message, top level first, then one struct deep
    (Trade's maker is offer.maker)."""
    for f, t in msg_type[1]:
        if f == name and t == ("named", "NodeId"):
            return bytes(fields[f])
    for f, t in msg_type[1]:
        rt = spec.resolve(t)
        if rt[0] == "struct":
            for g, gt in rt[1]:
                if g == name and gt == ("named", "NodeId"):
                    return bytes(fields[f][g])
    return None


def expected_signers(spec: Spec, kind: int, msg_type: tuple, fields: dict):
    """Section 4 kind table, 'signatures, in order'. Returns a list of NodeIds, with the
    string 'admin' standing for 'one of the charter's admins'."""
    out = []
    for word in re.findall(r"[a-z]+", spec.signers[kind]):
        if word == "admin":
            out.append("admin")
            continue
        node = nested_nodeid(spec, msg_type, fields, word)
        if node is not None:
            out.append(node)
    return out


# ---------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else SPEC_PATH
    vec_path = Path(argv[2]) if len(argv) > 2 else VECTORS_PATH
    try:
        spec = Spec(spec_path.read_text(encoding="utf-8"))
    except SpecError as e:
        print(f"FAIL  reading {spec_path}: {e}")
        return 2
    vec = json.loads(vec_path.read_text(encoding="utf-8"))
    print(f"spec: {spec_path}")
    print(f"vectors: {vec_path}")
    print(f"read from spec: kinds {spec.kinds}; common types {sorted(spec.named)}")

    check("protocol_version = envelope version 1 (section 4)", vec.get("protocol_version"), 1, "§4")

    keys = {}
    for k in vec["keys"]:
        seed = bytes.fromhex(k["secret"])
        sk = Ed25519PrivateKey.from_private_bytes(seed)
        pub = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        check(f"key {k['name']}: public key derived from RFC 8032 seed", pub, bytes.fromhex(k["public"]), "§3/§5 (RFC 8032)")
        keys[pub] = sk

    top_charter_hash = bytes.fromhex(vec["charter_hash"])
    by_name: dict[str, dict] = {}
    envelopes: dict[str, bytes] = {}
    charter_admins: list[bytes] = []
    computed_charter_hash = None

    msgs = vec["messages"]
    # The charter first, so its hash and admins are known for the rest.
    msgs = sorted(msgs, key=lambda m: m["kind"] != 1)
    for m in msgs:
        name, kind = m["name"], m["kind"]
        tag = f"[{name}]"
        if kind not in spec.kinds:
            fail(f"{tag} kind", f"kind {kind} is not in section 4's kind table")
            continue
        spec_name = spec.kinds[kind]
        # Vector names start with the kind's snake_case name; a suffix distinguishes variants.
        check(f"{tag} kind {kind} is {spec_name} (section 4 kind table)", snake(spec_name),
              name if name == snake(spec_name) or not name.startswith(snake(spec_name) + "_")
              else snake(spec_name), "§4")
        mtype = spec.messages[spec_name]
        fields = m["fields"]
        by_name[name] = fields
        want_payload = bytes.fromhex(m["payload"])
        try:
            payload = encode(spec, mtype, fields)
        except SpecError as e:
            fail(f"{tag} payload", f"cannot encode per section 6 table for {spec_name}: {e}")
            continue
        if not check(f"{tag} payload = postcard({spec_name}) per section 6 field table", payload, want_payload, f"§2/§6 ({spec_name})"):
            print(f"      first difference is in field `{field_at(spec, mtype, fields, payload, want_payload)}` "
                  f"of section 6's {spec_name} table")
            continue
        if spec.max_payload is not None and len(payload) > spec.max_payload:
            fail(f"{tag} payload size", f"{len(payload)} > {spec.max_payload} (section 2)")

        env_charter = bytes.fromhex(m["charter_hash"])
        if kind == 1:
            computed_charter_hash = H("wattmesh/charter/v1", payload)
            check(f"{tag} charter hash H(\"wattmesh/charter/v1\", payload) = top-level charter_hash",
                  computed_charter_hash, top_charter_hash, "§6.1")
            prev = bytes(fields["previous"])
            check(f"{tag} envelope charter field = previous version's hash (zero for version 1)",
                  env_charter, prev if fields["version"] != 1 else bytes(32), "§4/§6.1")
            charter_admins = [bytes(a) for a in fields["admins"]]
        else:
            check(f"{tag} envelope charter field = charter hash", env_charter,
                  computed_charter_hash if computed_charter_hash is not None else top_charter_hash, "§4/§6.1")

        si = signing_input(spec, 1, env_charter, kind, payload)
        check(f"{tag} signing input", si, bytes.fromhex(m["signing_input"]), "§4 (signing input)")

        # Signers and their order (section 4 kind table, section 7).
        want_signers = expected_signers(spec, kind, mtype, fields)
        vec_signers = [bytes.fromhex(s["signer"]) for s in m["signatures"]]
        if want_signers == ["admin"]:
            if len(vec_signers) == 1 and vec_signers[0] in charter_admins:
                ok(f"{tag} signer is one of the charter's admins (section 4 kind table)")
            else:
                fail(f"{tag} signers", "section 4: one signature by an admin of the charter")
        else:
            check(f"{tag} signers in the order of section 4's kind table ({spec.signers[kind]})",
                  [s.hex() for s in vec_signers], [s.hex() for s in want_signers], "§4/§7")
        if len(set(vec_signers)) != len(vec_signers):
            fail(f"{tag} signers", "two signatures by the same signer (section 4)")

        sigs = []
        for i, s in enumerate(m["signatures"]):
            pk = bytes.fromhex(s["signer"])
            want_sig = bytes.fromhex(s["signature"])
            if pk not in keys:
                fail(f"{tag} signature {i}", f"no secret key in 'keys' for signer {pk.hex()}")
                sigs.append((pk, want_sig))
                continue
            sig = keys[pk].sign(si)
            check(f"{tag} signature {i}: Ed25519 over the signing input (deterministic)", sig, want_sig, "§4/§5")
            try:
                Ed25519PublicKey.from_public_bytes(pk).verify(want_sig, si)
                ok(f"{tag} signature {i}: verifies with the signer's public key")
            except InvalidSignature:
                fail(f"{tag} signature {i}", "vector signature does not verify over the spec's signing input")
            sigs.append((pk, want_sig))

        try:
            env = encode(spec, spec.envelope, envelope_value(1, env_charter, kind, payload, sigs))
        except SpecError as e:
            fail(f"{tag} envelope", f"cannot encode per section 4: {e}")
            continue
        check(f"{tag} envelope = postcard(Envelope) per section 4 table", env, bytes.fromhex(m["envelope"]), "§4 (envelope)")
        if spec.max_envelope is not None and len(env) > spec.max_envelope:
            fail(f"{tag} envelope size", f"{len(env)} > {spec.max_envelope} (section 2)")
        envelopes[name] = env

    # ---- section 10: handshake messages
    handshake = {h["name"]: bytes.fromhex(h["bytes"]) for h in vec.get("handshake", [])}
    env_t = spec.envelope

    def env_of(name: str, only_first_sig: bool = False) -> bytes:
        m = next(x for x in vec["messages"] if x["name"] == name)
        sigs = [(bytes.fromhex(s["signer"]), bytes.fromhex(s["signature"])) for s in m["signatures"]]
        if only_first_sig:
            sigs = sigs[:1]
        return encode(spec, env_t, envelope_value(1, bytes.fromhex(m["charter_hash"]), m["kind"],
                                                  bytes.fromhex(m["payload"]), sigs))

    if "trade_request_propose" in handshake:
        got = varint(spec.propose_index) + env_of("trade_proposal")
        check("[handshake] TradeRequest::Propose(Envelope of the TradeProposal), unframed",
              got, handshake["trade_request_propose"], "§10 (TradeRequest)")
    else:
        fail("[handshake] trade_request_propose", "missing from vectors")
    if "trade_response_accept" in handshake:
        maker_only = varint(spec.accept_index) + env_of("trade", only_first_sig=True)
        check("[handshake] TradeResponse::Accept(Envelope of the Trade signed by the maker only), unframed",
              maker_only, handshake["trade_response_accept"], "§10 (TradeResponse)")
    else:
        fail("[handshake] trade_response_accept", "missing from vectors")

    # ---- section 6.7: a tree with inner nodes and an odd leaf
    if "merkle" in vec:
        mk = vec["merkle"]
        root, total = merkle_root([(bytes.fromhex(l["trade_id"]), l["energy_wh"]) for l in mk["leaves"]])
        check("[merkle] three-leaf root (inner nodes, odd node moves up)", root, bytes.fromhex(mk["root"]), "§6.7")
        check("[merkle] three-leaf sum", total, mk["sum"], "§6.7")
    else:
        fail("[merkle]", "multi-leaf vector missing")

    # ---- section 4: message id
    if "message_id" in vec:
        mid = vec["message_id"]
        env = envelopes.get(mid["envelope"])
        if env is None:
            fail("[message id]", f"no envelope named {mid['envelope']}")
        else:
            check("[message id] H(\"wattmesh/msg-id/v1\", envelope)", H("wattmesh/msg-id/v1", env),
                  bytes.fromhex(mid["id"]), "§4 (message id)")
    else:
        fail("[message id]", "missing from vectors")

    # ---- section 6.7: Merkle sum roots in the attestation
    trade, att, stl = by_name.get("trade"), by_name.get("meter_attestation"), by_name.get("settlement")
    if trade and att:
        tid = bytes(trade["taker"]) + trade["nonce"].to_bytes(8, "big")
        seller = bytes(trade["offer"]["maker"]) if trade["maker_side"] == "Sell" else bytes(trade["taker"])
        check("[merkle] attestation node is the trade's seller (maker_side Sell -> maker)", bytes(att["node"]), seller, "§6.4")
        check("[merkle] attestation slot is the trade's slot", att["slot_ms"], trade["slot_ms"], "§8")
        root, total = merkle_root([(tid, trade["energy_wh"])])
        check("[merkle] sold.hash = root over one leaf (taker || nonce BE, energy BE)", root, bytes(att["sold"]["hash"]), "§6.7")
        check("[merkle] sold.sum = trade energy", total, att["sold"]["sum"], "§6.7")
        eroot, esum = merkle_root([])
        check("[merkle] bought.hash = H(\"wattmesh/merkle-empty/v1\") (tag || 0x00, no parts)", eroot, bytes(att["bought"]["hash"]), "§6.7/§1")
        check("[merkle] bought.sum = 0", esum, att["bought"]["sum"], "§6.7")
    else:
        fail("[merkle]", "trade or meter_attestation vector missing")

    # ---- section 8: settlement rule
    if trade and att and stl:
        att_msg = next(x for x in vec["messages"] if x["name"] == "meter_attestation")
        chain = H("wattmesh/attestation/v1", bytes.fromhex(att_msg["payload"]))
        check("[settlement] seller_attestation = chain hash H(\"wattmesh/attestation/v1\", payload)",
              bytes(stl["seller_attestation"] or b""), chain, "§6.5/§6.6")
        check("[settlement] buyer_attestation is none (no buyer attestation)", stl["buyer_attestation"], None, "§6.6")
        check("[settlement] trade id = (taker, nonce) of the trade",
              (bytes(stl["trade"]["taker"]), stl["trade"]["nonce"]), (bytes(trade["taker"]), trade["nonce"]), "§6.4/§6.6")
        maker, taker = bytes(trade["offer"]["maker"]), bytes(trade["taker"])
        seller, buyer = (maker, taker) if trade["maker_side"] == "Sell" else (taker, maker)
        check("[settlement] seller/buyer from maker_side", (bytes(stl["seller"]), bytes(stl["buyer"])), (seller, buyer), "§6.4")
        check("[settlement] slot = trade slot", stl["slot_ms"], trade["slot_ms"], "§6.6")
        check("[settlement] agreed_wh = trade energy_wh", stl["agreed_wh"], trade["energy_wh"], "§6.6")
        check("[settlement] price = trade price", stl["price"], trade["price"], "§6.6")
        try:
            delivered, amount, outcome = settle(trade["energy_wh"], trade["price"], att, None)
            check(f"[settlement] delivered_wh (E={trade['energy_wh']}, export_wh={att['export_wh']}, sold.sum={att['sold']['sum']}, no buyer att)",
                  delivered, stl["delivered_wh"], "§8 steps 1-3")
            check(f"[settlement] amount = floor(delivered x price / 1000) (price={trade['price']})", amount, stl["amount"], "§8 step 3 / §6.6")
            check("[settlement] outcome", outcome, stl["outcome"], "§8 step 4")
        except SpecError as e:
            fail("[settlement] rule", str(e))
    else:
        fail("[settlement]", "trade, meter_attestation or settlement vector missing")

    # ---- sections 6.5 and 6.16: a private attestation and the commitment that stands for it
    priv, com = by_name.get("meter_attestation_private"), by_name.get("attestation_commitment")
    if priv and com and att:
        msg = {x["name"]: x for x in vec["messages"]}
        first_chain = H("wattmesh/attestation/v1", bytes.fromhex(msg["meter_attestation"]["payload"]))
        priv_chain = H("wattmesh/attestation/v1", bytes.fromhex(msg["meter_attestation_private"]["payload"]))
        tags = [e["tag"] for e in priv["ext"]]
        check("[privacy] the private attestation carries extension tag 1 (section 6.5)", 1 in tags, True, "§6.5")
        body = next((bytes(e["data"]) for e in priv["ext"] if e["tag"] == 1), b"")
        check("[privacy] its body is 16 to 32 bytes (section 6.5)", 16 <= len(body) <= 32, True, "§6.5")
        check("[privacy] it follows the first attestation: seq + 1", priv["seq"], att["seq"] + 1, "§6.5")
        check("[privacy] prev = chain hash of the first attestation", bytes(priv["prev"]), first_chain, "§6.5")
        check("[privacy] commitment.attestation = H(\"wattmesh/attestation/v1\", private payload)",
              bytes(com["attestation"]), priv_chain, "§6.16")
        for f in ("node", "seq", "slot_ms", "created_ms"):
            check(f"[privacy] commitment.{f} = the attestation's (section 6.16)", com[f], priv[f], "§6.16")
        check("[privacy] commitment.prev = the attestation's prev, so the chain checks through it",
              bytes(com["prev"]), bytes(priv["prev"]), "§6.16")
    else:
        fail("[privacy]", "meter_attestation_private or attestation_commitment vector missing")

    # ---- section 5: signature rule vectors
    for case in vec.get("signature_rule", []):
        name = case["name"]
        pub, sig, msg = (bytes.fromhex(case[k]) for k in ("public", "signature", "message"))
        label = f"[sigrule] {name}"
        if name == "valid":
            try:
                Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
                ok(f"{label}: verifies with cryptography (accept={case['accept']})")
                if case["accept"] is not True:
                    fail(label, "vector says reject, but it is a valid RFC 8032 signature")
            except InvalidSignature:
                fail(label, "does not verify with cryptography")
        elif name.startswith("non-canonical S"):
            valid = next((c for c in vec["signature_rule"] if c["name"] == "valid"), None)
            if valid:
                s_valid = int.from_bytes(bytes.fromhex(valid["signature"])[32:], "little")
                check(f"{label}: S is the valid S + l (section 5 vector description)",
                      int.from_bytes(sig[32:], "little"), s_valid + ELL, "§5")
            try:
                Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
                fail(label, "cryptography accepted S >= l; section 5 step 1 requires rejection")
            except InvalidSignature:
                ok(f"{label}: rejected by cryptography (S >= l; section 5 step 1), accept={case['accept']}")
                if case["accept"] is not False:
                    fail(label, "vector says accept")
        else:
            print(f"skip  {label}: accept={case['accept']} ({case['reason']}) -- checked by the Rust rule, not here")

    print()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) FAILED: " + "; ".join(FAILURES))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
