#!/usr/bin/env python3
"""Recapture tests/fixtures/collectd/ from a real collectd (Debian collectd-core).

Starts collectd in the foreground on a temp directory, once per security level, with the
network plugin sending to a UDP port this script listens on, and the unixsock plugin for the
transcripts. Writes into OUT (default: a new temp directory, so the committed fixtures are never
overwritten by accident):

  <level>.bin              the first datagram of SecurityLevel None / Sign / Encrypt
  <level>-stream/NNN.bin   every datagram received in the capture window
  unixsock-transcript.txt  each line of unixsock-commands.txt and collectd's reply

The golden files (*.expected.json, *.txt part dumps) are not regenerated: they are the reference
the decoder is tested against, so a new capture is reviewed by hand (`medic decode` prints the
new packets as JSON to compare) before it replaces the committed one.

Usage: scripts/capture-fixtures.py [--seconds 3] [--out DIR]
"""
import argparse, os, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "collectd")
USER, PASSWORD = "fixture-user", "fixture-secret"


def collectd_conf(tmp, port, level, sock):
    security = "" if level == "none" else f"""
    SecurityLevel "{level.capitalize()}"
    Username "{USER}"
    Password "{PASSWORD}\""""
    return f"""Hostname "collectd-fixture"
Interval 1
BaseDir "{tmp}"
PIDFile "{tmp}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin unixsock
LoadPlugin network
<Plugin unixsock>
  SocketFile "{sock}"
</Plugin>
<Plugin network>
  <Server "127.0.0.1" "{port}">{security}
  </Server>
</Plugin>
"""


def unixsock_transcript(sock, commands):
    out = []
    for _ in range(300):  # collectd's socket appears 5-30 ms after start
        if os.path.exists(sock):
            break
        time.sleep(0.01)
    for line in commands:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        f = s.makefile("rw")
        f.write(line + "\n")
        f.flush()
        status = f.readline().rstrip("\n")
        out += [line, status]
        try:
            n = int(status.split(" ", 1)[0])
        except ValueError:
            n = 0
        out += [f.readline().rstrip("\n") for _ in range(max(n, 0)) if line.split()[0].upper() in ("LISTVAL", "GETVAL")]
        s.close()
    return out


def capture(level, seconds, out_dir, commands):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    port = rx.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "unixsock")
        conf = os.path.join(tmp, "collectd.conf")
        with open(conf, "w") as f:
            f.write(collectd_conf(tmp, port, level, sock))
        proc = subprocess.Popen(["collectd", "-f", "-C", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            transcript = unixsock_transcript(sock, commands) if commands else []
            stream = os.path.join(out_dir, f"{level}-stream")
            os.makedirs(stream, exist_ok=True)
            deadline, n = time.time() + seconds, 0
            while time.time() < deadline:
                try:
                    data = rx.recv(65535)
                except socket.timeout:
                    continue
                with open(os.path.join(stream, f"{n:03}.bin"), "wb") as f:
                    f.write(data)
                if n == 0:
                    name = {"none": "plain", "sign": "sign", "encrypt": "encrypt"}[level]
                    with open(os.path.join(out_dir, f"{name}.bin"), "wb") as f:
                        f.write(data)
                n += 1
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    if n == 0:
        sys.exit(f"capture-fixtures: collectd sent nothing at security level {level}")
    print(f"capture-fixtures: {level}: {n} datagrams", file=sys.stderr)
    return transcript


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="collectd-fixtures-")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(FIXTURES, "unixsock-commands.txt")) as f:
        commands = [l.rstrip("\n") for l in f if l.strip()]
    transcript = capture("none", a.seconds, out, commands)
    with open(os.path.join(out, "unixsock-transcript.txt"), "w") as f:
        f.write("\n".join(transcript) + "\n")
    for level in ("sign", "encrypt"):
        capture(level, a.seconds, out, [])
    with open(os.path.join(out, "auth_file"), "w") as f:
        f.write(f"{USER}: {PASSWORD}\n")
    print(f"capture-fixtures: written to {out}; review with\n"
          f"  medic decode --security-level encrypt --auth-file {out}/auth_file {out}/*.bin",
          file=sys.stderr)


if __name__ == "__main__":
    main()
