"""README.md's examples, run as written, top to bottom, against a fresh reeld.

Every ```sh block of README.md is taken in order and its commands run in one
bash (so `RUN=$(...)` in one block is `$RUN` in the next), with `reelctl` on
PATH as the built binary, REEL_ADDR naming the test's reeld, and the
working directory holding `bazel-bin/cli/reelctl` too (the Quickstart's
`bazel-bin/cli/reelctl health` runs as written). Blocks that build, test or
start reeld (`scripts/...`, `bazel ...`, `reeld`, `/usr/bin/python3`,
`.ci/run`: the Quickstart's first block and "Building and testing by hand")
are skipped: the test has its own reeld and build.

The convention, which README.md states where the examples begin: a command
whose trailing comment starts with a gRPC status code and a colon,
`# ABORTED: ... expected version 1`, is shown failing on purpose: it must
exit non-zero with that code on stderr. Every other command must exit 0.
Pipelines count their every command (`set -o pipefail`), so
`reelctl events tail | head -3` passes only if reelctl ends cleanly once
head has its lines. A command ending in `&` runs in the background; one
that ended by the time the examples are done must have exited 0, and one
still running (a watch) is stopped.
"""
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from conftest import REELCTL, ROOT

CODES = {"CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
         "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
         "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
         "UNAUTHENTICATED"}
# A block is skipped if one of its commands starts with one of these words.
SKIP_WORDS = re.compile(r"^(scripts/\S*|bazel|reeld|\S*/reeld|/usr/bin/python3|\.ci/\S*)$")
TIMEOUT = 120


def sh_blocks(text):
    """[(line number of the fence, [lines])] of every ```sh block."""
    blocks, cur, start = [], None, 0
    for n, line in enumerate(text.splitlines(), 1):
        if cur is None and line.strip() == "```sh":
            cur, start = [], n
        elif cur is not None and line.strip() == "```":
            blocks.append((start, cur))
            cur = None
        elif cur is not None:
            cur.append((n, line))
    assert cur is None, f"README.md: the ```sh block at line {start} is not closed"
    return blocks


def split_comment(line):
    """(command, comment): the comment is a # outside quotes after a blank."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                continue
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands(blocks):
    """[(readme line, command, expected code or None, background)]."""
    out = []
    for _, lines in blocks:
        pending, first = "", None
        for n, line in lines:
            if pending or line.rstrip().endswith("\\"):
                first = first or n
                pending += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
                if line.rstrip().endswith("\\"):
                    continue
                line, n, pending = pending, first, ""
            cmd, comment = split_comment(line)
            if not cmd.strip():
                continue
            m = re.match(r"([A-Z_]+):", comment)
            expect = m.group(1) if m and m.group(1) in CODES else None
            background = cmd.endswith("&") and not cmd.endswith("&&")
            if background:
                cmd = cmd[:-1].rstrip()
            out.append((n, cmd, expect, background))
    return out


def skipped(block):
    return any(line.split() and SKIP_WORDS.match(line.split()[0]) for _, line in block)


def script(cmds, outdir):
    """The bash script running cmds; each leaves N.out, N.err and a status."""
    q = shlex.quote
    lines = ["set -m", "set -o pipefail", "bg=()"]
    for i, (_, cmd, _, background) in enumerate(cmds):
        o, e = q(f"{outdir}/{i}.out"), q(f"{outdir}/{i}.err")
        if background:
            lines.append(f"{cmd} >{o} 2>{e} </dev/null &")
            lines.append(f"bg+=({i}:$!)")
        else:
            # Braces, not a subshell: RUN=$(...) stays set for what follows.
            lines.append("{ " + cmd + "\n} >" + o + " 2>" + e + " </dev/null")
            lines.append(f"echo {i} $? >>{q(outdir + '/status')}")
    lines += [
        "for b in \"${bg[@]}\"; do",
        "  i=${b%%:*} pid=${b#*:}",
        "  if kill -0 $pid 2>/dev/null; then",
        "    kill -TERM -- -$pid 2>/dev/null; wait $pid; echo \"$i running\"",
        "  else",
        "    wait $pid; echo \"$i $?\"",
        "  fi",
        "done >" + q(outdir + "/bg"),
    ]
    return "\n".join(lines) + "\n"


def read_lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_readme_examples_run_as_written(reeld, tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = sh_blocks(f.read())
    ran = [b for b in blocks if not skipped(b[1])]
    # Quickstart's build/start block and the build-and-test block at least.
    assert len(blocks) - len(ran) >= 2, [b[0] for b in blocks if skipped(b[1])]
    cmds = commands(ran)
    text = "\n".join(c for _, c, _, _ in cmds)
    for group in ("health", "kv", "run", "journal", "signal", "events"):
        assert re.search(rf"\breelctl {group}\b", text), f"no `reelctl {group}` example ran"

    work = tmp_path / "work"
    (work / "bazel-bin" / "cli").mkdir(parents=True)
    os.symlink(REELCTL, work / "bazel-bin" / "cli" / "reelctl")
    shim = tmp_path / "bin"
    shim.mkdir()
    os.symlink(REELCTL, shim / "reelctl")
    outdir = tmp_path / "out"
    outdir.mkdir()
    (tmp_path / "readme.sh").write_text(script(cmds, str(outdir)))
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}", REEL_ADDR=reeld.addr)

    proc = subprocess.Popen(["bash", str(tmp_path / "readme.sh")], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done = {int(l.split()[0]) for l in read_lines(outdir / "status")}
        at = [c for i, c in enumerate(cmds) if not c[3] and i not in done][:1]
        pytest.fail(f"README examples still running after {TIMEOUT}s; stuck at "
                    f"README.md:{at[0][0] if at else '?'}: `{at[0][1] if at else ''}`")

    def read(i, ext):
        p = outdir / f"{i}.{ext}"
        return p.read_text() if p.exists() else ""

    status = dict(tuple(map(int, l.split())) for l in read_lines(outdir / "status"))
    for i, (line, cmd, expect, background) in enumerate(cmds):
        if background:
            continue
        assert i in status, f"README.md:{line}: `{cmd}` did not run\n{out.decode()}"
        where = f"README.md:{line}: `{cmd}`\nstdout: {read(i, 'out')}\nstderr: {read(i, 'err')}"
        if expect is None:
            assert status[i] == 0, f"exit {status[i]}: {where}"
        else:
            assert status[i] != 0, f"meant to fail with {expect}, exit 0: {where}"
            assert expect in read(i, "err"), f"meant to fail with {expect}: {where}"
    for l in read_lines(outdir / "bg"):
        i, st = l.split()
        line, cmd = cmds[int(i)][0], cmds[int(i)][1]
        assert st in ("0", "running"), \
            f"README.md:{line}: `{cmd} &` exited {st}\nstderr: {read(i, 'err')}"
