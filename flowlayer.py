#!/usr/bin/env python3
"""FlowLayer server: `python flowlayer.py -c flowlayer.jsonc` (see --help)."""
import sys

if __name__ == "__main__":
    try:
        from lib.server_cli import main
    except ModuleNotFoundError as exc:
        sys.stderr.write(f"Error: missing Python package {exc.name!r}: "
                         "pip install websocket-server websocket-client json5\n")
        sys.exit(1)
    sys.exit(main())
