#!/usr/bin/env python3
"""Fails on one-letter names bound inside Rust functions longer than 30 lines (house style, issue 18).

In a long function a reader meets `v` twenty lines after it was bound; a word says what it holds. Counted:
function parameters, `let`/`for` bindings and their patterns, and the bindings of closures and match arms whose
body opens a block at the end of the line. A one-line closure's `|x| x.len()` is fine: its binding is read where it is
made. Usage: scripts/one-letter-names.py FILE.rs... (make lint passes every tracked .rs file)."""
import re, sys, pathlib
LONG = 30
fn_re = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
# Bindings whose scope outlives their line: `let`, `for`, `if let`/`while let` patterns, and the parameters of
# closures whose body opens a block at the end of the line. A one-line closure's `|x| x.len()` stays legal.
let_re = re.compile(r'\b(?:let|for)\s+(?:mut\s+)?\(?\s*(?:&\s*)?(?:mut\s+)?((?:[a-z]\s*,\s*)*[a-z])\b(?!\s*::)(?!\w)')
pat_re = re.compile(r'\b(?:let|for)\s+[A-Za-z_:]*\s*[({]\s*([^=]*?)[)}]\s*(?:=|in\b)')
closure_re = re.compile(r'\|([^|]*)\|\s*(?:->\s*[^{]*)?(?:async\s+(?:move\s+)?)?\{\s*$')
# Match arms that bind and open a block: `Some(a) => {`, `Ok((a, b)) if … => {`. A one-line arm such as
# `Err(e) => return Err(e),` reads its binding where it makes it, like a one-line closure.
arm_re = re.compile(r'^\s*(?:[A-Z][\w:]*)?\s*\((.*)\)\s*(?:if\b.*)?=>\s*\{\s*$')
def clean(line):
    line = re.sub(r'r#+"[^"]*"#+', '""', line)
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "' '", line)
    return line.split('//')[0]

def scan(path):
    lines = pathlib.Path(path).read_text().splitlines()
    i = 0
    out = []
    in_tests = False
    while i < len(lines):
        l = lines[i]
        m = fn_re.match(l)
        if m:
            depth = 0; started = False; j = i
            while j < len(lines):
                code = clean(lines[j])
                for ch in code:
                    if ch == '{': depth += 1; started = True
                    elif ch == '}': depth -= 1
                if started and depth == 0: break
                if not started and code.rstrip().endswith(';'): break
                j += 1
            if started and j - i + 1 > LONG:
                names = set()
                sig_done = False
                for k in range(i, min(j + 1, len(lines))):
                    code = clean(lines[k])
                    found = []
                    if not sig_done:
                        found += re.findall(r'(?<![\w.:])(?:mut\s+)?([a-z])\s*:(?!:)', code)
                        sig_done = '{' in code
                    for b in let_re.finditer(code):
                        found += re.split(r'\s*,\s*', b.group(1))
                    for b in pat_re.finditer(code):
                        found += re.findall(r'(?<![\w.:])([a-z])(?![\w:(])', b.group(1))
                    for b in list(closure_re.finditer(code)) + list(arm_re.finditer(code)):
                        found += re.findall(r'(?<![\w.:\'])([a-z])(?![\w(])(?!::)', b.group(1))
                    for name in found:
                        if re.fullmatch(r'[a-z]', name):
                            names.add((name, k + 1))
                if names:
                    out.append((m.group(6), i + 1, j - i + 1, sorted(names, key=lambda x: x[1])))
            i = i + 1
            continue
        i += 1
    return out
total = 0
for p in sys.argv[1:]:
    for name, line, n, names in scan(p):
        total += 1
        print(f"{p}:{line} fn {name} ({n} lines): " + ", ".join(f"{c}@{l}" for c, l in names))
if total:
    print(f"{total} function(s) over {LONG} lines bind one-letter names: give them words", file=sys.stderr)
    sys.exit(1)
