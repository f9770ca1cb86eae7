#!/usr/bin/env python3
"""FlowLayer terminal client: `python tui.py -addr 127.0.0.1:6999 -token TOKEN` (see --help)."""
import sys

if __name__ == "__main__":
    try:
        from lib.tui_cli import main
    except ModuleNotFoundError as exc:
        sys.stderr.write(f"Error: missing Python package {exc.name!r}: "
                         "pip install websocket-server websocket-client json5\n")
        sys.exit(1)
    sys.exit(main())
