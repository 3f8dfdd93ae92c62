"""reelctl at its edges: empty input, nothing to claim, bytes that would
drive a terminal, flags whose zero means nothing, a port that never
answers."""
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import REELCTL, Reeld, reelctl


def run_in(addr, stdin, *args):
    return subprocess.run([REELCTL, "--addr", addr] + list(args), input=stdin,
                          capture_output=True, timeout=30)


def test_empty_standard_input_is_not_a_result_or_a_payload(reeld):
    a = reeld.addr
    rid = reelctl(a, "run", "begin", "app", "e", "s", "i", "--owner", "w", "-q").stdout.strip()
    # A producer that died before writing: neither ends the run nor sends.
    for stdin in (b"", b"  \n\t"):
        r = run_in(a, stdin, "run", "end", rid, "--epoch", "1", "--status", "completed",
                   "--result", "-")
        assert r.returncode == 1 and b"--result: standard input held no JSON" in r.stderr, r
        r = run_in(a, stdin, "signal", "send", rid, "go", "-")
        assert r.returncode == 1 and b"PAYLOAD_JSON: standard input held no JSON" in r.stderr, r
    assert "RUNNING" in reelctl(a, "run", "get", rid).stdout
    r = reelctl(a, "signal", "ls", rid)
    assert r.returncode == 0 and r.stdout == "", r
    # "null" is how to say "none".
    r = run_in(a, b"null\n", "run", "end", rid, "--epoch", "1", "--status", "completed",
               "--result", "-")
    assert r.returncode == 0 and b"COMPLETED" in r.stdout, r


def test_claim_next_finding_nothing_prints_null_in_json(reeld):
    r = reelctl(reeld.addr, "--json", "run", "claim-next", "nobody", "--owner", "w",
                "--wait", "100ms")
    assert r.returncode == 0 and r.stdout == "null\n", (r.stdout, r.stderr)
    r = reelctl(reeld.addr, "run", "claim-next", "nobody", "--owner", "w")
    assert r.returncode == 0 and r.stdout == "" and "no run of this app" in r.stderr, r


def test_control_bytes_of_a_key_never_reach_the_terminal(reeld):
    a = reeld.addr
    key = "evil\x1b]0;pwned\x07\x1b[31mRED"
    for args in (["kv", "set", "esc", key, "1"], ["kv", "set", "esc", key, "2", "--create"],
                 ["kv", "del", "esc", key], ["kv", "get", "esc", key],
                 ["kv", "del", "esc", key]):
        r = subprocess.run([REELCTL, "--addr", a] + args, capture_output=True, timeout=30)
        out = r.stdout + r.stderr
        assert b"\x1b" not in out and b"\x07" not in out, (args, out)
        assert b"evil\\x1b]0;pwned\\x07" in out, (args, out)


def test_flags_whose_zero_or_emptiness_means_nothing_are_usage_errors(reeld, tmp_path):
    a = reeld.addr
    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    assert reelctl(a, "ws", "put", "docs", "f", str(f)).returncode == 0
    r = reelctl(a, "ws", "get", "docs", "f", "--length", "0")
    assert r.returncode == 2 and "--length: at least 1" in r.stderr, r
    r = reelctl(a, "ws", "get", "docs", "f", "-o", "")
    assert r.returncode == 2 and "--output: an empty file name" in r.stderr, r
    r = subprocess.run([REELCTL, "--addr", a, "ws", "get", "docs", "f", "--offset", "8",
                        "--length", "1"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"8", r
    # Options the client refuses are the command line's: exit 2.
    r = reelctl(a, "--tls-cert", str(f), "health")
    assert r.returncode == 2 and "go together" in r.stderr, r
    r = reelctl(a, "--token", "bad\nvalue", "health")
    assert r.returncode == 2 and "--token" in r.stderr, r


def test_not_json_that_is_not_utf8_gets_no_quoting_hint(reeld):
    r = subprocess.run([REELCTL, "--addr", reeld.addr, "kv", "set", "ns", "k",
                        b"\xff\xfe"], capture_output=True, timeout=30)
    assert r.returncode == 1 and b"UTF-8" in r.stderr, r
    assert b"did you mean" not in r.stderr, r
    r = reelctl(reeld.addr, "kv", "set", "ns", "k", "word")
    assert r.returncode == 1 and "did you mean '\"word\"'?" in r.stderr, r


def test_timeout_bounds_a_streams_connection_to_a_port_that_never_answers():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # and never says a word
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    addr = "127.0.0.1:%d" % srv.getsockname()[1]
    try:
        for args in (["kv", "watch", "ns", "k"], ["events", "tail"],
                     ["ws", "get", "docs", "f"]):
            t0 = time.monotonic()
            r = reelctl(addr, "--timeout", "1s", *args)
            took = time.monotonic() - t0
            assert r.returncode == 1 and "UNAVAILABLE" in r.stderr, (args, r.stderr)
            # Before, 20 s (the library's default connect timeout).
            assert took < 10, (args, took)
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


def test_a_stream_whose_server_dies_says_so_not_tls(tmp_path):
    server = Reeld(str(tmp_path / "data")).start()
    try:
        proc = subprocess.Popen([REELCTL, "--addr", server.addr, "kv", "watch", "ns", "k"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Connected: its bootstrap marker is printed.
        assert proc.stdout.readline() != ""
        server.stop(sig=signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1 and "UNAVAILABLE" in err, err
        assert "did reeld stop?" in err and "--tls-ca" not in err, err
    finally:
        server.stop()


def test_a_subcommands_flag_before_the_command_is_named_a_flag(reeld):
    r = reelctl(reeld.addr, "-q", "kv", "get", "ns", "k")
    assert r.returncode == 2 and 'unknown flag "-q" before the command' in r.stderr, r
    r = reelctl(reeld.addr, "frob")
    assert r.returncode == 2 and 'unknown command "frob"' in r.stderr, r


def test_an_interrupted_download_leaves_no_temporary_file(reeld, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(64 << 20))
    assert reelctl(reeld.addr, "ws", "put", "docs", "big", str(big), timeout=120).returncode == 0
    out = tmp_path / "out"
    out.write_bytes(b"old\n")
    interrupted = 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([REELCTL, "--addr", reeld.addr, "ws", "get", "docs", "big",
                                 "-o", str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob(".out.reel-*")):  # the download has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.005)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode in (-sig, 0), proc.returncode
        if proc.returncode == 0:  # it finished first: the file was replaced
            continue
        assert list(tmp_path.glob(".out.reel-*")) == [], sig
        assert out.read_bytes() == b"old\n"
        interrupted += 1
    assert interrupted > 0, "every download finished before its signal"
