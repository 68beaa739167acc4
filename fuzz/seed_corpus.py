#!/usr/bin/env python3
"""Writes seed inputs for every fuzz target into OUT/<target>/ (default
fuzz/corpus/<target>/).

The link protocol's seeds come from its test vectors: each encoded block of
protocol/tests/vectors/transcript.txt becomes one seed per target, and the
inputs of presession.txt, joined, become one more. line_parser reads its
first byte as the line limit and piece size, so its seeds start with 0xff (a
large limit) and end with CR. command_decode reads the whole input as UTF-8,
and everything after its first byte as bytes for the Responder.

The other targets' seeds are small well-formed files of each kind (and
scripts for noise_transport), written out below; each starts with the byte
that picks the file kind, as the target reads it.

The seeds kept in fuzz/seeds/ are these, minimised with `cargo fuzz cmin`
(see docs/fuzzing.md). Usage: python3 seed_corpus.py [OUT]
"""
import base64
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "protocol", "tests", "vectors")


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        if s[i] == "\\":
            c = s[i + 1]
            if c == "x":
                out.append(int(s[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "\\": b"\\"}[c]
            i += 2
        else:
            out += s[i].encode()
            i += 1
    return bytes(out)


def main():
    blocks, block = [], []
    with open(os.path.join(VECTORS, "transcript.txt"), encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if line.startswith("= "):
                block.append(line[2:])
            elif block:
                blocks.append("\r\n".join(block))
                block = []
    if block:
        blocks.append("\r\n".join(block))
    with open(os.path.join(VECTORS, "presession.txt"), encoding="utf-8") as f:
        presession = b"".join(
            unescape(l[2:]) for l in f.read().split("\n") if l.startswith("> ")
        )
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    for target in ("line_parser", "command_decode"):
        d = os.path.join(out_dir, target)
        os.makedirs(d, exist_ok=True)
        for n, text in enumerate(blocks):
            data = text.encode()
            if target == "line_parser":
                data = b"\xff" + data + b"\r"
            with open(os.path.join(d, "seed%03d" % n), "wb") as out:
                out.write(data)
        with open(os.path.join(d, "presession"), "wb") as out:
            out.write(b"\x00" + presession)
    print("%d seeds per link target" % (len(blocks) + 1))
    n = 0
    for target, seeds in other_seeds().items():
        d = os.path.join(out_dir, target)
        os.makedirs(d, exist_ok=True)
        for i, data in enumerate(seeds):
            with open(os.path.join(d, "seed%03d" % i), "wb") as out:
                out.write(data)
            n += 1
    print("%d seeds for the other targets" % n)


def b64(data):
    return base64.b64encode(data).decode()


def chunk(data):
    """noise_transport's length-prefixed slice."""
    if len(data) < 255:
        return bytes([len(data)]) + data
    return b"\xff" + struct.pack(">H", len(data)) + data


def ulong(v):
    return struct.pack("<Q", v)


def other_seeds():
    requests = [b"+CKLIST", b"+CKRAND=32", b"+CKRAND=1024", b'+CKLOGOUT="ssh"',
                b'+CKTINFO="ssh"', b'+CKSIGN="ssh","AQ==",1,"AAEC"']
    # noise_transport: head byte even = host link, odd = frames.
    link = b"\x10" + b"".join(b"\x00" + chunk(r) for r in requests)
    link_spoiled = b"\x10\x00" + chunk(b"+CKRAND=64") + b"\x05\x01\x10" + b"\x00" + chunk(
        b"+CKLIST") + b"\x04\x06\x04"
    frames = b"\x11" + b"".join(b"\x00" + chunk(r) + b"\x1f" for r in requests)
    frames_parts = b"\x11\x00" + chunk(b"+CKRAND=1024") + b"\x01" + b"\x00" + chunk(
        b"+CKLIST") + b"\x41" + b"\x05" + chunk(b"AT") + b"\x07\x00" + chunk(b"junk") + b"\x1f"
    noise = [link, link_spoiled, frames, frames_parts, b"\x01\x00" + chunk(b"+CKLIST") + b"\xa3"]

    key = b64(bytes(range(32)))
    hosts = {"version": 1, "hosts": [{"name": "laptop", "public": key, "containers": ["ssh", "luks"]}],
             "pairing": {"psk": b64(bytes(32)), "authorise": ["ssh"], "failures": 1}}
    modulus = b"\xc1" + bytes(255)
    container = {
        "version": 1, "name": "ssh", "serial": "0123456789abcdef", "policy": "confirm",
        "retries_left": 5, "kdf": {"m_kib": 64, "t": 1, "p": 1}, "salt": b64(bytes(16)),
        "pin_check": {"nonce": b64(bytes(24)), "ct": b64(bytes(18 + 16))}, "pin_entry": "handset",
        "keys": [{"id": b64(b"\x01"), "label": "ssh key", "bits": 2048, "modulus": b64(modulus),
                  "exponent": b64(b"\x01\x00\x01"),
                  "wrapped": {"nonce": b64(bytes(24)), "ct": b64(bytes(40))}}],
        "certs": [{"id": b64(b"\x01"), "label": "cert", "der": b64(b"\x30\x00")}],
        "data": [{"id": b64(b"\x02"), "label": "d", "application": "app", "oid": b64(b"\x06\x01\x00"),
                  "value": b64(b"v")}],
    }
    empty = dict(container, keys=[], certs=[], data=[], policy="auto")
    del empty["pin_entry"]
    identity = {"version": 1, "name": "phone", "noise_private": key}
    store = [b"\x00" + json.dumps(hosts).encode(), b"\x00" + json.dumps({"version": 1, "hosts": []}).encode(),
             b"\x01" + json.dumps(container).encode(), b"\x01" + json.dumps(empty).encode(),
             b"\x02" + json.dumps(identity).encode()]

    config = [
        b'[daemon]\nstate_dir = "/var/lib/phonecsp"\nhost_name = "my computer"\nrequest_timeout_secs = 60\n'
        b'health_interval_secs = 30\nmax_backoff_secs = 5\nkey_socket_dir = "/run/cryptsetup-keys.d"\n'
        b'[access]\nusers = ["alice"]\ngroups = []\n',
        b'[[handset]]\nname = "phone"\nbluetooth = "00:11:22:33:44:55"\nchannel = 3\nadapter = "hci0"\n'
        b'[[handset]]\nname = "usb"\nserial = "/dev/ttyACM0"\nbaud = 115200\n'
        b'[[token]]\nname = "ssh"\nhandset = "phone"\nusers = ["alice"]\ngroups = ["wheel"]\n',
        b'[[volume]]\nname = "data"\ndevice = "/dev/disk/by-uuid/x"\nheader = "/h"\ntoken_id = 1\n'
        b'[[volume]]\nname = "home"\nwrapped = "/etc/phonecsp/home.wrapped"\n',
    ]

    state = [b"\x00" + bytes(32), b"\x01" + b"3 ssh\n1 luks\n0 x\n", b"\x01" + b"4294967295 a-b_c\r\n"]

    wrapped = {"type": "phonecsp", "keyslots": ["1"], "handset": "phone", "container": "luks",
               "key_id": "01ab", "algorithm": "RSA-OAEP-SHA256", "public_key_sha256": "ab" * 32,
               "wrapped_key": b64(bytes(256))}
    recovery = {k: v for k, v in wrapped.items() if k not in ("handset", "container", "key_id")}
    meta = {"keyslots": {}, "tokens": {"0": wrapped, "3": recovery,
                                       "1": {"type": "systemd-tpm2", "keyslots": ["0"]}}}
    luks = [b"\x00" + json.dumps(wrapped, indent=2).encode(), b"\x00" + json.dumps(recovery).encode(),
            b"\x01" + json.dumps(meta).encode()]

    def de_seq(items):
        body = b"".join(items)
        return b"\x35" + bytes([len(body)]) + body

    def u16(v):
        return b"\x09" + struct.pack(">H", v)

    rfcomm = de_seq([de_seq([b"\x19\x01\x00"]), de_seq([b"\x19\x00\x03", b"\x08\x03"])])
    record = de_seq([u16(0x0001), de_seq([b"\x19\x11\x01"]), u16(0x0004), rfcomm,
                     u16(0x0100), b"\x25\x05phone"])
    lists = de_seq([record])

    def pdu(tid, lists, cont=b""):
        params = struct.pack(">H", len(lists)) + lists + bytes([len(cont)]) + cont
        return b"\x07" + struct.pack(">HH", tid, len(params)) + params

    def framed(p):
        return (bytes([len(p)]) if len(p) < 255 else b"\xff" + struct.pack(">H", len(p))) + p

    half = len(lists) // 2
    sdp = [b"\x00" + framed(pdu(1 << 8 | 0, lists)),
           b"\x00" + framed(pdu(0, lists[:half], b"\x01\x02")) + framed(pdu(1, lists[half:])),
           b"\x00" + framed(b"\x01\x00\x00\x00\x02\x00\x03")]
    sdp[0] = b"\x00" + framed(pdu(0, lists))

    def attr(t, value):
        return bytes([t]) + value

    def raw(v):
        return b"\x05" + bytes([len(v)]) + v

    CKA = {"class": 0, "token": 1, "label": 3, "value": 5, "key_type": 10, "id": 12,
           "modulus": 21, "public_exponent": 23, "sensitive": 13}
    # flags, daemon count (0), create template, change template, get template
    data_obj = (b"\x00\x00" + b"\x03" + attr(CKA["class"], b"\x01\x00") + attr(CKA["label"], raw(b"l"))
                + attr(CKA["value"], raw(b"v")) + b"\x01" + attr(CKA["label"], raw(b"new"))
                + b"\x03" + attr(CKA["label"], b"\x02") + attr(CKA["value"], b"\xff") + attr(CKA["class"], b"\x02"))
    secret = (b"\x01\x00" + b"\x03" + attr(CKA["class"], b"\x01\x04") + attr(CKA["key_type"], b"\x00\x1f")
              + attr(CKA["value"], raw(bytes(16))) + b"\x01" + attr(CKA["sensitive"], b"\x02\x01")
              + b"\x02" + attr(CKA["value"], b"\x04") + attr(CKA["key_type"], b"\x02"))
    n = b"\xc1" * 128
    public = (b"\x04\x00" + b"\x04" + attr(CKA["class"], b"\x01\x02") + attr(CKA["key_type"], b"\x00\x00")
              + attr(CKA["modulus"], raw(n)) + attr(CKA["public_exponent"], raw(b"\x01\x00\x01"))
              + b"\x00" + b"\x02" + attr(CKA["modulus"], b"\x00") + attr(38, b"\xff"))
    daemon = (b"\x06\x03" + bytes([CKA["id"], 1, 1]) + bytes([CKA["label"], 3]) + b"key"
              + bytes([22, 8]) + struct.pack(">Q", 2048)
              + b"\x00\x00\x03" + attr(CKA["id"], b"\x02") + attr(CKA["label"], b"\xff") + attr(24, b"\x10"))
    pkcs11 = [data_obj, secret, public, daemon]

    return {"noise_transport": noise, "handset_store": store, "daemon_config": config,
            "daemon_state": state, "luks_token": luks, "sdp_response": sdp, "pkcs11_template": pkcs11}


if __name__ == "__main__":
    main()
