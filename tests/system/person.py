#!/usr/bin/env python3
"""The person holding the phone, for the boot tier: a terminal (a pty)
where the handset's pinentry asks for the PIN, a prompt watched for and a
PIN typed on it, as someone would.

    person.py TTY-LINK LOG TIMEOUT PROMPT TYPED

Makes a pty (left cooked, as a terminal is: the pinentry sets the modes it
wants, no echo among them, and Enter's \r becomes the \n it reads up to),
symlinks TTY-LINK to its slave, then reads what the
pinentry shows until PROMPT appears, types TYPED (with \\r for Enter) and
reads on until the pinentry lets go of the terminal or TIMEOUT seconds
pass. Everything shown goes to LOG. Exit 0 when the PIN was typed, 1 if
the prompt never came.
"""
import os
import pty
import select
import sys
import time


def main():
    link, log_path, timeout, prompt, typed = sys.argv[1:6]
    deadline = time.monotonic() + float(timeout)
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    try:
        os.unlink(link)
    except FileNotFoundError:
        pass
    os.symlink(name, link)
    seen = b""
    typed_at = None
    with open(log_path, "wb", buffering=0) as log:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if not r:
                # The pinentry has closed the terminal after the PIN: done.
                if typed_at is not None and time.monotonic() - typed_at > 2:
                    return 0
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                time.sleep(0.1)
                continue
            log.write(chunk)
            seen += chunk
            if typed_at is None and prompt.encode() in seen:
                time.sleep(0.5)
                os.write(master, typed.encode().decode("unicode_escape").encode())
                log.write(b"\n[person typed the PIN]\n")
                typed_at = time.monotonic()
    return 0 if typed_at is not None else 1


if __name__ == "__main__":
    sys.exit(main())
