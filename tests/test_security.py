"""Secure mode: the secrets directory (``splitstream certs``), the client's checks, and Ray
across the tc-shaped veth with token authentication and TLS (marked ``root``, skipped otherwise).

Across the link:

- authentication: without the token, with a wrong one, without TLS or with a certificate from
  another CA, a driver connection is refused with one clear line; so are ``ray job submit`` (Ray's own message) and ``splitstream submit`` (one line).
  With the token, ``splitstream run --token-file`` and a job from ``ray job submit`` each run
  the demo stream to completion. The dashboard (plain HTTP) listens on the edge's loopback only, as
  secure mode requires, so jobs are submitted from the edge namespace;
- encryption: a tcpdump of the veth while those two demo streams and two known codec frames cross
  the secured cluster holds neither the frame magic ``SPLT``, nor any high-entropy 32-byte run of
  the known frames, nor the token. The same capture of a cluster with the token but no TLS holds
  all three, which shows the check can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from splitstream import security
from splitstream.cli import main
from splitstream.cluster_access import ClusterAccessError, probe_cluster, speaks_tls

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import netns_link  # noqa: E402

CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in netns_link.SECURE_VARS}


# ---------------------------------------------------------------------- the secrets directory
def _certs(*args: str) -> int:
    return main(["certs", *map(str, args)])


def _sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def test_certs_writes_a_secrets_directory_ray_can_use(tmp_path, capsys):
    out = tmp_path / "secrets"
    assert _certs(out, "--node", "edge=10.77.0.1", "--node", "cloud=10.77.0.2,cloud.example") == 0
    printed = capsys.readouterr().out
    assert "export RAY_USE_TLS=1" in printed and "export RAY_AUTH_MODE=token" in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for private in ("ca.key", "edge.key", "cloud.key", "token"):
        assert stat.S_IMODE((out / private).stat().st_mode) == 0o600, private
    assert len((out / "token").read_text()) == 64
    assert _sans(out / "edge.crt") == ["10.77.0.1", "localhost", "127.0.0.1"]
    assert _sans(out / "cloud.crt") == ["10.77.0.2", "cloud.example", "localhost", "127.0.0.1"]
    cert = x509.load_pem_x509_certificate((out / "cloud.crt").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usage} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    # the env file is exactly what a node needs, and it passes the client's checks
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in (out / "cloud.env").read_text().splitlines()
    )
    assert env == security.node_env(out, "cloud")
    assert security.check_environment(env) == []
    # the edge's key does not fit the cloud's certificate
    env["RAY_TLS_SERVER_KEY"] = str(out / "edge.key")
    assert "does not belong" in " ".join(security.check_environment(env))


def test_certs_adds_nodes_under_the_same_ca_and_token(tmp_path):
    out = tmp_path / "s"
    assert _certs(out, "--node", "edge=10.77.0.1") == 0
    ca, token = (out / "ca.crt").read_bytes(), (out / "token").read_bytes()
    assert _certs(out, "--node", "late=10.0.0.9") == 0
    assert (out / "ca.crt").read_bytes() == ca and (out / "token").read_bytes() == token
    security.check_node_cert(str(out / "late.crt"), str(out / "late.key"), str(out / "ca.crt"))


def test_certs_from_the_users_ca_never_copies_its_key(tmp_path, capsys):
    key, cert = security.make_ca(common_name="site CA")
    (tmp_path / "site.crt").write_bytes(security._pem_cert(cert))
    (tmp_path / "site.key").write_bytes(security._pem_key(key))
    out = tmp_path / "s"
    assert _certs(out, "--ca-cert", tmp_path / "site.crt", "--ca-key", tmp_path / "site.key",
                  "--node", "n1=192.0.2.7", "--no-token") == 0  # fmt: skip
    assert not (out / "ca.key").exists() and not (out / "token").exists()
    security.check_node_cert(str(out / "n1.crt"), str(out / "n1.key"), str(tmp_path / "site.crt"))
    assert "RAY_AUTH_MODE" not in (out / "n1.env").read_text()
    # another CA's key with this certificate: refused, named
    other, _ = security.make_ca()
    (tmp_path / "other.key").write_bytes(security._pem_key(other))
    assert _certs(tmp_path / "t", "--ca-cert", tmp_path / "site.crt", "--ca-key",
                  tmp_path / "other.key") == 2  # fmt: skip
    assert "does not belong" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "bad name"], "bad node name"),
        (["--node", "ca=10.0.0.1"], "bad node name"),
        (["--node", "n=10.0.0.1,bad_host!"], "bad address"),
        (["--ca-cert", "/nonexistent.crt"], "give both --ca-cert and --ca-key"),
        (["--days", "0"], "days must be >= 1"),
    ],
)
def test_certs_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    assert _certs(tmp_path / "s", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("certs: ") and message in err and "Traceback" not in err


def test_check_environment_names_what_cannot_work(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _certs(a, "--node", "n") == 0 and _certs(b, "--node", "n") == 0
    env = security.node_env(a, "n")
    env["RAY_TLS_CA_CERT"] = str(b / "ca.crt")  # a certificate from another CA
    assert "not issued by the CA" in " ".join(security.check_environment(env))
    assert "needs RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT" in " ".join(
        security.check_environment({"RAY_USE_TLS": "1"})
    )
    missing = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    assert "cannot read the token file" in " ".join(security.check_environment(missing))
    (tmp_path / "empty").write_text("\n")
    missing["RAY_AUTH_TOKEN_PATH"] = str(tmp_path / "empty")
    assert "is empty" in " ".join(security.check_environment(missing))
    assert security.check_environment({}) == []


# ---------------------------------------------------------------------- the client's checks
class _Server(threading.Thread):
    """One-connection-at-a-time local server: TLS (with a node certificate) or plain bytes."""

    def __init__(self, tls_dir: Path | None):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls_dir is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls_dir / "n.crt", tls_dir / "n.key")

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    if self.ctx is not None:
                        self.ctx.wrap_socket(conn, server_side=True).close()
                    else:  # what a plain HTTP/2 server sends first: an empty SETTINGS frame
                        conn.recv(1024)
                        conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                except (OSError, ssl.SSLError):
                    pass


@pytest.fixture
def servers(tmp_path):
    assert _certs(tmp_path / "s", "--node", "n") == 0
    tls, plain = _Server(tmp_path / "s"), _Server(None)
    tls.start(), plain.start()
    yield tls.port, plain.port, tmp_path / "s"
    tls.sock.close(), plain.sock.close()


def test_probe_tells_tls_from_plain_and_names_the_mismatch(servers):
    tls_port, plain_port, secrets = servers
    assert speaks_tls("127.0.0.1", tls_port) is True
    assert speaks_tls("127.0.0.1", plain_port) is False
    with pytest.raises(ClusterAccessError, match="requires TLS and this process has no TLS"):
        probe_cluster(f"127.0.0.1:{tls_port}", environ={})
    with pytest.raises(ClusterAccessError, match="does not use TLS, but RAY_USE_TLS is on"):
        probe_cluster(f"127.0.0.1:{plain_port}", environ=security.node_env(secrets, "n"))
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ClusterAccessError, match="cannot reach the Ray cluster"):
        probe_cluster(f"127.0.0.1:{port}", environ={})
    # addresses Ray resolves itself get the local checks only
    probe_cluster("auto", environ={})
    with pytest.raises(ClusterAccessError, match="needs RAY_TLS_SERVER_CERT"):
        probe_cluster("auto", environ={"RAY_USE_TLS": "1"})


def test_run_and_submit_fail_with_one_clear_line(tmp_path, capsys):
    assert main(["run", "--token-file", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--token-file: cannot read the token file") and "Traceback" not in err
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert main(["submit", "--address", f"http://127.0.0.1:{port}", "--", "true"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("submit: cannot reach the job server") and "Traceback" not in err
    # a driver for a cluster it cannot reach stops before loading its model
    assert main(["run", "--config", str(REPO / "configs" / "demo.yaml"),
                 "--address", f"127.0.0.1:{port}"]) == 3  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("cluster error: cannot reach the Ray cluster at") and "Traceback" not in err


# ---------------------------------------------------------------------- across the shaped link
_REASON = netns_link.netns_supported()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=f"shaped link: {_REASON}")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
DASHBOARD_PORT = 8265
SAMPLES = 16
DEMO = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", f"samples={SAMPLES}",
        "--set", "fidelity.reference_samples=0", "--set", "batching.max_batch_size=4"]  # fmt: skip

# Two known codec frames cross the link edge -> cloud as task arguments: one large enough to go
# through Ray's object store (> 100 KiB), one small enough to travel inline in the task.
PROBE = r"""
import sys, numpy as np, ray, codec
ray.init(address=sys.argv[1], log_to_driver=False)
rng = np.random.default_rng(7)
frames = [codec.encode(np.maximum(rng.standard_normal(shape), 0).astype(np.float32), bits=8)
          for shape in ((8, 32, 28, 28), (1, 16, 16, 16))]
@ray.remote(resources={"cloud": 1}, num_cpus=0)
def sizes(*blobs):
    return [len(b) for b in blobs]
assert ray.get(sizes.remote(*frames)) == [len(f) for f in frames]
open(sys.argv[2], "wb").write(b"".join(frames))
"""


def _prefix() -> str:
    return f"s{os.getpid() % 10000}"


def _ns_run(link, ns: str, argv: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run(link.exec_argv(ns, argv), env=netns_link.ray_env(env), cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _driver(address: str, json_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "splitstream", "run", *DEMO, "--address", address,
            "--set", "link.mode=real", "--no-progress", "--json", str(json_path), *extra]  # fmt: skip


def _windows(frames: bytes, size: int = 32, step: int = 64) -> list[bytes]:
    """High-entropy runs of the frames: ones a capture could not hold by chance (runs of zeros or
    of a few symbol values, which padding and other traffic also contain, are left out)."""
    runs = (frames[i : i + size] for i in range(0, len(frames) - size, step))
    return [r for r in runs if len(set(r)) >= size // 2]


def _submit_demo(link, token_file: str, out: Path) -> dict:
    """``ray job submit`` with the token, on the head: the demo stream as a job; its report."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}
    argv = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD_PORT}", "--",
            *_driver(f"{netns_link.EDGE_IP}:{netns_link.RAY_PORT}", out)]  # fmt: skip
    proc = _ns_run(link, link.edge, argv, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _captured_run(link, address: str, secrets: str, tls: bool, tmp: Path, job: bool) -> dict:
    """Capture the veth while the probe frames, the demo stream from a driver given the token with
    ``--token-file`` and (``job``) the demo stream as a job submitted with the token cross it."""
    frames_path, token_file = tmp / "frames.bin", str(Path(secrets) / "token")
    side = netns_link.secure_env(secrets, "edge", tls)
    without_token = {k: v for k, v in side.items() if not k.startswith("RAY_AUTH")}
    reports = []
    with link.capture(tmp / "veth.pcap") as cap:
        probe = _ns_run(link, link.edge, [sys.executable, "-c", PROBE, address, str(frames_path)],
                        side)  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-3000:]
        driver = _driver(address, tmp / "driver.json", "--token-file", token_file)
        proc = _ns_run(link, link.edge, driver, without_token)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports.append(json.loads((tmp / "driver.json").read_text()))
        if job:
            reports.append(_submit_demo(link, token_file, tmp / "job.json"))
    for report in reports:  # every run delivered the whole stream, the tail across the link
        assert report["delivered"] == SAMPLES and report["lost"] == 0, report
        assert report["duplicated"] == 0
        assert {p["ip"] for p in report["stages"]["tail"]["placement"]} == {netns_link.CLOUD_IP}
    data, frames = cap.data(), frames_path.read_bytes()
    windows = _windows(frames)
    assert len(windows) > 1000
    return {
        "bytes": len(data),
        "stream_bytes": sum(r["wire_bytes"] for r in reports) + len(frames),
        "magic": data.count(b"SPLT"),
        "runs_found": sum(w in data for w in windows) / len(windows),
        "token_seen": Path(token_file).read_bytes() in data,
    }


@pytest.mark.root
@needs_netns
@needs_tcpdump
def test_capture_without_tls_shows_frames_and_token(tmp_path):
    # token authentication alone: the same capture as the secured one below, which must fail here
    link = netns_link.NetnsLink(4.0, prefix=_prefix())
    with link:
        secrets = netns_link.make_secrets(tmp_path / "secrets")
        address = netns_link.start_ray(link, str(tmp_path / "logs"), secrets=secrets, tls=False)
        seen = _captured_run(link, address, secrets, tls=False, tmp=tmp_path, job=False)
    assert seen["bytes"] > seen["stream_bytes"]
    assert seen["magic"] >= 2, seen  # the probe frames' and the stream's
    assert seen["runs_found"] > 0.9, seen
    assert seen["token_seen"], seen


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Ray on both sides of the shaped link in secure mode (token + TLS), the dashboard on the edge's
    loopback."""
    if _REASON is not None:
        pytest.skip(f"shaped link: {_REASON}")
    tmp = tmp_path_factory.mktemp("secured")
    link = netns_link.NetnsLink(4.0, prefix=_prefix())
    with link:
        secrets = netns_link.make_secrets(tmp / "secrets")
        address = netns_link.start_ray(
            link, str(tmp / "logs"), secrets=secrets, dashboard_port=DASHBOARD_PORT
        )
        yield link, address, secrets


@pytest.mark.root
@needs_netns
def test_secure_mode_refuses_strangers(secured, tmp_path):
    link, address, secrets = secured
    edge = netns_link.secure_env(secrets, "edge")
    tls_only = {k: v for k, v in edge.items() if not k.startswith("RAY_AUTH")}
    token_file = str(Path(secrets) / "token")
    (tmp_path / "wrong").write_text("0" * 64)

    # a certificate for the right address from another CA
    stranger = netns_link.secure_env(netns_link.make_secrets(tmp_path / "other"), "edge")
    stranger = {k: v for k, v in stranger.items() if not k.startswith("RAY_AUTH")}

    # a driver without the token, with a wrong one, without TLS or with a certificate the cluster
    # does not trust: refused in one line
    for env, extra, message in (
        (tls_only, [], "requires token authentication"),
        (tls_only, ["--token-file", str(tmp_path / "wrong")], "refused this process's token"),
        ({}, ["--token-file", token_file], "requires TLS and this process has no TLS"),
        (stranger, ["--token-file", token_file], "the TLS handshake with the Ray cluster at"),
    ):
        proc = _ns_run(link, link.edge, _driver(address, tmp_path / "x.json", *extra), env)
        assert proc.returncode == 3, proc.stderr[-3000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "x.json").exists()

    # the job API is not reachable across the link at all ...
    with pytest.raises(RuntimeError, match="did not open"):
        link.wait_port(link.cloud, netns_link.EDGE_IP, DASHBOARD_PORT, timeout=1)
    # ... and on the head, a job submission without the token is refused
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    proc = _ns_run(link, link.edge, [ray_bin, "job", "submit", "--address", dashboard, "--no-wait",
                                     "--", "true"], {})  # fmt: skip
    assert proc.returncode != 0 and "Authentication required" in proc.stderr, proc.stderr[-3000:]
    submit = [sys.executable, "-m", "splitstream", "submit", "--address", dashboard, "--timeout", "240"]
    proc = _ns_run(link, link.edge, [*submit, "--", "true"], {})
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith("submit: the job server at") and "requires the cluster's token" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    # with the token, `splitstream submit` runs a job whose driver joins the cluster with the
    # head's token and certificate
    count = "import ray; ray.init(); print('nodes', len(ray.nodes()))"
    proc = _ns_run(link, link.edge, [*submit, "--token-file", token_file, "--", sys.executable,
                                     "-c", count], {})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nodes 2" in proc.stdout and "SUCCEEDED" in proc.stdout


@pytest.mark.root
@needs_netns
@needs_tcpdump
def test_secure_mode_runs_the_demo_with_the_token_and_hides_it_on_the_wire(secured, tmp_path):
    # `splitstream run --token-file` and `ray job submit` with the token both run the demo
    # stream to completion; the capture of all of it shows nothing readable
    link, address, secrets = secured
    seen = _captured_run(link, address, secrets, tls=True, tmp=tmp_path, job=True)
    assert seen["bytes"] > seen["stream_bytes"]  # the traffic was captured ...
    assert seen["magic"] == 0, seen  # ... and none of it is readable
    assert seen["runs_found"] == 0, seen
    assert not seen["token_seen"], seen


def test_cost_benchmark_summary_pairs_each_round_with_mode_off():
    from benchmarks import security as bench

    def run(rnd: int, secure: str, payload: float) -> dict:
        return {"round": rnd, "codec": "fp32", "secure": secure, "throughput_sps": 7.0,
                "latency_p50_ms": 1.0, "latency_p99_ms": 2.0, "tc_wire_mbps": 4.0,
                "payload_share": payload / 4.0, "payload_goodput_mbps": payload,
                "goodput_mbps": payload, "lost": 0, "duplicated": 0}  # fmt: skip

    # round 1 ran slower for every mode: per-round ratios cancel it
    runs = [run(0, "off", 3.8), run(0, "tls", 3.7), run(1, "off", 1.9), run(1, "tls", 1.85)]
    rows = {r["secure"]: r for r in bench.summarize(runs)}
    assert rows["off"]["payload_vs_off"] == 1.0 and rows["off"]["runs"] == 2
    assert rows["tls"]["payload_vs_off"] == pytest.approx(3.7 / 3.8, rel=1e-3)
    assert rows["tls"]["payload_goodput_mbps"] == pytest.approx((3.7 + 1.85) / 2)
    text = bench.render_tables({"rows": list(rows.values())})["security"]
    assert "| fp32 | tls | 2 |" in text and "payload vs off" in text
