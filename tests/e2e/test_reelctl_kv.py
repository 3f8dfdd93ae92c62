"""reelctl kv against a real reeld: the README's examples, exit codes, --json."""
import json
import re
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


def test_a_value_past_reelds_message_limit_says_whose_limit(reeld, tmp_path):
    """A 5 MiB value passes reeld's message limit (4 MiB) before its value
    rule (1 MiB): reelctl says so as INVALID_ARGUMENT naming the limit, not
    gRPC's bare 'Received message larger than max'."""
    big = tmp_path / "big.json"
    big.write_text('"' + "x" * (5 << 20) + '"')
    r = reelctl(reeld.addr, "kv", "set", "app", "k", f"@{big}")
    assert r.returncode == 1, r.stderr
    assert re.match(r"reelctl: kv set: INVALID_ARGUMENT: request: 52428\d\d bytes, more "
                    r"than reeld takes in one message \(its --max-message-bytes\), at "
                    r"most 4194304; .*workspace artifact\n$", r.stderr), r.stderr
    assert reelctl(reeld.addr, "kv", "get", "app", "k").returncode == 1


def test_watch_prints_one_line_per_event_until_interrupted(reeld, tmp_path):
    out = open(tmp_path / "watch.out", "w")
    proc = subprocess.Popen([REELCTL, "--addr", reeld.addr, "--json", "kv", "watch", "app", "orders.>"],
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        # The watch is in place (its bootstrap printed) before the writes.
        deadline = time.monotonic() + 10
        while not (tmp_path / "watch.out").read_text().endswith("\n"):
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "watch.out").read_text()
            time.sleep(0.02)
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
            # Each line names its watch.
            boot = sorted(l.split()[0] for l in lines[:4] if " BOOTSTRAP_DONE " in l)
            assert boot == ["[flag]", "[missing]", "[orders.>]"], lines
            puts = [l for l in lines[:4] if " PUT " in l]
            assert len(puts) == 1 and puts[0].startswith("[flag] PUT t/flag v1 ") and \
                puts[0].endswith(": true"), lines
            assert lines[4].startswith("[orders.>] PUT t/orders.eu.1 v1 "), lines
            assert lines[5].startswith("[flag] PUT t/flag v2 ") and \
                "(was v1: true)" in lines[5], lines


# JSON that a double cannot carry: integers past 2^53, a sum that prints
# shorter when rounded, an overflow, a negative zero, a denormal underflow,
# nested containers and escapes (including a surrogate pair), with spaces.
STORED = (r'[9007199254740993, 1234567890123456789, 0.30000000000000004, 1e999, -0.0, '
          r'{"deep": {"n": 1.0e-400, "s": "\u00e9\ud83d\ude00 \"q\" \\ \n"}}, []]')
STORED2 = r'{"big": -18446744073709551617, "x": 1E+2}'


def test_json_output_embeds_stored_values_byte_for_byte(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "app", "n", STORED)
    out = ok(a, "--json", "kv", "set", "app", "n", STORED2)
    assert f'"value":{STORED2},' in out, out
    for args in (["kv", "get", "app", "n"], ["kv", "ls", "app"]):
        out = ok(a, "--json", *args)
        assert f'"value":{STORED2},' in out, (args, out)
        assert json.loads(out.splitlines()[0])  # still JSON, one object per line
    hist = ok(a, "--json", "kv", "history", "app", "n").splitlines()
    assert f'"value":{STORED},' in hist[0] and f'"prev_value":{STORED},' in hist[1], hist
    assert f'"value":{STORED2},' in hist[1], hist
    got = json.loads(hist[0])["value"]
    assert got[0] == 9007199254740993 and got[1] == 1234567890123456789
    assert repr(got[2]) == "0.30000000000000004" and got[3] == float("inf")
    assert got[5]["deep"]["s"] == 'é😀 "q" \\ \n'

    proc = subprocess.Popen([REELCTL, "--addr", a, "--json", "kv", "watch", "app", "n",
                             "--from-version", "0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.kill()
        proc.wait()
    assert f'"value":{STORED},' in lines[0], lines
    assert f'"value":{STORED2},' in lines[1] and f'"prev_value":{STORED},' in lines[1], lines
    assert '"type":"BOOTSTRAP_DONE"' in lines[2], lines


def test_text_output_prints_each_value_on_one_line(reeld, tmp_path):
    a = reeld.addr
    spread = '{\n  "a": [1,\r\n    2],\n  "b": "x"\n}'
    flat = spread.replace("\r", " ").replace("\n", " ")
    ok(a, "kv", "set", "app", "k", spread)
    ok(a, "kv", "set", "app", "k", spread + "\n")
    assert ok(a, "kv", "get", "app", "k") == flat + " \n"
    assert ok(a, "kv", "ls", "app").splitlines() == [f"k = {flat}  (version 2)"]
    hist = ok(a, "kv", "history", "app", "k").splitlines()
    assert len(hist) == 2 and hist[1].startswith(f"v2 PUT {flat}  (prev v1: {flat}) rev "), hist
    # The JSON output holds the value as stored but for the line breaks.
    assert f'"value":{flat} ,' in ok(a, "--json", "kv", "get", "app", "k")


def test_set_says_the_version_not_the_value(reeld, tmp_path):
    a = reeld.addr
    big = json.dumps({"blob": "x" * 200000})
    # 200 kB is over what one argument may hold: the value comes from stdin.
    r = subprocess.run([REELCTL, "--addr", a, "kv", "set", "app", "big", "-"], input=big,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"set app/big version 1 \(revision \d+\)\n", r.stdout), r.stdout[:200]
    assert ok(a, "kv", "get", "app", "big") == big + "\n"
    assert ok(a, "kv", "set", "app", "big", "2", "-q") == "2\n"
    entry = json.loads(ok(a, "--json", "kv", "set", "app", "big", "3"))
    assert entry["value"] == 3 and entry["version"] == 3 and entry["prev_version"] == 2
    r = reelctl(a, "--json", "kv", "set", "app", "big", "4", "-q")
    assert r.returncode == 2 and "--quiet and --json" in r.stderr, r.stderr


def test_values_from_a_file_and_standard_input(reeld, tmp_path):
    a = reeld.addr
    path = tmp_path / "v.json"
    path.write_text(STORED + "\n\n")  # the file's newlines are not the value's
    ok(a, "kv", "set", "app", "f", f"@{path}")
    assert f'"value":{STORED},' in ok(a, "--json", "kv", "get", "app", "f")
    r = subprocess.run([REELCTL, "--addr", a, "kv", "set", "app", "s", "-", "--create"],
                       input="[1,2]\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert ok(a, "kv", "get", "app", "s") == "[1,2]\n"

    r = reelctl(a, "kv", "set", "app", "f", f"@{tmp_path}/missing.json")
    assert r.returncode == 1 and "missing.json" in r.stderr and "No such file" in r.stderr
    r = reelctl(a, "kv", "set", "app", "f", "@")
    assert r.returncode == 2 and "@FILE" in r.stderr, r.stderr
    # Nothing was written by either.
    assert '"version":1' in ok(a, "--json", "kv", "get", "app", "f")


def test_a_bare_word_gets_a_hint(reeld):
    r = reelctl(reeld.addr, "kv", "set", "app", "k", "hello")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr
    assert "did you mean '\"hello\"'?" in r.stderr, r.stderr
    r = reelctl(reeld.addr, "kv", "set", "app", "k", "{bad")
    assert r.returncode == 1 and "did you mean" not in r.stderr, r.stderr


def test_create_on_an_existing_key_names_the_key_and_version(reeld):
    a = reeld.addr
    ok(a, "kv", "set", "app", "once", "1", "--create")
    r = reelctl(a, "kv", "set", "app", "once", "2", "--create")
    # The code is the server's (ALREADY_EXISTS, as the README's table says);
    # reelctl prints it and the server's message as they are.
    assert r.returncode == 1 and r.stdout == ""
    assert re.match(r'^reelctl: kv set: [A-Z_]+: .*"once".*already exists.*1', r.stderr), r.stderr


def test_watch_lines_name_their_watch(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "app", "flag", "true")
    # Both watches match flag: without their names the lines are the same.
    proc = subprocess.Popen([REELCTL, "--addr", a, "kv", "watch", "app", "flag", "*", "--now"],
                            stdout=subprocess.PIPE, text=True)
    try:
        boot = sorted(proc.stdout.readline() for _ in range(2))
        assert [l.split()[:2] for l in boot] == [["[*]", "BOOTSTRAP_DONE"],
                                                 ["[flag]", "BOOTSTRAP_DONE"]], boot
        ok(a, "kv", "set", "app", "flag", "false")
        got = sorted(proc.stdout.readline() for _ in range(2))
    finally:
        proc.kill()
        proc.wait()
    assert [l.split(" ", 1)[0] for l in got] == ["[*]", "[flag]"], got
    assert got[0].split(" ", 1)[1] == got[1].split(" ", 1)[1], got


def test_watch_ends_when_its_reader_leaves(reeld):
    a = reeld.addr
    ok(a, "kv", "set", "app", "k", "1")
    proc = subprocess.Popen([REELCTL, "--addr", a, "kv", "watch", "app", "k", "other"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline()
        proc.stdout.close()  # `| head -1`: nothing more will be read
        assert proc.wait(timeout=5) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_text_output_escapes_control_characters_in_names(reeld):
    """A key with a line break forged a line of `kv ls`, and one with an
    escape sequence drove the terminal; --json was always safe."""
    a = reeld.addr
    ok(a, "kv", "set", "app", 'nl\nfake = {"admin":true} (version 9)', "1")
    ok(a, "kv", "set", "app", "esc\x1b[31mred", "2")
    out = ok(a, "kv", "ls", "app")
    assert out.splitlines() == ["esc\\x1b[31mred = 2 (version 1)",
                                'nl\\x0afake = {"admin":true} (version 9) = 1 (version 1)']
    ok(a, "run", "begin", "shop", "u\n01AAAAAAAAAAAAAAAAAAAAAAAA COMPLETED x/y/z", "s", "i",
       "--owner", "w")
    lines = ok(a, "run", "ls").splitlines()
    assert len(lines) == 1 and "u\\x0a01AAAA" in lines[0], lines
    keys = [json.loads(x)["key"] for x in ok(a, "--json", "kv", "ls", "app").splitlines()]
    assert keys == ["esc\x1b[31mred", 'nl\nfake = {"admin":true} (version 9)']


class RefusingKV:
    """A stand-in for reeld's KV SetValue: answers each call with the next
    status of `answers` (None: OK), the last one for ever after, and counts
    the calls. reeld's own full queue cannot be made to refuse on cue."""

    def __init__(self, answers):
        import threading
        from concurrent import futures

        import grpc
        from reel.v1 import kv_pb2

        self.answers, self.calls, self.lock = list(answers), 0, threading.Lock()

        def set_value(req, context):
            with self.lock:
                answer = self.answers[min(self.calls, len(self.answers) - 1)]
                self.calls += 1
            if answer is not None:
                context.abort(*answer)
            return kv_pb2.SetValueResponse(entry=kv_pb2.Entry(
                namespace=req.namespace, key=req.key, value=req.value, version=1,
                revision=1))

        handler = grpc.method_handlers_generic_handler("reel.v1.KV", {
            "SetValue": grpc.unary_unary_rpc_method_handler(
                set_value, request_deserializer=kv_pb2.SetValueRequest.FromString,
                response_serializer=kv_pb2.SetValueResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.addr = f"127.0.0.1:{self.port}"

    def close(self):
        self.server.stop(0)


def test_a_write_refused_for_a_full_write_queue_is_sent_again():
    """reeld refuses a write its queue has no room for before writing
    anything ("write queue is full ...; retry later"), so reelctl sends it
    again after a backoff, as the Python client does, instead of failing a
    script that met a busy server. A queue that stays full fails once the
    attempts (5) are spent, with reeld's message; any other refusal, and
    UNAVAILABLE (the write may have been applied), is never sent again."""
    import grpc

    full = (grpc.StatusCode.RESOURCE_EXHAUSTED,
            "write queue is full (4096 requests waiting); retry later")
    tenant_full = (grpc.StatusCode.RESOURCE_EXHAUSTED,
                   "write queue is full for tenant acme (2 of its writes in flight, at "
                   "most 2: --write-queue-per-tenant); retry later")
    cases = [
        ([full, tenant_full, None], 0, 3, "version 1"),
        ([full], 1, 5, "RESOURCE_EXHAUSTED: write queue is full (4096 requests waiting)"),
        ([(grpc.StatusCode.RESOURCE_EXHAUSTED, "tenant acme has 3 calls open, at most 3 "
           "(--max-calls-per-tenant)"), None], 1, 1, "tenant acme has 3 calls open"),
        ([(grpc.StatusCode.UNAVAILABLE, "the server is shutting down"), None], 1, 1,
         "the server is shutting down"),
    ]
    for answers, code, calls, said in cases:
        kv = RefusingKV(answers)
        try:
            r = reelctl(kv.addr, "kv", "set", "app", "k", "1")
            assert r.returncode == code, (answers, r.stdout, r.stderr)
            assert said in (r.stdout if code == 0 else r.stderr), (answers, r.stdout, r.stderr)
            assert kv.calls == calls, (answers, kv.calls)
        finally:
            kv.close()
