#!/usr/bin/env python3
"""A desktop program's use of phonecsp, in Python with jeepney: list the
keys on the phones, sign with the first (the daemon asks for the PIN
through the user's agent, e.g. `phonecsp agent`), and, with --watch N,
print the next N times a phone comes or goes.

Run: python3 examples/desktop.py [--watch 2]; PHONECSP_BUS names a bus
address other than the system bus. Needs jeepney (Debian: python3-jeepney).
"""
import os
import sys

from jeepney import DBusAddress, MatchRule, new_method_call
from jeepney.io.blocking import open_dbus_connection

SERVICE = "org.phonecsp.CryptoProvider1"


def connect():
    address = os.environ.get("PHONECSP_BUS")
    if address:
        return open_dbus_connection(bus=address)
    return open_dbus_connection(bus="SYSTEM")


def main():
    conn = connect()
    manager = DBusAddress("/org/phonecsp", bus_name=SERVICE,
                          interface="org.freedesktop.DBus.ObjectManager")
    (objects,) = conn.send_and_get_reply(
        new_method_call(manager, "GetManagedObjects")).body

    # Every key, with its label and size, from one call.
    keys = sorted((path, ifaces["org.phonecsp.Key1"])
                  for path, ifaces in objects.items()
                  if "org.phonecsp.Key1" in ifaces)
    for path, key in keys:
        print(f"key {path} '{key['Label'][1]}' rsa-{key['Bits'][1]}")

    # Sign with the first key; not logged in, the daemon asks the agent.
    if keys:
        key = DBusAddress(keys[0][0], bus_name=SERVICE,
                          interface="org.phonecsp.Key1")
        reply = conn.send_and_get_reply(new_method_call(
            key, "Sign", "sa{sv}ay",
            ("rsa-pkcs1-sha256", {}, b"hello from the desktop")))
        if reply.header.message_type.name == "error":
            sys.exit(f"Sign: {reply.header.fields} {reply.body}")
        print(f"signature: {len(reply.body[0])} bytes")

    # Watch the phones come and go.
    watch = int(sys.argv[sys.argv.index("--watch") + 1]) if "--watch" in sys.argv else 0
    if watch == 0:
        return
    # The bus matches the service's name; the connection's own filter sees
    # the sender's unique name, so it matches the rest.
    changed = dict(type="signal", interface="org.freedesktop.DBus.Properties",
                   member="PropertiesChanged", path_namespace="/org/phonecsp/handset")
    bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                      interface="org.freedesktop.DBus")
    rule = MatchRule(sender=SERVICE, **changed)
    conn.send_and_get_reply(new_method_call(bus, "AddMatch", "s", (rule.serialise(),)))
    seen = 0
    with conn.filter(MatchRule(**changed)) as signals:
        print("watching", flush=True)
        while seen < watch:
            message = conn.recv_until_filtered(signals)
            iface, props, _ = message.body
            if iface == "org.phonecsp.Handset1" and "Connected" in props:
                now = "connected" if props["Connected"][1] else "away"
                print(f"{message.header.fields[1]}: {now}", flush=True)
                seen += 1


if __name__ == "__main__":
    main()
