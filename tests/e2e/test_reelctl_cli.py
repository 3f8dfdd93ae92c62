"""reelctl as a whole: help for every command and subcommand, --addr forms,
--timeout durations."""
import subprocess

import pytest

from conftest import REELCTL, Reeld, reelctl


def run(*args, env=None):
    return subprocess.run([REELCTL] + list(args), capture_output=True, text=True, timeout=30,
                          env=env)


def test_help_for_one_subcommand(reeld):
    want = "usage: reelctl [GLOBAL FLAGS] kv set NAMESPACE KEY VALUE [--create] " \
           "[--if-version N] [--writer NAME] [-q]\n"
    for args in (["kv", "set", "--help"], ["help", "kv", "set"], ["kv", "set", "-h"],
                 ["kv", "--json", "set", "app", "k", "--help"]):
        r = run(*args)
        assert r.returncode == 0 and r.stderr == "", (args, r.stderr)
        assert r.stdout.startswith(want), (args, r.stdout)
        assert "standard input" in r.stdout and "run begin" not in r.stdout, (args, r.stdout)
    r = run("help", "run", "recoverable")
    assert r.returncode == 0 and "run recoverable [--app APP] [--limit N]" in r.stdout, r.stdout
    r = run("events", "tail", "--help")
    assert r.returncode == 0 and "head -3" in r.stdout, r.stdout
    r = run("health", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: reelctl [GLOBAL FLAGS] health "
                                                     "[SERVICE]\n"), r.stdout


def test_help_for_a_group_and_for_everything():
    for args in (["help", "signal"], ["signal", "--help"]):
        r = run(*args)
        assert r.returncode == 0, (args, r.stderr)
        for sub in ("send", "await", "ls", "cancel"):
            assert f"\n  signal {sub} " in r.stdout, (args, r.stdout)
        assert "kv set" not in r.stdout
    for args in (["help"], ["--help"], ["-h"]):
        r = run(*args)
        assert r.returncode == 0 and r.stdout.startswith("usage: reelctl "), (args, r.stdout)
        for line in ("kv watch", "run recoverable", "journal follow", "signal await",
                     "events rm-consumer", "reelctl help [COMMAND [SUBCOMMAND]]",
                     "--addr HOST[:PORT]"):
            assert line in r.stdout, (args, line)


def test_help_for_what_does_not_exist_is_a_usage_error():
    for args, says in ((["help", "frob"], 'unknown command "frob"'),
                       (["help", "kv", "frob"], 'kv has no subcommand "frob"'),
                       (["kv", "frob", "--help"], 'kv has no subcommand "frob"'),
                       (["help", "health", "x"], "health has no subcommands")):
        r = run(*args)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
        assert r.stdout == ""


def test_addr_without_a_port_dials_7878(tmp_path):
    # 127.0.0.2 is loopback too, and no test's reeld listens on it.
    server = Reeld(str(tmp_path / "data"))
    server.port, server.addr = 7878, "127.0.0.2:7878"
    try:
        server.start(timeout=5)
    except AssertionError as e:
        server.kill()
        pytest.skip(f"cannot serve on 127.0.0.2:7878 here: {e}")
    try:
        r = run("--addr", "127.0.0.2", "health")
        assert r.returncode == 0 and r.stdout == "SERVING\n", r.stderr
        r = run("--addr", "[::1]", "--timeout", "1s", "health")
        assert "[::1]:7878" in r.stderr or r.returncode == 0, r.stderr
        r = run("health", env={"REEL_ADDR": "127.0.0.2"})
        assert r.returncode == 0 and r.stdout == "SERVING\n", r.stderr
    finally:
        code, _ = server.stop()
    assert code == 0, server.log()


def test_malformed_addr_is_a_usage_error():
    for addr, says in (("127.0.0.1:", "is not HOST, HOST:PORT or [IPv6]:PORT"),
                       ("127.0.0.1:0", "port 1-65535"),
                       ("127.0.0.1:70000", "port 1-65535"),
                       ("h:x", "is not HOST"),
                       (":7878", "is not HOST"),
                       ("", "is not HOST"),
                       ("::1", "write an IPv6 address in brackets"),
                       ("[::1", "is not HOST"),
                       ("[::1]:", "is not HOST"),
                       # A DNS failure for ever, before: said as what it is.
                       ("http://127.0.0.1:7000", 'is a URL: write HOST:PORT, without '
                                                 'the scheme ("127.0.0.1:7000")'),
                       ("7000", 'is a port alone: write HOST:PORT ("127.0.0.1:7000" '
                                'on this machine)')):
        r = run("--addr", addr, "health")
        assert r.returncode == 2 and says in r.stderr, (addr, r.stderr)
        assert "--addr" in r.stderr
    r = run("health", env={"REEL_ADDR": "h:0"})
    assert r.returncode == 2 and "REEL_ADDR" in r.stderr, r.stderr


def test_timeout_takes_hours_and_refuses_what_is_not_a_duration(reeld):
    for t in ("1h", "1d", "1.5s", "250ms", "2000"):
        r = reelctl(reeld.addr, "--timeout", t, "health")
        assert r.returncode == 0, (t, r.stderr)
    for t in ("0", "-1s", "1w", "+5s", " 5s", "0x10s", "nan", "inf", "5 s", "s"):
        r = reelctl(reeld.addr, "--timeout", t, "health")
        assert r.returncode == 2 and "--timeout" in r.stderr, (t, r.stderr)


def test_every_paged_list_takes_all_with_limit(reeld, tmp_path):
    """--limit N prints one page and says how to go on; with --all, every
    page, N at a time: kv ls and history, run ls and recoverable, signal
    ls, ws ls (events consumers always lists every page)."""
    def ctl(*args):
        r = reelctl(reeld.addr, *args)
        assert r.returncode == 0, (args, r.stderr)
        return r

    for v in range(3):
        ctl("kv", "set", "pg", "k", str(v))
        ctl("kv", "set", "pg", f"k{v}", "1")
    runs = [ctl("run", "begin", "pgapp", "u", "s", f"i{i}", "--owner", "w", "--ttl", "1s",
                "-q").stdout.strip() for i in range(3)]
    for i in range(3):
        ctl("signal", "send", runs[0], "go", str(i))
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for k in ("a", "b", "c"):
        ctl("ws", "put", "pgws", k, str(src))
    import time
    time.sleep(1.5)                          # the leases expire: recoverable

    for cmd, n in ((["kv", "ls", "pg"], 4), (["kv", "history", "pg", "k"], 3),
                   (["run", "ls", "--app", "pgapp"], 3),
                   (["run", "recoverable", "--app", "pgapp"], 3),
                   (["signal", "ls", runs[0]], 3), (["ws", "ls", "pgws"], 3)):
        one = ctl(*cmd, "--limit", "1")
        assert len(one.stdout.splitlines()) == 1, (cmd, one.stdout)
        assert "--all" in one.stderr, (cmd, one.stderr)
        every = ctl(*cmd, "--limit", "1", "--all")
        assert len(every.stdout.splitlines()) == n, (cmd, every.stdout)
        assert every.stderr == "", (cmd, every.stderr)
        assert every.stdout == ctl(*cmd).stdout, cmd
