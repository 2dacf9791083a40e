"""Print the stored form of an API key: ``python -m supernode.router.admission.hash_key [KEY]``.

With no argument the key is read from stdin (keeps it out of shell history). Prints a YAML snippet for
the tenants file.
"""

from __future__ import annotations

import sys

from supernode.router.admission.tenants import hash_key


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    key = args[0] if args else sys.stdin.readline().strip()
    if not key:
        print("usage: python -m supernode.router.admission.hash_key KEY  (or the key on stdin)", file=sys.stderr)
        return 2
    print(f"- sha256: {hash_key(key)}\n  prefix: {key[:8]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
