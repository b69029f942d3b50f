"""A real, kernel-shaped edge-to-cloud link: two network namespaces joined by a veth pair.

The edge namespace holds 10.77.0.1, the cloud namespace 10.77.0.2 (a /30 on the veth only;
no other network is touched). The edge side's egress (the uplink that carries the features)
is shaped with ``tc tbf``. The kernel here lacks ``netem``, so delay stays in the application
(``pipeline.stream.link``); random packet loss is real (``loss_pct``, ``--loss``): an nftables rule
(``numgen random mod 10000 < P*100 drop``) in the receiving namespace's ``netdev`` ingress hook of the
veth, so a dropped packet has crossed the shaper and the sender's TCP must retransmit it. The rules
live in the two namespaces only; the host's ruleset is never touched. :meth:`NetnsLink.outage` takes
the veth down (both ends) and brings it back up, as a tunnel or a handover does. Root only.

With ``--secure`` (``pipeline``) or ``secrets=`` (:func:`start_ray`) both Ray nodes start in secure
mode (README, "Security"): token authentication, and TLS on Ray's gRPC with a certificate per side
(10.77.0.1 and 10.77.0.2) from a throwaway CA. :meth:`NetnsLink.capture` records the veth with tcpdump.

Ray nodes started here run in their own PID namespace (``unshare --pid``), so stopping them
kills exactly the processes we started and never another Ray instance on the machine.

CLI (root)::

    python scripts/netns_link.py tcp --rate 10          # prove the shaping with plain TCP
    python scripts/netns_link.py pipeline --rate 5 -- --config configs/demo.yaml --set samples=64
    python scripts/netns_link.py pipeline --rate 4 --secure tls -- --config configs/demo.yaml
    python scripts/netns_link.py tcp --rate 4 --loss 2                  # 2 % loss, both ways
    python scripts/netns_link.py pipeline --rate 4 --loss 2 --loss-direction uplink -- --config ...
    python scripts/netns_link.py pipeline --rate 4 --outage 5:20 -- --config configs/demo.yaml
    python scripts/netns_link.py up --rate 10           # leave the namespaces up (manual use)
    python scripts/netns_link.py down                   # tear them down
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EDGE_IP = "10.77.0.1"
CLOUD_IP = "10.77.0.2"
RAY_PORT = 6379  # namespaces have their own port space: no clash with the host's Ray
OUTAGE_ARM_BYTES = 256 * 1024  # a pipeline outage's start counts from when this much has crossed


def run(argv: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; raise RuntimeError with stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def netns_supported() -> str | None:
    """None when namespaces + veth + tbf can be used here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found"
    probe = f"ssprobe{os.getpid() % 100000}"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb"])
        run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "pa", "root", "tbf",
             "rate", "1mbit", "burst", "4kb", "latency", "50ms"])  # fmt: skip
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"netns/veth/tbf unavailable: {exc}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


LOSS_DIRECTIONS = ("both", "uplink", "downlink")
"""Where ``--loss`` drops: edge -> cloud and cloud -> edge, edge -> cloud only, or cloud -> edge only."""
LOSS_TABLE = "ssloss"  # the nftables table (family netdev) in each namespace that drops packets
LOSS_SCALE = 10_000  # numgen modulus: loss is set in steps of 0.01 %


def loss_supported() -> str | None:
    """None when nftables can drop packets in a namespace here (``nft``, netdev ingress), else why not.

    Needs :func:`netns_supported` first (root, ``ip``)."""
    if shutil.which("nft") is None:
        return "`nft` not found (apt-get install nftables)"
    probe = f"ssnft{os.getpid() % 100000}"
    try:
        run(["ip", "netns", "add", probe])
        run(["ip", "-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb"])
        _nft(probe, _loss_ruleset("pa", 1.0))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"nftables loss unavailable: {exc}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def _loss_ruleset(dev: str, pct: float) -> str:
    """An nft script: drop ``pct`` % of the packets arriving on ``dev`` (ingress, every protocol)."""
    threshold = round(pct * LOSS_SCALE / 100)
    return (
        f"table netdev {LOSS_TABLE} {{\n"
        f"  chain ingress {{\n"
        f'    type filter hook ingress device "{dev}" priority 0; policy accept;\n'
        f"    numgen random mod {LOSS_SCALE} < {threshold} counter drop\n"
        f"  }}\n"
        f"}}\n"
    )


def _nft(ns: str, script: str) -> None:
    """Load an nft script inside namespace ``ns`` (never the host's ruleset)."""
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"nft in {ns} failed ({proc.returncode}): {proc.stderr.strip()}")


def parse_outage(text: str) -> tuple[float, float]:
    """``START:DURATION`` (seconds) -> (start_s, duration_s); start >= 0, duration > 0."""
    try:
        start, duration = (float(x) for x in text.split(":"))
    except ValueError:
        raise ValueError(f"outage must be START:DURATION in seconds, got {text!r}") from None
    if start < 0 or duration <= 0:
        raise ValueError(f"outage needs START >= 0 and DURATION > 0, got {text!r}")
    return start, duration


@dataclass
class NetnsLink:
    """Two namespaces ``<prefix>edge`` / ``<prefix>cloud`` joined by a tbf-shaped veth pair."""

    rate_mbit: float
    prefix: str = "ss"
    shape_downlink: bool = False  # also shape cloud -> edge
    loss_pct: float = 0.0  # random packet loss in percent (nftables), see loss_direction
    loss_direction: str = "both"  # one of LOSS_DIRECTIONS
    # one wire frame per packet (gso_max_segs 1 on the veth), so the loss rules and tbf see every
    # frame on its own, as on a real link; set whenever loss_pct > 0 at up()
    per_packet: bool = False
    # TCP's largest retransmission timeout in both namespaces (net.ipv4.tcp_rto_max_ms, Linux >= 6.15;
    # None: the kernel's 120 s). Through an outage TCP doubles its timer; capped, a connection
    # retries at least this often and so resumes within this long of the link's return
    rto_max_ms: int | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)
    scratch: list[str] = field(default_factory=list)  # directories removed by down()
    outages: list[Outage] = field(default_factory=list)  # background outages, ended by down()

    @property
    def edge(self) -> str:
        return f"{self.prefix}edge"

    @property
    def cloud(self) -> str:
        return f"{self.prefix}cloud"

    @property
    def edge_dev(self) -> str:
        return f"{self.prefix}v-edge"[:15]

    @property
    def cloud_dev(self) -> str:
        return f"{self.prefix}v-cloud"[:15]

    # ------------------------------------------------------------------ lifecycle
    def up(self) -> NetnsLink:
        """Create namespaces, veth pair, addresses and the tbf shaper."""
        if self.rate_mbit <= 0:
            raise ValueError(f"rate_mbit must be > 0, got {self.rate_mbit!r}")
        _check_loss(self.loss_pct, self.loss_direction)
        self.down()  # leftovers of an interrupted run
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        run(["ip", "netns", "add", self.edge])
        run(["ip", "netns", "add", self.cloud])
        run(["ip", "link", "add", self.edge_dev, "netns", self.edge, "type", "veth",
             "peer", "name", self.cloud_dev, "netns", self.cloud])  # fmt: skip
        for ns, dev, ip in (
            (self.edge, self.edge_dev, EDGE_IP),
            (self.cloud, self.cloud_dev, CLOUD_IP),
        ):
            run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
            if self.per_packet or self.loss_pct > 0:
                # without this, TCP hands the veth segments of up to 64 KiB (GSO): one drop decision
                # per ~40 frames, and a loss rate ~40x too coarse
                run(["ip", "-n", ns, "link", "set", dev, "gso_max_size", "1500", "gso_max_segs", "1"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            if self.rto_max_ms is not None:
                run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                     f"net.ipv4.tcp_rto_max_ms={int(self.rto_max_ms)}"])  # fmt: skip
        self._shape(self.edge, self.edge_dev)
        if self.shape_downlink:
            self._shape(self.cloud, self.cloud_dev)
        if self.loss_pct > 0:
            self.set_loss(self.loss_pct, self.loss_direction)

    def _shape(self, ns: str, dev: str) -> None:
        rate_bytes = self.rate_mbit * 1e6 / 8
        burst = int(max(16_000, rate_bytes * 0.004))  # >= 4 ms of data, >= ~10 full frames
        limit = int(burst + rate_bytes * 0.1)  # ~100 ms of queue
        run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
             "rate", f"{int(self.rate_mbit * 1000)}kbit", "burst", str(burst),
             "limit", str(limit)])  # fmt: skip

    # ------------------------------------------------------------------ packet loss
    def set_loss(self, pct: float, direction: str = "both") -> None:
        """Drop ``pct`` % of the packets at random (nftables ``numgen``), in ``direction`` (one of
        :data:`LOSS_DIRECTIONS`); 0 removes the rules. Packets are dropped where they arrive (the
        receiving namespace's ingress hook on its veth end), after the shaper has sent them. Exact per
        wire frame only on a ``per_packet`` link (the default when ``loss_pct`` > 0 at :meth:`up`);
        connections opened before that was set keep their 64 KiB GSO segments."""
        _check_loss(pct, direction)
        for ns, _ in self._loss_ends("both"):
            run(["ip", "netns", "exec", ns, "nft", "delete", "table", "netdev", LOSS_TABLE],
                check=False)  # fmt: skip
        if pct > 0:
            for ns, dev in self._loss_ends(direction):
                _nft(ns, _loss_ruleset(dev, pct))
        self.loss_pct, self.loss_direction = pct, direction

    def _loss_ends(self, direction: str) -> list[tuple[str, str]]:
        """(namespace, device) whose ingress drops for ``direction``: uplink loss is at the cloud."""
        ends = []
        if direction in ("both", "uplink"):
            ends.append((self.cloud, self.cloud_dev))
        if direction in ("both", "downlink"):
            ends.append((self.edge, self.edge_dev))
        return ends

    def loss_counters(self) -> dict[str, int]:
        """Packets dropped so far by the loss rules: ``uplink`` (edge -> cloud), ``downlink``."""
        out = {}
        for name, (ns, _) in zip(("uplink", "downlink"), self._loss_ends("both"), strict=True):
            proc = run(["ip", "netns", "exec", ns, "nft", "list", "table", "netdev", LOSS_TABLE],
                       check=False)  # fmt: skip
            match = re.search(r"counter packets (\d+)", proc.stdout)
            out[name] = int(match.group(1)) if match else 0
        return out

    def drop_counters(self) -> dict[str, int]:
        """:meth:`loss_counters` and the edge shaper's own tail drops (``shaper``)."""
        return {**self.loss_counters(), "shaper": self.tc_dropped()}

    def tcp_counters(self, ns: str | None = None) -> dict[str, int]:
        """The TCP counters of namespace ``ns`` (default: the edge) from its ``/proc/net/snmp``:
        ``OutSegs``, ``RetransSegs``, ``InSegs``, ... (cumulative, this namespace only)."""
        text = run(["ip", "netns", "exec", ns or self.edge, "cat", "/proc/net/snmp"]).stdout
        rows = [ln.split()[1:] for ln in text.splitlines() if ln.startswith("Tcp:")]
        if len(rows) != 2:
            raise RuntimeError(f"cannot parse /proc/net/snmp: {text!r}")
        return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}

    def tcp_counters_both(self) -> dict[str, dict[str, int]]:
        """:meth:`tcp_counters` of the ``edge`` and the ``cloud`` namespace."""
        return {"edge": self.tcp_counters(self.edge), "cloud": self.tcp_counters(self.cloud)}

    # ------------------------------------------------------------------ outages
    def set_link(self, up: bool) -> None:
        """Take both ends of the veth down (``ip link set down``) or bring them up again. Going down
        removes each side's /30 route; coming up restores it (checked, re-added if missing)."""
        for ns, dev in ((self.edge, self.edge_dev), (self.cloud, self.cloud_dev)):
            run(["ip", "-n", ns, "link", "set", dev, "up" if up else "down"])
        if up:
            for ns, dev, ip in ((self.edge, self.edge_dev, EDGE_IP),
                                (self.cloud, self.cloud_dev, CLOUD_IP)):  # fmt: skip
                self._ensure_route(ns, dev, ip)

    def _ensure_route(self, ns: str, dev: str, ip: str) -> None:
        net = ip.rsplit(".", 1)[0] + ".0/30"
        for _ in range(20):
            if net in run(["ip", "-n", ns, "route", "show", "dev", dev]).stdout:
                return
            time.sleep(0.05)
        run(["ip", "-n", ns, "route", "replace", net, "dev", dev, "src", ip])

    def outage(self, start_s: float, duration_s: float, after_bytes: int = 0) -> Outage:
        """A started background :class:`Outage`: the veth goes down ``start_s`` seconds from now (or,
        with ``after_bytes``, from the moment the edge shaper has sent that many more bytes) and comes
        back up ``duration_s`` seconds later. :meth:`down` ends one still running."""
        out = Outage(self, start_s, duration_s, after_bytes)
        self.outages.append(out)
        out.start()
        return out

    def down(self) -> None:
        """Stop everything started here and delete both namespaces (idempotent)."""
        for out in self.outages:
            out.cancel()
        self.outages.clear()
        for proc in reversed(self.procs):
            stop_process(proc, grace=3.0)  # Ray nodes: their PID namespace dies with them
        self.procs.clear()
        keep = os.environ.get("SPLITSTREAM_KEEP_RAY_LOGS")
        for path in self.scratch:
            logs = Path(path) / "session_latest" / "logs"
            if keep and logs.is_dir():  # Ray's session logs, kept for a post-mortem
                dest = Path(keep) / f"{self.edge}-{Path(path).name}"
                shutil.copytree(logs, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True)
            shutil.rmtree(path, ignore_errors=True)
        self.scratch.clear()
        for ns in (self.edge, self.cloud):
            run(["ip", "netns", "del", ns], check=False)

    def __enter__(self) -> NetnsLink:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ------------------------------------------------------------------ helpers
    def exec_argv(self, ns: str, argv: list[str], pid_namespace: bool = False) -> list[str]:
        """argv that runs ``argv`` inside namespace ``ns`` (optionally in a fresh PID ns)."""
        prefix = ["ip", "netns", "exec", ns]
        if pid_namespace:
            prefix += ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        return prefix + argv

    def spawn(
        self, ns: str, argv: list[str], pid_namespace: bool = False, **kw
    ) -> subprocess.Popen:
        """Start a tracked background process inside ``ns``; it is stopped by :meth:`down`."""
        proc = subprocess.Popen(
            self.exec_argv(ns, argv, pid_namespace), start_new_session=True, **kw
        )
        self.procs.append(proc)
        return proc

    def capture(self, pcap: str | os.PathLike[str]) -> PacketCapture:
        """A ``tcpdump`` of every packet on the edge's veth (both directions), for ``with``."""
        return PacketCapture(self, str(pcap))

    def tc_sent_bytes(self) -> int:
        """Bytes the edge shaper has sent so far (from ``tc -s qdisc``)."""
        out = run(["ip", "netns", "exec", self.edge, "tc", "-s", "qdisc", "show", "dev",
                   self.edge_dev]).stdout  # fmt: skip
        match = re.search(r"Sent (\d+) bytes", out)
        if not match:
            raise RuntimeError(f"cannot parse tc statistics: {out!r}")
        return int(match.group(1))

    def tc_dropped(self) -> int:
        """Packets the edge shaper has dropped so far (tail drops of its queue, ``tc -s qdisc``)."""
        out = run(["ip", "netns", "exec", self.edge, "tc", "-s", "qdisc", "show", "dev",
                   self.edge_dev]).stdout  # fmt: skip
        match = re.search(r"dropped (\d+)", out)
        return int(match.group(1)) if match else 0

    def wait_port(self, ns: str, ip: str, port: int, timeout: float = 60) -> None:
        """Wait until a TCP port accepts connections inside ``ns``."""
        code = (
            "import socket,sys,time\n"
            f"end=time.time()+{timeout}\n"
            "while time.time()<end:\n"
            "    try:\n"
            f"        socket.create_connection(('{ip}',{port}),1).close(); sys.exit(0)\n"
            "    except OSError: time.sleep(0.3)\n"
            "sys.exit(1)\n"
        )
        proc = run(
            self.exec_argv(ns, [sys.executable, "-c", code]), check=False, timeout=timeout + 10
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{ip}:{port} in namespace {ns} did not open within {timeout}s")


def _check_loss(pct: float, direction: str) -> None:
    if not 0 <= pct < 100:
        raise ValueError(f"loss must be a percentage in [0, 100), got {pct!r}")
    if direction not in LOSS_DIRECTIONS:
        raise ValueError(f"loss direction must be one of {LOSS_DIRECTIONS}, got {direction!r}")


class Outage(threading.Thread):
    """The veth down for ``duration_s`` seconds, ``start_s`` seconds after the thread starts (after
    the edge shaper has sent ``after_bytes`` more bytes, when that is set: the stream's traffic has
    begun). ``down_wall`` / ``up_wall`` record when it happened (``time.time()``); ``error`` holds
    an exception raised while switching the link."""

    def __init__(self, link: NetnsLink, start_s: float, duration_s: float, after_bytes: int = 0):
        super().__init__(daemon=True)
        if start_s < 0 or duration_s <= 0:
            raise ValueError(f"outage needs start_s >= 0 and duration_s > 0: {start_s}, {duration_s}")
        self.link, self.start_s, self.duration_s = link, start_s, duration_s
        self.after_bytes = after_bytes
        self.down_wall: float | None = None
        self.up_wall: float | None = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()

    def run(self) -> None:
        try:
            if self.after_bytes > 0:
                base = self.link.tc_sent_bytes()
                while self.link.tc_sent_bytes() - base < self.after_bytes:
                    if self._cancel.wait(0.05):
                        return
            if self._cancel.wait(self.start_s):
                return
            self.link.set_link(up=False)
            self.down_wall = time.time()
            self._cancel.wait(self.duration_s)
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            self.error = exc
        finally:
            if self.down_wall is not None:
                try:
                    self.link.set_link(up=True)
                    self.up_wall = time.time()
                except BaseException as exc:  # noqa: BLE001
                    self.error = self.error or exc

    def cancel(self) -> None:
        """End the outage now (the link comes back up if it was down) and wait for the thread."""
        self._cancel.set()
        if self.is_alive():
            self.join(10)

    def summary(self) -> dict:
        took = None if self.down_wall is None or self.up_wall is None else self.up_wall - self.down_wall
        return {"start_s": self.start_s, "duration_s": self.duration_s, "after_bytes": self.after_bytes,
                "down_wall": self.down_wall, "up_wall": self.up_wall, "down_s": took,
                "error": None if self.error is None else repr(self.error)}  # fmt: skip


class PacketCapture:
    """``tcpdump -w`` on the edge's veth while the ``with`` block runs; full packets, no name lookups.

    Entering waits until tcpdump listens; leaving stops it (SIGINT: it flushes the file) and
    ``data()`` then returns the capture file's bytes.
    """

    def __init__(self, link: NetnsLink, pcap: str):
        self.link, self.pcap = link, pcap
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> PacketCapture:
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise RuntimeError("tcpdump is not installed (apt-get install tcpdump)")
        argv = [tcpdump, "-i", self.link.edge_dev, "-n", "-s", "0", "-U", "-w", self.pcap]
        self.proc = self.link.spawn(
            self.link.edge, argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        line = self.proc.stderr.readline() if self.proc.stderr else ""
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {line.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def data(self) -> bytes:
        return Path(self.pcap).read_bytes()


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM then SIGKILL one process we started (PID-namespace init takes its ns down)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---------------------------------------------------------------------- plain TCP check
_RECEIVER = """
import json, socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(1)
print("READY", flush=True)
conn, _ = srv.accept(); total = 0; first = last = None
while True:
    data = conn.recv(1 << 16)
    if not data:
        break
    now = time.monotonic(); first = first or now; last = now; total += len(data)
print(json.dumps({"bytes": total, "seconds": (last - first) if total else 0.0}))
"""

_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)
left = int(sys.argv[3]); block = b"\\x5a" * (1 << 16)
while left > 0:
    n = min(left, len(block)); s.sendall(block[:n]); left -= n
s.close()
"""


def tcp_goodput(link: NetnsLink, seconds: float = 3.0, port: int = 5201) -> dict:
    """Send ~``seconds`` worth of data edge -> cloud over TCP; return measured goodput."""
    nbytes = int(link.rate_mbit * 1e6 / 8 * seconds)
    recv = subprocess.Popen(
        link.exec_argv(link.cloud, [sys.executable, "-c", _RECEIVER, CLOUD_IP, str(port)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if recv.stdout is None or recv.stdout.readline().strip() != "READY":
            raise RuntimeError("TCP receiver did not start")
        sent0 = link.tc_sent_bytes()
        tcp0, drops0 = link.tcp_counters_both(), link.drop_counters()
        run(link.exec_argv(link.edge, [sys.executable, "-c", _SENDER, CLOUD_IP, str(port),
                                       str(nbytes)]), timeout=seconds * 20 + 30)  # fmt: skip
        out, _ = recv.communicate(timeout=30)
    finally:
        stop_process(recv)
    result = json.loads(out)
    result["goodput_mbps"] = result["bytes"] * 8 / result["seconds"] / 1e6
    result["rate_mbps"] = link.rate_mbit
    result["tc_sent_bytes"] = link.tc_sent_bytes() - sent0
    result["wire_mbps"] = result["tc_sent_bytes"] * 8 / result["seconds"] / 1e6
    result.update(retransmissions(link, tcp0, drops0))
    return result


def retransmissions(link: NetnsLink, tcp0: dict[str, int], drops0: dict[str, int]) -> dict:
    """What the loss rules and the shaper dropped, and what each side's TCP sent and resent, since
    ``tcp0`` / ``drops0`` (:meth:`NetnsLink.tcp_counters_both`, :meth:`NetnsLink.drop_counters`)."""
    tcp, drops = link.tcp_counters_both(), link.drop_counters()
    out_segs = tcp["edge"]["OutSegs"] - tcp0["edge"]["OutSegs"]
    retrans = tcp["edge"]["RetransSegs"] - tcp0["edge"]["RetransSegs"]
    return {
        "loss_pct": link.loss_pct,
        "loss_direction": link.loss_direction,
        "dropped_uplink": drops["uplink"] - drops0["uplink"],
        "dropped_downlink": drops["downlink"] - drops0["downlink"],
        "shaper_dropped": drops["shaper"] - drops0["shaper"],
        "edge_out_segs": out_segs,
        "edge_retrans_segs": retrans,
        "edge_retrans_pct": 100.0 * retrans / out_segs if out_segs else 0.0,
        "cloud_out_segs": tcp["cloud"]["OutSegs"] - tcp0["cloud"]["OutSegs"],
        "cloud_retrans_segs": tcp["cloud"]["RetransSegs"] - tcp0["cloud"]["RetransSegs"],
    }


# ---------------------------------------------------------------------- Ray across the link
SECURE_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_USE_TLS",
               "RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")  # fmt: skip
SECURE_MODES = ("off", "token", "tls")
"""Secure mode of the link's Ray nodes: none; token authentication only; token and TLS."""


NODE_DEAD_AFTER_S = 60
"""How long Ray's GCS goes without a node's health-check answer before it declares the node dead
(``RAY_health_check_failure_threshold`` checks, ``RAY_health_check_period_ms`` apart). Ray's default
is 5 checks 3 s apart, about 15 s: shorter than the outages the link is tested with, and a dead cloud
node takes its actors with it. 60 s matches ``flow.stall_timeout_s``'s default on a real link."""

HEALTH_CHECK_PERIOD_MS = 3000  # Ray's default period; the threshold sets the time


def ray_env(secure: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Ray processes and drivers: the repo on PYTHONPATH, no usage stats, and GCS
    health checks that outlast an outage of up to :data:`NODE_DEAD_AFTER_S` (a caller's own
    ``RAY_health_check_*`` values win).

    Secure-mode variables inherited from the caller are dropped; ``secure`` (from
    :func:`secure_env`) sets them for one side.
    """
    env = {k: v for k, v in os.environ.items() if k not in SECURE_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("RAY_health_check_period_ms", str(HEALTH_CHECK_PERIOD_MS))
    threshold = math.ceil(NODE_DEAD_AFTER_S * 1000 / HEALTH_CHECK_PERIOD_MS)
    env.setdefault("RAY_health_check_failure_threshold", str(threshold))
    env.update(secure or {})
    return env


def make_secrets(directory: str | os.PathLike[str]) -> str:
    """A secrets directory for the link: a throwaway CA, the token, and certificates ``edge``
    (10.77.0.1) and ``cloud`` (10.77.0.2), made as ``splitstream certs`` makes them."""
    from splitstream.security import NodeSpec, write_secrets

    nodes = [NodeSpec.parse(f"edge={EDGE_IP}"), NodeSpec.parse(f"cloud={CLOUD_IP}")]
    return str(write_secrets(directory, nodes)["directory"])


def secure_env(secrets: str | None, side: str, tls: bool = True) -> dict[str, str]:
    """Ray's token (and, with ``tls``, TLS) variables for ``side`` (``edge`` or ``cloud``) of a
    secrets directory; empty when ``secrets`` is None (secure mode off)."""
    if secrets is None:
        return {}
    from splitstream.security import node_env

    return node_env(secrets, side if tls else None)


def start_ray(
    link: NetnsLink,
    temp_dir: str,
    cpus: int = 2,
    object_store_mb: int = 200,
    secrets: str | None = None,
    tls: bool = True,
    dashboard_port: int | None = None,
) -> str:
    """Start a Ray head (resource ``edge``) and worker (``cloud``); return the GCS address.

    With ``secrets`` (a directory from :func:`make_secrets`) both nodes start in secure mode: token
    authentication and (``tls``) TLS on every gRPC channel, each side with its own certificate.
    With ``dashboard_port`` the head serves the dashboard (and the job API): on the edge address,
    or, in secure mode, on the edge's loopback only. Ray's dashboard speaks plain HTTP even with
    TLS on, and other nodes' agents post their events to it with the token in a header, so in secure
    mode it must not be reachable across the link (README, "Security").
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--block", "--num-cpus", str(cpus), "--disable-usage-stats",
              "--object-store-memory", str(object_store_mb * 1024 * 1024)]  # fmt: skip
    address = f"{EDGE_IP}:{RAY_PORT}"
    logs = Path(temp_dir)
    logs.mkdir(parents=True, exist_ok=True)
    # Ray's AF_UNIX socket paths must stay under 108 bytes: keep its temp dir short
    ray_tmp = tempfile.mkdtemp(prefix="ssray", dir="/tmp")
    link.scratch.append(ray_tmp)
    dashboard_host = "127.0.0.1" if secrets else EDGE_IP
    dashboard = (["--include-dashboard", "true", "--dashboard-host", dashboard_host,
                  "--dashboard-port", str(dashboard_port)] if dashboard_port
                 else ["--include-dashboard", "false"])  # fmt: skip
    head_argv = [ray_bin, "start", "--head", "--node-ip-address", EDGE_IP, "--port", str(RAY_PORT),
                 *dashboard, "--temp-dir", ray_tmp,
                 "--resources", json.dumps({"edge": 100}), *common]  # fmt: skip
    with open(logs / "head.log", "w") as head_log:
        head = link.spawn(link.edge, head_argv, pid_namespace=True,
                          env=ray_env(secure_env(secrets, "edge", tls)),
                          stdout=head_log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        if head.poll() is not None:
            tail = (logs / "head.log").read_text()[-2000:]
            raise RuntimeError(f"Ray head exited ({head.returncode}):\n{tail}")
        try:
            link.wait_port(link.cloud, EDGE_IP, RAY_PORT, timeout=3)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
    worker_argv = [ray_bin, "start", "--address", address, "--node-ip-address", CLOUD_IP,
                   "--resources", json.dumps({"cloud": 100}), *common]  # fmt: skip
    with open(logs / "worker.log", "w") as worker_log:
        link.spawn(link.cloud, worker_argv, pid_namespace=True,
                   env=ray_env(secure_env(secrets, "cloud", tls)),
                   stdout=worker_log, stderr=subprocess.STDOUT)  # fmt: skip
    wait_nodes(link, address, 2, timeout=120, secure=secure_env(secrets, "edge", tls))
    return address


_COUNT_NODES = """
import ray, sys, time
ray.init(address=sys.argv[1], log_to_driver=False)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= int(sys.argv[2]):
        print(sorted(n["NodeManagerAddress"] for n in alive)); sys.exit(0)
    time.sleep(1)
sys.exit(1)
"""


def wait_nodes(
    link: NetnsLink, address: str, count: int, timeout: float, secure: dict[str, str] | None = None
) -> None:
    """Wait until ``count`` Ray nodes are alive (checked by a driver in the edge namespace)."""
    argv = link.exec_argv(link.edge, [sys.executable, "-c", _COUNT_NODES, address, str(count),
                                      str(timeout)])  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=ray_env(secure), timeout=timeout + 60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Ray cluster did not reach {count} nodes: {proc.stderr[-2000:]}")


def run_pipeline_over_link(
    link: NetnsLink,
    address: str,
    pipeline_args: list[str],
    json_path: str,
    timeout: float = 300,
    secure: dict[str, str] | None = None,
) -> dict:
    """Run ``splitstream run`` as a driver in the edge namespace with ``link.mode=real``
    (``secure``: the driver's secure-mode variables, see :func:`secure_env`)."""
    argv = [sys.executable, "-m", "splitstream", "run", *pipeline_args, "--address", address,
            "--set", "link.mode=real", "--json", json_path, "--no-progress"]  # fmt: skip
    proc = subprocess.run(
        link.exec_argv(link.edge, argv),
        capture_output=True,
        text=True,
        env=ray_env(secure),
        cwd=str(REPO),
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(Path(json_path).read_text())


class TcSampler(threading.Thread):
    """Samples the edge shaper's cumulative sent bytes every ``period`` seconds."""

    def __init__(self, link: NetnsLink, period: float = 0.2):
        super().__init__(daemon=True)
        self.link, self.period = link, period
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), self.link.tc_sent_bytes()))
            self._stop_event.wait(self.period)

    def stop(self) -> list[tuple[float, int]]:
        self._stop_event.set()
        self.join()
        self.samples.append((time.monotonic(), self.link.tc_sent_bytes()))
        return self.samples


def saturated_rate(samples: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> dict:
    """Rate (Mbit/s) between the moments the cumulative byte count passes ``lo`` and ``hi``.

    Cutting off the first and last 10 % of the bytes removes start-up and drain phases, so
    on a link-bound run this is the link's steady throughput.
    """
    if len(samples) < 3:
        raise ValueError("need at least 3 tc samples")
    t0, b0 = samples[0]
    total = samples[-1][1] - b0
    if total <= 0:
        raise ValueError("no bytes crossed the link")

    def when(fraction: float) -> tuple[float, int]:
        target = b0 + fraction * total
        return next((t, b) for t, b in samples if b >= target)

    (ta, ba), (tb, bb) = when(lo), when(hi)
    if tb <= ta:
        raise ValueError("run too short to measure a steady rate")
    return {"mbps": (bb - ba) * 8 / (tb - ta) / 1e6, "window_s": tb - ta, "total_bytes": total,
            "duration_s": samples[-1][0] - t0}  # fmt: skip


def start_ray_secure(link: NetnsLink, workdir: str, secure: str = "off") -> tuple[str, dict[str, str]]:
    """:func:`start_ray` in secure mode ``secure`` (one of :data:`SECURE_MODES`; throwaway secrets
    are made in ``workdir``); returns the GCS address and the edge-side driver's variables."""
    if secure not in SECURE_MODES:
        raise ValueError(f"secure must be one of {SECURE_MODES}, got {secure!r}")
    secrets = make_secrets(Path(workdir) / "secrets") if secure != "off" else None
    tls = secure == "tls"
    address = start_ray(link, workdir, secrets=secrets, tls=tls)
    return address, secure_env(secrets, "edge", tls)


def stream_goodput(
    link: NetnsLink,
    address: str,
    pipeline_args: list[str],
    workdir: str,
    secure: dict[str, str] | None = None,
    outages: list[tuple[float, float]] = (),
    timeout: float = 300,
) -> dict:
    """Run the pipeline across the shaped link on the Ray cluster at ``address`` (a driver with
    the variables ``secure``) and measure goodput.

    ``outages``: (start_s, duration_s) pairs; each takes the veth down for ``duration_s``, ``start_s``
    seconds after the stream's traffic began (the shaper has sent :data:`OUTAGE_ARM_BYTES` since
    the driver started). The result's ``edge_retrans_segs`` / ``dropped_*`` count TCP retransmissions
    in the edge namespace and the loss rules' drops during the run.

    ``wire_mbps`` is the shaper's steady throughput (all bytes: payload, Ray, TLS and TCP/IP
    headers); ``goodput_mbps`` scales it by the payload share, i.e. encoded feature bytes per
    second through the link.
    """
    sampler = TcSampler(link)
    tcp0, drops0 = link.tcp_counters_both(), link.drop_counters()
    sampler.start()
    t0 = time.monotonic()
    running = [link.outage(start, duration, after_bytes=OUTAGE_ARM_BYTES)
               for start, duration in outages]  # fmt: skip
    try:
        report = run_pipeline_over_link(
            link, address, pipeline_args, str(Path(workdir) / "report.json"), secure=secure,
            timeout=timeout,
        )  # fmt: skip
    finally:
        samples = sampler.stop()
        for out in running:
            out.cancel()
    errors = [o.error for o in running if o.error is not None]
    if errors:
        raise RuntimeError(f"outage could not switch the link: {errors[0]!r}")
    rate = saturated_rate(samples)
    payload = int(report["wire_bytes"])
    share = payload / rate["total_bytes"]
    return {
        "rate_mbps": link.rate_mbit,
        "wire_mbps": rate["mbps"],
        "payload_share": share,
        "goodput_mbps": rate["mbps"] * min(1.0, share),
        "tc_sent_bytes": rate["total_bytes"],
        "payload_bytes": payload,
        "window_s": rate["window_s"],
        "driver_seconds": time.monotonic() - t0,
        "tc_samples": [(round(t - samples[0][0], 3), b - samples[0][1]) for t, b in samples],
        **retransmissions(link, tcp0, drops0),
        "outages": [o.summary() for o in running],
        "report": report,
    }


def pipeline_goodput(
    link: NetnsLink,
    pipeline_args: list[str],
    workdir: str,
    secure: str = "off",
    outages: list[tuple[float, float]] = (),
    timeout: float = 300,
) -> dict:
    """Start Ray on both sides (secure mode ``secure``, see :func:`start_ray_secure`), run the
    pipeline across the shaped link and measure goodput (:func:`stream_goodput`)."""
    address, driver_env = start_ray_secure(link, workdir, secure)
    res = stream_goodput(link, address, pipeline_args, workdir, driver_env, outages, timeout)
    return {"secure": secure, **res}


# ---------------------------------------------------------------------- CLI
def _outage_arg(text: str) -> tuple[float, float]:
    try:
        return parse_outage(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "tcp", "pipeline"):
        p = sub.add_parser(name)
        p.add_argument("--rate", type=float, default=10.0, help="tbf rate in Mbit/s")
        p.add_argument("--prefix", default="ss", help="namespace name prefix")
        p.add_argument("--loss", type=float, default=0.0, metavar="P",
                       help="random packet loss in percent (nftables), e.g. 2 or 0.5")  # fmt: skip
        p.add_argument("--loss-direction", choices=LOSS_DIRECTIONS, default="both",
                       help="where --loss drops: both ways, edge->cloud only or cloud->edge only")  # fmt: skip
        if name == "tcp":
            p.add_argument("--seconds", type=float, default=3.0)
        if name == "pipeline":
            p.add_argument(
                "--secure", choices=SECURE_MODES, default="off",
                help="start both Ray nodes in secure mode: token authentication (token), or token "
                "and TLS on Ray's gRPC (tls), with throwaway secrets (splitstream certs)",
            )  # fmt: skip
            p.add_argument(
                "--outage", action="append", default=[], type=_outage_arg, metavar="START:DURATION",
                help="take the veth down (both ends) for DURATION s, START s after the stream's "
                f"traffic began ({OUTAGE_ARM_BYTES // 1024} KiB through the shaper); repeatable",
            )  # fmt: skip
            p.add_argument("pipeline_args", nargs=argparse.REMAINDER, help="args after --")
    down = sub.add_parser("down")
    down.add_argument("--prefix", default="ss")
    args = parser.parse_args(argv)
    if args.cmd == "down":
        NetnsLink(1.0, prefix=args.prefix).down()
        return 0
    reason = netns_supported()
    if reason:
        print(f"cannot build the shaped link: {reason}", file=sys.stderr)
        return 2
    if args.loss > 0:
        reason = loss_supported()
        if reason:
            print(f"cannot drop packets on the link: {reason}", file=sys.stderr)
            return 2
    link = NetnsLink(args.rate, prefix=args.prefix, loss_pct=args.loss,
                     loss_direction=args.loss_direction)  # fmt: skip
    if args.cmd == "up":
        link.up()
        loss = f", {args.loss:g} % loss ({args.loss_direction})" if args.loss else ""
        print(f"{link.edge} ({EDGE_IP}) <-> {link.cloud} ({CLOUD_IP}), uplink {args.rate} Mbit/s{loss}")
        return 0
    with link:
        if args.cmd == "tcp":
            result = tcp_goodput(link, args.seconds)
        else:
            extra = [a for a in args.pipeline_args if a != "--"]
            with tempfile.TemporaryDirectory(prefix="ss_netns_") as tmp:
                result = pipeline_goodput(link, extra, tmp, secure=args.secure,
                                          outages=args.outage)  # fmt: skip
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
