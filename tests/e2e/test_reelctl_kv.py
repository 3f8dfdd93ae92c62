"""reelctl kv against a real reeld: the README's examples, exit codes, --json."""
import json
import subprocess
import time

from conftest import REELCTL, reelctl


def ok(addr, *args):
    r = reelctl(addr, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_readme_cas_walkthrough(reeld):
    a = reeld.addr
    assert "version 1" in ok(a, "kv", "set", "app", "config", '{"mode":"fast"}', "--create")
    assert "version 2" in ok(a, "kv", "set", "app", "config", '{"mode":"safe"}', "--if-version", "1")
    r = reelctl(a, "kv", "set", "app", "config", '{"mode":"x"}', "--if-version", "1")
    assert r.returncode == 1
    assert "ABORTED" in r.stderr and "current version 2" in r.stderr
    r = reelctl(a, "kv", "set", "app", "config", '{"mode":"x"}', "--create")
    assert r.returncode == 1
    assert "ALREADY_EXISTS" in r.stderr and "current version 2" in r.stderr, r.stderr
    assert ok(a, "kv", "get", "app", "config").strip() == '{"mode":"safe"}'
    assert "version 3" in ok(a, "kv", "del", "app", "config")
    r = reelctl(a, "kv", "get", "app", "config")
    assert r.returncode == 1 and "deleted at version 3" in r.stderr
    hist = ok(a, "kv", "history", "app", "config").splitlines()
    assert len(hist) == 3 and "DELETE" in hist[2]


def test_json_output_and_listing(reeld):
    a = reeld.addr
    out = json.loads(ok(a, "--json", "kv", "set", "app", "orders.eu.1", '{"qty":2}'))
    assert out["value"] == {"qty": 2} and out["version"] == 1 and out["prev_version"] == 0
    ok(a, "kv", "set", "app", "orders.us.1", "3")
    ok(a, "kv", "set", "app", "zeta", "true")
    lines = ok(a, "kv", "ls", "app", "orders.", "--json").splitlines()
    assert [json.loads(l)["key"] for l in lines] == ["orders.eu.1", "orders.us.1"]
    lines = ok(a, "kv", "ls", "app", "--limit", "1", "--all").splitlines()
    assert len(lines) == 3


def test_usage_errors_exit_2(reeld):
    for args in (["kv", "set", "app", "k"], ["kv", "set", "app", "k", "1", "--if-version", "x"],
                 ["kv", "set", "app", "k", "1", "--create", "--if-version", "1"], ["kv", "frob"]):
        r = reelctl(reeld.addr, *args)
        assert r.returncode == 2, (args, r.stderr)


def test_bad_value_is_reported_with_the_field(reeld):
    r = reelctl(reeld.addr, "kv", "set", "app", "k", "{bad")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "value" in r.stderr


def test_watch_prints_one_line_per_event_until_interrupted(reeld, tmp_path):
    out = open(tmp_path / "watch.out", "w")
    proc = subprocess.Popen([REELCTL, "--addr", reeld.addr, "--json", "kv", "watch", "app", "orders.>"],
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        ok(reeld.addr, "kv", "set", "app", "orders.1", '{"n":1}')
        ok(reeld.addr, "kv", "set", "app", "orders.1", '{"n":2}')
        ok(reeld.addr, "kv", "set", "app", "other", "1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = (tmp_path / "watch.out").read_text().splitlines()
            if len(lines) >= 3:
                break
            time.sleep(0.05)
        events = [json.loads(l) for l in lines]
        assert [e["type"] for e in events] == ["BOOTSTRAP_DONE", "PUT", "PUT"]
        assert events[2]["value"] == {"n": 2} and events[2]["prev_value"] == {"n": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        out.close()


def watch_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines()
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    return path.read_text().splitlines()


def test_watch_of_several_keys_shares_one_stream(reeld, tmp_path):
    a = reeld.addr
    for fmt, app in (("--json", "j"), (None, "t")):
        ok(a, "kv", "set", app, "flag", "true")
        path = tmp_path / f"watch-{fmt}.out"
        out = open(path, "w")
        args = [REELCTL, "--addr", a] + ([fmt] if fmt else []) + \
            ["kv", "watch", app, "flag", "orders.>", "missing"]
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            # The current value of flag, then each watch's BOOTSTRAP_DONE.
            lines = watch_lines(path, 4)
            ok(a, "kv", "set", app, "orders.eu.1", '{"n":1}')
            ok(a, "kv", "set", app, "unwatched", "1")
            ok(a, "kv", "set", app, "flag", "false")
            lines = watch_lines(path, 6)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            out.close()
        assert len(lines) == 6, lines
        # Each watch bootstraps on its own, so the first four lines may
        # interleave; what follows is live, in commit order.
        if fmt:
            ev = [json.loads(l) for l in lines]
            boot = sorted(e["watch"] for e in ev[:4] if e["type"] == "BOOTSTRAP_DONE")
            assert boot == ["flag", "missing", "orders.>"], ev
            cur = [e for e in ev[:4] if e["type"] == "PUT"]
            assert [(e["watch"], e["key"], e["value"]) for e in cur] == [("flag", "flag", True)]
            assert (ev[4]["watch"], ev[4]["key"], ev[4]["value"]) == ("orders.>", "orders.eu.1", {"n": 1})
            assert (ev[5]["watch"], ev[5]["value"], ev[5]["prev_value"]) == ("flag", False, True)
        else:
            boot = sorted(l.split()[1] for l in lines[:4] if l.startswith("BOOTSTRAP_DONE "))
            assert boot == ["flag", "missing", "orders.>"], lines
            puts = [l for l in lines[:4] if l.startswith("PUT ")]
            assert len(puts) == 1 and puts[0].startswith("PUT t/flag v1 ") and \
                puts[0].endswith(": true"), lines
            assert lines[4].startswith("PUT t/orders.eu.1 v1 "), lines
            assert lines[5].startswith("PUT t/flag v2 ") and "(was v1: true)" in lines[5], lines
