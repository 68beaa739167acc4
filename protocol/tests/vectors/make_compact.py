#!/usr/bin/env python3
"""Writes compact.txt from transcript.txt's inner requests and replies with
an implementation of docs/protocol.md section 6.7 written apart from the
Rust one, so that the vectors check the spec, not the code against itself.

    python3 protocol/tests/vectors/make_compact.py > protocol/tests/vectors/compact.txt
"""
import base64, os, re

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (base64 positions as a command, as an information line)
NAMES = [("+CKLIST", [], []), ("+CKTINFO", [], []), ("+CKLOGIN", [1], []), ("+CKLOGOUT", [], []),
         ("+CKPIN", [1, 2], []), ("+CKFIND", [2], []), ("+CKATTR", [2], [1]), ("+CKSIGN", [1, 3], [0]),
         ("+CKDEC", [1, 3, 5], [0]), ("+CKGEN", [2], [0, 1, 2]), ("+CKRAND", [], [0]),
         ("+CKPUTCERT", [1, 3], []), ("+CKDELCERT", [1], []), ("+CKPUTDATA", [1, 4, 5], []),
         ("+CKDELDATA", [1], []), ("+CKDELKEY", [1], []), ("+CKREWRAP", [1, 3, 5], [0]), ("+CKOBJ", [], [1]),
         ("+CKSOLOGIN", [1], []), ("+CKSOLOGOUT", [], []), ("+CKINITPIN", [1], []), ("+CKPUK", [1, 2], []),
         ("+CKGENEC", [2], [0, 1]), ("+CKDERIVE", [1, 3], [0]),
         ("+CKIMPORT", [1, 3], []), ("+CKATTEST", [1, 2], [0])]


def put(kind, n):
    if n < 60:
        return bytes([kind | n])
    for code, size in ((60, 1), (61, 2), (62, 4), (63, 8)):
        if n < 1 << (8 * size):
            return bytes([kind | code]) + n.to_bytes(size, "big")


def params(text):
    """1,"abc",,42 -> [1, "abc", None, 42]"""
    out = []
    for m in re.finditer(r'(?:"([^"]*)"|(\d+)|)(?:,|$)', text):
        if m.start() == len(text) and out and not text.endswith(","):
            break
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)) if m.group(2) else None)
    return out


def line(text, to_handset):
    m = re.match(r"(\+[A-Z0-9]+)(=|: )?(.*)$", text)
    names = [n for n, _, _ in NAMES]
    if not m or m.group(1) not in names or (m.group(2) == ": ") == to_handset:
        return bytes([0xF9]) + put(0x40, len(text.encode())) + text.encode()
    code = names.index(m.group(1))
    out = bytes([0xC1 + code])
    if m.group(2) is None:
        return out
    b64 = NAMES[code][1] if to_handset else NAMES[code][2]
    ps = params(m.group(3))
    if not ps:
        return out + b"\xc0"
    for i, p in enumerate(ps):
        if p is None:
            out += b"\xc0"
        elif isinstance(p, int):
            out += put(0x00, p)
        elif i in b64:
            raw = base64.b64decode(p, validate=True)
            out += put(0x80, len(raw)) + raw
        else:
            out += put(0x40, len(p.encode())) + p.encode()
    return out


def reply(lines):
    out = b"".join(line(l, False) for l in lines[:-1])
    last = lines[-1]
    if last == "OK":
        return out + b"\xff"
    if last == "ERROR":
        return out + b"\xfd"
    return out + b"\xfe" + int(last[len("+CKR: "):], 16).to_bytes(4, "big")


def groups():
    section, desc, enc = "", None, []
    for raw in open(os.path.join(HERE, "transcript.txt"), encoding="utf-8"):
        raw = raw.rstrip("\n")
        if raw.startswith("= "):
            enc.append(raw[2:])
            continue
        if desc is not None and enc:
            yield section, desc, enc
        desc, enc = None, []
        if raw.startswith("## "):
            section = raw
        elif raw and not raw.startswith("#"):
            desc = raw
    if desc is not None and enc:
        yield section, desc, enc


print("# Compact inner messages (docs/protocol.md section 6.7), made by make_compact.py")
print("# from transcript.txt. \"> \" a request line (to the handset), \"< \" the lines")
print("# of a reply (to the host), then \"= \" the compact bytes in hex.")
for section, desc, enc in groups():
    if "refused" in section or not desc.split()[0] in ("request", "reply", "failed", "rejected"):
        continue
    print()
    print(f"# {desc}")
    if desc.startswith("request"):
        print(f"> {enc[0]}")
        print(f"= {line(enc[0], True).hex()}")
    else:
        for l in enc:
            print(f"< {l}")
        print(f"= {reply(enc).hex()}")
