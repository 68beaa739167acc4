#!/usr/bin/env python3
"""Drives a VM's serial console for the boot tier (tests/system/boot).

Runs a command (QEMU with `-serial stdio`), copies everything it prints to
a log, and walks through steps given as arguments, in order:

  expect:LABEL:REGEX   wait until REGEX shows on the console (fails the run
                       if the VM ends or the time runs out first)
  send:TEXT            type TEXT on the console (\\r ends a line, as Enter)
  sleep:SECONDS        wait (reading the console meanwhile)
  stamp:LABEL          record the time since the start under LABEL

The console is a person at the boot prompt: this is how the test types the
PIN into Debian's askpass. Each step's time is printed, so the README's
timings come from here. Exit status 0 when every step passed and the VM
ended by itself (the root's init powers off), 1 otherwise.

  console.py LOG TIMEOUT STEP... -- COMMAND...
"""

import os
import re
import select
import subprocess
import sys
import time


def main():
    argv = sys.argv[1:]
    if "--" not in argv or len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sep = argv.index("--")
    log_path, timeout = argv[0], float(argv[1])
    steps, command = argv[2:sep], argv[sep + 1:]
    start = time.monotonic()
    deadline = start + timeout
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen = ""  # console text not yet matched by an expect step
    ended = False
    ok = True
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:

        def read(wait):
            """Reads what the console printed within `wait` seconds."""
            nonlocal seen, ended
            if ended:
                return
            r, _, _ = select.select([proc.stdout], [], [], wait)
            if not r:
                return
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                ended = True
                return
            text = chunk.decode("utf-8", errors="replace")
            log.write(text)
            log.flush()
            seen += text

        for step in steps:
            kind, _, rest = step.partition(":")
            elapsed = time.monotonic() - start
            if kind == "send":
                text = rest.encode().decode("unicode_escape")
                # A person types; askpass reads a line at a time.
                for ch in text:
                    proc.stdin.write(ch.encode())
                    proc.stdin.flush()
                    time.sleep(0.02)
                print(f"console: {elapsed:6.1f}s typed {len(text)} characters")
                continue
            if kind == "sleep":
                # Let a prompt finish setting the terminal up: askpass
                # flushes typed-ahead input (TCSAFLUSH) after its prompt.
                end = time.monotonic() + float(rest)
                while time.monotonic() < end:
                    read(max(0.0, min(0.5, end - time.monotonic())))
                continue
            if kind == "stamp":
                print(f"console: {elapsed:6.1f}s {rest}")
                continue
            if kind != "expect":
                print(f"console: unknown step {step!r}", file=sys.stderr)
                ok = False
                break
            label, _, pattern = rest.partition(":")
            rx = re.compile(pattern)
            while True:
                m = rx.search(seen)
                if m:
                    seen = seen[m.end():]
                    print(f"console: {time.monotonic() - start:6.1f}s {label}")
                    break
                if ended or time.monotonic() >= deadline:
                    why = "the VM ended" if ended else f"{timeout:.0f} s passed"
                    print(f"console: FAILED: {label}: {why} before /{pattern}/ showed",
                          file=sys.stderr)
                    ok = False
                    break
                read(0.5)
            if not ok:
                break
        # The root's init powers the VM off; wait for that (or the deadline).
        while ok and not ended and time.monotonic() < deadline:
            read(0.5)
        if ended:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            if ok:
                print("console: FAILED: the VM did not power off", file=sys.stderr)
                ok = False
            proc.kill()
        proc.wait()
        print(f"console: {time.monotonic() - start:6.1f}s VM ended ({proc.returncode})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
