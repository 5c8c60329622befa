#!/usr/bin/env python3
"""Reticulum side of the radio bench (benches/radio.rs runs it; see docs/BENCHMARKS.md).

    rns_peer.py a CONFIGDIR KISS_HOST:PORT BYTES
        Station A: announces a destination, prints "DEST <hash>" once up, and sends a
        Resource of BYTES random bytes over every link that is established to it.
        Runs until killed.
    rns_peer.py b CONFIGDIR KISS_HOST:PORT DEST_HASH
        Station B: finds a path to A's destination (path request, re-sent every
        PATH_RETRY s as an application would), sets up a Link (re-tried if it fails),
        accepts the Resource A sends and exits once it is fully received. Prints one JSON
        line per phase, seconds since the process started: {"ev": "path", "t": ...}, then
        "link", "resource_started", "done" (with "bytes").

Both use a TCPClientInterface with kiss_framing to a Direwolf KISS TCP port, with a
fixed_mtu (env RNS_FIXED_MTU, default 500, Reticulum's MTU; the bench uses 2000 on the
clean channel). Without it the interface assumes 10 Mbit/s and sends frames of several
KB that Direwolf truncates (its KISS frames are limited to 2048 bytes). The interface's bitrate
is left at Reticulum's guess unless RNS_BITRATE is set (e.g. 1200, so that its path and
link timeouts know the channel).
"""

import json
import os
import sys
import threading
import time

T0 = time.monotonic()

import RNS  # noqa: E402  (the import itself takes a while; it counts for B)

APP = "skywavebench"
ASPECT = "resource"
PATH_RETRY = float(os.environ.get("RNS_PATH_RETRY", "15"))


def emit(ev, **kw):
    kw.update({"ev": ev, "t": round(time.monotonic() - T0, 3)})
    print(json.dumps(kw), flush=True)


def write_config(configdir, kiss):
    host, port = kiss.rsplit(":", 1)
    bitrate = int(os.environ.get("RNS_BITRATE", "0"))
    mtu = int(os.environ.get("RNS_FIXED_MTU", "500"))
    os.makedirs(configdir, exist_ok=True)
    lines = [
        "[reticulum]",
        "  enable_transport = False",
        "  share_instance = No",
        "  panic_on_interface_error = No",
        "",
        "[logging]",
        "  loglevel = %s" % os.environ.get("RNS_LOGLEVEL", "2"),
        "",
        "[interfaces]",
        "  [[Direwolf KISS]]",
        "    type = TCPClientInterface",
        "    enabled = yes",
        "    target_host = %s" % host,
        "    target_port = %s" % port,
        "    kiss_framing = True",
    ]
    if mtu > 0:
        lines.append("    fixed_mtu = %d" % mtu)
    if bitrate > 0:
        lines.append("    bitrate = %d" % bitrate)
    with open(os.path.join(configdir, "config"), "w") as f:
        f.write("\n".join(lines) + "\n")


def station_a(configdir, kiss, size):
    write_config(configdir, kiss)
    RNS.Reticulum(configdir=configdir)
    identity = RNS.Identity()
    dest = RNS.Destination(identity, RNS.Destination.IN, RNS.Destination.SINGLE, APP, ASPECT)
    data = os.urandom(size)

    def concluded(resource):
        emit("a_resource_concluded", status=resource.status)
        link = resource.link
        # An application would try again while the link lives.
        if resource.status != RNS.Resource.COMPLETE and link.status == RNS.Link.ACTIVE:
            RNS.Resource(data, link, callback=concluded)

    def established(link):
        emit("a_link")
        RNS.Resource(data, link, callback=concluded)

    dest.set_link_established_callback(established)
    dest.announce()
    print("DEST " + RNS.hexrep(dest.hash, delimit=False), flush=True)
    while True:
        time.sleep(3600)


def station_b(configdir, kiss, dest_hex):
    write_config(configdir, kiss)
    RNS.Reticulum(configdir=configdir)
    dest_hash = bytes.fromhex(dest_hex)
    done = threading.Event()

    asked = None
    while not RNS.Transport.has_path(dest_hash):
        if asked is None or time.monotonic() - asked > PATH_RETRY:
            RNS.Transport.request_path(dest_hash)
            asked = time.monotonic()
        time.sleep(0.05)
    emit("path")
    server = RNS.Identity.recall(dest_hash)
    out = RNS.Destination(server, RNS.Destination.OUT, RNS.Destination.SINGLE, APP, ASPECT)

    def started(resource):
        emit("resource_started", size=resource.get_data_size())

    def concluded(resource):
        if resource.status == RNS.Resource.COMPLETE:
            d = resource.data
            emit("done", bytes=len(d.read()) if hasattr(d, "read") else len(d or b""))
            done.set()
        else:
            emit("resource_failed", status=resource.status)

    while not done.is_set():
        established = threading.Event()
        closed = threading.Event()

        def on_established(link):
            emit("link")
            established.set()

        link = RNS.Link(out, established_callback=on_established,
                        closed_callback=lambda l: closed.set())
        link.set_resource_strategy(RNS.Link.ACCEPT_ALL)
        link.set_resource_started_callback(started)
        link.set_resource_concluded_callback(concluded)
        while not done.is_set() and not closed.is_set():
            time.sleep(0.05)
        if not done.is_set():
            emit("link_closed")
    sys.stdout.flush()
    os._exit(0)


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("a", "b"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    role, configdir, kiss, arg = sys.argv[1:]
    if role == "a":
        station_a(configdir, kiss, int(arg))
    else:
        station_b(configdir, kiss, arg)


if __name__ == "__main__":
    main()
