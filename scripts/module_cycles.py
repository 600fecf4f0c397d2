#!/usr/bin/env python3
"""Fails when the top-level modules of a crate depend on each other in a cycle.

A module's dependencies are the sibling modules its non-test code names through
`crate::` (or `super::` in a file directly under src/). Comments, `#[cfg(test)] mod tests`
blocks and tests.rs files are left out. Usage: module_cycles.py CRATE_SRC_DIR...
"""
import glob
import os
import re
import sys


def graph(root):
    files = [
        f
        for f in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True)
        if os.path.basename(f) != "tests.rs"
    ]

    def top(path):
        parts = os.path.relpath(path, root).split(os.sep)
        return parts[0][:-3] if len(parts) == 1 else parts[0]

    mods = {top(f) for f in files} - {"lib", "main"}
    deps = {m: set() for m in mods}
    for f in files:
        m = top(f)
        if m not in mods:
            continue
        with open(f, encoding="utf-8") as fh:
            text = fh.read().split("#[cfg(test)]\nmod tests")[0]
        text = "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))
        direct = len(os.path.relpath(f, root).split(os.sep)) == 1
        names = re.findall(r"crate::([a-z_0-9]+)", text)
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            names += re.findall(r"\b([a-z_0-9]+)\b", group)
        if direct:
            names += re.findall(r"super::([a-z_0-9]+)", text)
        deps[m].update(n for n in names if n in mods and n != m)
    return deps


def cycles(deps):
    found, state = [], {}

    def visit(u, path):
        state[u] = 1
        for v in sorted(deps[u]):
            if state.get(v) == 1:
                found.append(path[path.index(v):] + [v] if v in path else path + [u, v])
            elif v not in state:
                visit(v, path + [v])
        state[u] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m, [m])
    return found


def main():
    bad = False
    for root in sys.argv[1:]:
        for cycle in cycles(graph(root)):
            bad = True
            print(f"{root}: module cycle {' -> '.join(cycle)}")
    if bad:
        print("break each cycle: move what both sides need into a module below them")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
