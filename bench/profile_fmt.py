#!/usr/bin/env python3
"""Condenses callgrind_annotate / perf report output into markdown tables:
top functions by self cost (inlined pieces of one function summed) and by
inclusive cost."""
import re
import sys

TOP = 12
FILE_FN = re.compile(r"^(?:.*?\.(?:rs|c|S|h|cc|cpp|s)|\?\?\?):(.*?)(?: \[[^\]]*\])?$")


def short(fn):
    fn = re.sub(r" \(\d[\d,]*x\)$", "", fn)
    fn = re.sub(r"::h[0-9a-f]{16}$", "", fn)
    fn = fn.replace("flowmesh::engine::embedded::", "embedded::")
    return fn if len(fn) <= 110 else fn[:107] + "..."


def callgrind(path):
    total, rows = None, {}
    for line in open(path, errors="replace"):
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", line.rstrip())
        if not m:
            continue
        ir, rest = int(m.group(1).replace(",", "")), m.group(3)
        if rest.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        fm = FILE_FN.match(rest)
        fn = fm.group(1) if fm else rest
        fn = re.sub(r" \(\d[\d,]*x\)$", "", fn)
        rows[fn] = rows.get(fn, 0) + ir
    return total, sorted(rows.items(), key=lambda kv: -kv[1])


def perf(path):
    rows = []
    for line in open(path, errors="replace"):
        m = re.match(r"^\s+([\d.]+)%\s+(?:([\d.]+)%\s+)?\[([.k])\]\s+(.*)$", line.rstrip())
        if m:
            pct = float(m.group(1))
            rows.append((("[kernel] " if m.group(3) == "k" else "") + m.group(4).strip(), pct))
    return rows


def main():
    kind, self_path, incl_path, title, count = sys.argv[1:6]
    count = int(count)
    out = [f"#### {title}", ""]
    if kind == "callgrind":
        total, self_rows = callgrind(self_path)
        _, incl_rows = callgrind(incl_path)
        if not total:
            print("\n".join(out + ["(no data)", ""]))
            return
        out.append(f"Total {total:,} instructions, {total / max(count, 1):,.0f} per operation.\n")
        out.append("| self % | self Ir/op | function |")
        out.append("|---:|---:|---|")
        for fn, ir in self_rows[:TOP]:
            out.append(f"| {ir / total * 100:.1f}% | {ir / count:,.0f} | `{short(fn)}` |")
        out.append("")
        interesting = [(fn, ir) for fn, ir in incl_rows if any(k in fn for k in ("flowmesh", "embedded", "block_on", "fm_")) and ir < total]
        out.append("Inclusive (flowmesh functions, top):\n")
        out.append("| incl. % | Ir/op | function |")
        out.append("|---:|---:|---|")
        for fn, ir in interesting[:TOP]:
            out.append(f"| {ir / total * 100:.1f}% | {ir / count:,.0f} | `{short(fn)}` |")
        out.append("")
    else:
        self_rows = perf(self_path)
        incl_rows = perf(incl_path)
        kern = sum(p for fn, p in self_rows if fn.startswith("[kernel]"))
        out.append(f"Kernel share of samples: {kern:.0f}%.\n")
        out.append("| self % | symbol |")
        out.append("|---:|---|")
        for fn, p in self_rows[:TOP]:
            out.append(f"| {p:.1f}% | `{short(fn)}` |")
        out.append("")
        fl = [(fn, p) for fn, p in incl_rows if "flowmesh" in fn or "sync_data" in fn or "fdatasync" in fn]
        if fl:
            out.append("Inclusive (children included), flowmesh and fsync frames:\n")
            out.append("| incl. % | symbol |")
            out.append("|---:|---|")
            for fn, p in fl[:TOP]:
                out.append(f"| {p:.1f}% | `{short(fn)}` |")
            out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
