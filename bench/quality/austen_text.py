#!/usr/bin/env python3
"""Jane Austen's six novels as plain text, read from the Debian package r-cran-janeaustenr without R.

    python3 bench/quality/austen_text.py [--lib DIR] --out austen.txt

The package keeps its data in R's lazy-load database: data/Rdata.rdx (the index, a gzip'd serialization: object
name -> offset and length in Rdata.rdb) and data/Rdata.rdb (each object: a 4-byte length, then zlib'd R binary
serialization). This reads
both with a small XDR unserializer covering what the novels use (character vectors, lists, pairlists,
symbols, attributes, references), and writes the novels one after another, one text line per line.
"""
import argparse
import bz2
import gzip
import lzma
import os
import struct
import sys
import zlib

NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]


def decompress(blob):
    """A lazy-load record: 4-byte big-endian length, then (R >= 2.10: an optional type byte) the data."""
    n = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    kind = body[:1]
    if kind == b"Z":
        out = zlib.decompress(body[1:])
    elif kind == b"2":
        out = bz2.decompress(body[1:])
    elif kind == b"X":
        out = lzma.decompress(body[1:])
    elif kind == b"0":
        out = body[1:]
    else:
        out = zlib.decompress(body)
    if len(out) != n:
        sys.exit(f"lazy-load record: {len(out)} bytes, header says {n}")
    return out


class Unserializer:
    """R's XDR serialization (format 'X\\n', versions 2 and 3), the subset the data needs."""

    def __init__(self, data):
        if data[:2] != b"X\n":
            sys.exit("not an R XDR serialization")
        self.d, self.i, self.refs = data, 2, []
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            n = self.int()  # native encoding name
            self.i += n

    def int(self):
        v = struct.unpack(">i", self.d[self.i:self.i + 4])[0]
        self.i += 4
        return v

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t == 254 or t in (241, 242, 253):  # NULL, base/empty/global environment
            return None
        if t == 255:  # reference to an earlier symbol or environment
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == 1:  # symbol: its name, remembered for references
            name = self.item()
            self.refs.append(name)
            return name
        if t in (2, 6):  # pairlist, language: attr?, tag?, car, cdr
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            out = [(tag, car)] + (cdr if isinstance(cdr, list) else [])
            return out
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.i:self.i + n]
            self.i += n
            return s.decode("utf-8", errors="replace")
        if t in (10, 13):  # logical, integer
            n = self.int()
            vals = list(struct.unpack(f">{n}i", self.d[self.i:self.i + 4 * n]))
            self.i += 4 * n
        elif t == 14:  # double
            n = self.int()
            vals = list(struct.unpack(f">{n}d", self.d[self.i:self.i + 8 * n]))
            self.i += 8 * n
        elif t in (16, 19, 20):  # character vector, list, expression
            n = self.int()
            vals = [self.item() for _ in range(n)]
        else:
            sys.exit(f"R serialization: type {t} is not supported here")
        if has_attr:
            self.item()
        return vals


def read_object(lib, name, index):
    off, length = index[name]
    with open(os.path.join(lib, "data", "Rdata.rdb"), "rb") as f:
        f.seek(off)
        return Unserializer(decompress(f.read(length))).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="/usr/lib/R/site-library/janeaustenr")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rdx = os.path.join(a.lib, "data", "Rdata.rdx")
    if not os.path.exists(rdx):
        sys.exit(f"{rdx}: missing (install the Debian package r-cran-janeaustenr)")
    with open(rdx, "rb") as f:
        index_bytes = gzip.decompress(f.read())  # the index is an RDS file: gzip, then the serialization
    top = Unserializer(index_bytes).item()  # list(variables, references, compressed)
    variables = top[0]
    # variables: a named list; names come as the list's attribute, which item() drops: read them again.
    u = Unserializer(index_bytes)
    index = {}
    names = _names_of_first_list(u)
    for nm, v in zip(names, variables):
        index[nm] = (int(v[0]), int(v[1]))
    missing = [n for n in NOVELS if n not in index]
    if missing:
        sys.exit(f"{rdx}: no {', '.join(missing)} (has {', '.join(sorted(index))})")
    total = 0
    with open(a.out, "w", encoding="utf-8") as out:
        for n in NOVELS:
            lines = [l if l is not None else "" for l in read_object(a.lib, n, index)]
            text = "\n".join(lines) + "\n"
            out.write(text)
            total += len(text.encode("utf-8"))
            print(f"{n}: {len(lines)} lines", file=sys.stderr)
    print(f"wrote {total} bytes of text to {a.out}", file=sys.stderr)


def _names_of_first_list(u):
    """The names attribute of the index's first element (the variables list)."""
    flags = u.int()  # the top list
    n = u.int()
    # element 0: the variables list, with a names attribute
    vflags = u.int()
    assert vflags & 0xFF == 19 and vflags & (1 << 9), "variables is a named list"
    m = u.int()
    for _ in range(m):
        u.item()
    attrs = u.item()  # pairlist [(tag, value)]
    for tag, value in attrs:
        if tag == "names":
            return value
    sys.exit("Rdata.rdx: the variables list has no names")


if __name__ == "__main__":
    main()
