#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the protocol's test vectors.

Each encoded block of protocol/tests/vectors/transcript.txt becomes one seed
per target, and the inputs of presession.txt, joined, become one more.
line_parser reads its first byte as the line limit and piece size, so its
seeds start with 0xff (a large limit) and end with CR. command_decode reads
the whole input as UTF-8, and everything after its first byte as bytes for
the Responder. Run it from the fuzz/ directory: python3 seed_corpus.py
"""
import os

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
    for target in ("line_parser", "command_decode"):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for n, text in enumerate(blocks):
            data = text.encode()
            if target == "line_parser":
                data = b"\xff" + data + b"\r"
            with open(os.path.join(d, "seed%03d" % n), "wb") as out:
                out.write(data)
        with open(os.path.join(d, "presession"), "wb") as out:
            out.write(b"\x00" + presession)
    print("%d seeds per target" % (len(blocks) + 1))


if __name__ == "__main__":
    main()
