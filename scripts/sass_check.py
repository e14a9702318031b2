#!/usr/bin/env python3
"""sass_check.py — check a binary's machine code (SASS) for the instructions a lesson claims.

  scripts/sass_check.py PROGRAM [@KERNEL] INSTR [INSTR ...]

Runs `cuobjdump --dump-sass PROGRAM`, splits the dump into its functions, and keeps those
whose (mangled) name contains KERNEL (every function when no @KERNEL is given). Each INSTR
must appear as an opcode prefix (LDG.E.128 matches "LDG.E.128" and "LDG.E.128.CONSTANT")
in at least one kept function; !INSTR must appear in none of them (a baseline kernel that
must NOT have what the optimized one adds). Prints one line per check.
Exit: 0 all hold, 1 a check failed or no function matched KERNEL, 3 cuobjdump failed.
Python 3 standard library only; used by scripts/run_tests.sh over tests/sass_checks.txt."""
import re
import subprocess
import sys


def functions(sass_text):
    """{mangled name: [opcode strings]} from a cuobjdump --dump-sass listing."""
    funcs, cur = {}, None
    for line in sass_text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        # "        /*0040*/                   LDG.E.128 R4, desc[UR4][R2.64] ;"
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m and cur is not None:
            cur.append(m.group(1))
    return funcs


def has(ops, instr):
    return any(op == instr or op.startswith(instr + ".") for op in ops)


def main(argv):
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    prog, rest = argv[0], argv[1:]
    kernel = rest.pop(0)[1:] if rest and rest[0].startswith("@") else None
    try:
        out = subprocess.run(["cuobjdump", "--dump-sass", prog], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"{prog}: cuobjdump failed: {e}")
        return 3
    funcs = functions(out)
    kept = {n: ops for n, ops in funcs.items() if kernel is None or kernel in n}
    where = f"{prog}" + (f" @{kernel}" if kernel else "")
    if not kept:
        print(f"{where}: no function named like '{kernel}' (functions: {', '.join(sorted(funcs)) or 'none'})")
        return 1
    ok = True
    for instr in rest:
        want = not instr.startswith("!")
        name = instr.lstrip("!")
        found = [n for n, ops in kept.items() if has(ops, name)]
        if want and found:
            print(f"{where}: {name} found ({found[0]})")
        elif not want and not found:
            print(f"{where}: {name} absent, as claimed ({len(kept)} function(s))")
        else:
            ok = False
            print(f"{where}: " + (f"no {name} in {len(kept)} function(s)" if want else f"{name} present in {found[0]}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
