#!/usr/bin/env python3
"""Check the module structure of src/: no import cycles, and the layers point one way.

Run by .ci/test (`python3 tests/modcycles.py src`); exits 1 on any violation. Python 3 only.

Modules: each top-level `src/X.rs` or `src/X/` is one; inside a folder, each child file or
sub-folder is one (a folder's `mod.rs` is the folder itself). A module depends on another
when its code (not its `#[cfg(test)]` modules, comments or string literals) names it:
`crate::a::b`, `use crate::{a, b::{c, d}}`, `super::x`. Dependencies between a folder and
its own children do not count; any other dependency is lifted to the two modules that
differ at the first level where the paths part (`auth/jwt` -> `mcp/body` is `auth` ->
`mcp`), so a folder's children are siblings and top-level modules are siblings.

Checked:
1. no cycle among siblings (strongly connected components of two or more);
2. the bottom layer (LEAVES) depends on nothing of ours but other leaves;
3. only the modules in CONFIG_USERS depend on `config`: domain modules own their
   sections and never reach back into the config module.
"""
import os
import re
import sys

LEAVES = {"clock", "principal", "scope", "compile", "failmode", "path", "error", "logs"}
CONFIG_USERS = {"config", "state", "proxy", "server", "admin", "cli", "fuzzing"}


def strip_code(text):
    """The text with comments, string and char literals blanked (same length, same lines)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 260]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code):
    """`code` without the bodies of `#[cfg(test)]` items (brace-matched)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[:m.start()] + code[j:]


def expand_group(prefix, body):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (as lists of segments)."""
    items, depth, start = [], 0, 0
    for k, ch in enumerate(body + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:k].strip())
            start = k + 1
    paths = []
    for item in items:
        if not item:
            continue
        g = re.match(r"^([\w:]*?)::\{(.*)\}$", item, re.S)
        if g:
            paths += expand_group(prefix + [s for s in g.group(1).split("::") if s], g.group(2))
        elif item.startswith("{") and item.endswith("}"):
            paths += expand_group(prefix, item[1:-1])
        else:
            head = item.split(" as ")[0].strip()
            paths.append(prefix + [s for s in head.split("::") if s and s != "self"])
    return paths


def referenced_paths(code):
    """Every `crate::...` and `super::...` path named in `code`, as segment lists."""
    paths = []
    for m in re.finditer(r"\b(crate|super)((?:\s*::\s*(?:\w+|\{))+)", code):
        rest = m.group(2)
        if rest.rstrip().endswith("{"):
            # a group: find its closing brace in the code that follows
            start = m.start(2) + rest.rfind("{") + 1
            depth, j = 1, start
            while j < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
            head = [s.strip() for s in rest[:rest.rfind("{")].split("::") if s.strip()]
            for p in expand_group(head, code[start:j - 1]):
                paths.append((m.group(1), p))
        else:
            paths.append((m.group(1), [s.strip() for s in rest.split("::") if s.strip()]))
    return paths


def module_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def graph(src):
    files = {}
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
                files[module_of(rel)] = rel
    known = set(files)

    def resolve(path):
        for k in range(len(path), 0, -1):
            if tuple(path[:k]) in known:
                return tuple(path[:k])
        return None

    edges = {}
    for mod, rel in files.items():
        if not mod:
            continue
        with open(os.path.join(src, rel), encoding="utf-8") as fh:
            code = drop_test_modules(strip_code(fh.read()))
        base = mod[:-1] if not rel.endswith("mod.rs") else mod[:-1]
        for kind, path in referenced_paths(code):
            full = list(path) if kind == "crate" else list(mod[:-1] if not rel.endswith("mod.rs") else mod[:-1]) + list(path)
            if kind == "super" and rel.endswith("mod.rs"):
                full = list(mod[:-1]) + list(path)
            target = resolve(full)
            if target is None or target == mod:
                continue
            k = 0
            while k < min(len(mod), len(target)) and mod[k] == target[k]:
                k += 1
            if k == min(len(mod), len(target)):
                continue  # a folder and its own descendants
            edges.setdefault(mod[:k + 1], set()).add(target[:k + 1])
        del base
    return known, edges


def cycles(edges):
    """Strongly connected components of 2+ nodes (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    nodes = sorted(set(edges) | {b for v in edges.values() for b in v})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted("/".join(c) for c in comp))
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    known, edges = graph(src)
    problems = []
    for comp in cycles(edges):
        problems.append("import cycle: " + " <-> ".join(comp))
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            if len(a) == 1 and a[0] in LEAVES and not (len(b) == 1 and b[0] in LEAVES):
                problems.append(f"leaf module {'/'.join(a)} depends on {'/'.join(b)}")
            if b == ("config",) and a[0] not in CONFIG_USERS:
                problems.append(f"{'/'.join(a)} depends on config (domains own their sections)")
    for p in problems:
        print(p)
    n_edges = sum(len(v) for v in edges.values())
    print(f"{len(known) - 1} modules, {n_edges} dependencies between siblings, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
