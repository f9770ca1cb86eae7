"""flowlayer.pyz: `python flowlayer.pyz [server flags]` runs the server,
`python flowlayer.pyz tui [client flags]` the terminal client (this file is its __main__.py)."""
import contextlib
import os
import sys
import tempfile

HELP_FLAGS = ("-h", "-help", "--help")
CLIENT_NOTE = "\nIn flowlayer.pyz: `python flowlayer.pyz tui [FLAGS]` runs the terminal client (see `tui --help`).\n"


@contextlib.contextmanager
def runnable_guardian():
    """lib.guardian starts `python <its own file>`, and a file inside a zip cannot be run that
    way: give it a copy on disk while the server runs (Python reads it whole at start)."""
    from lib import guardian
    fd, path = tempfile.mkstemp(prefix="flowlayer-guardian-", suffix=".py")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(guardian.__loader__.get_source(guardian.__name__))
    guardian.__file__ = path
    try:
        yield
    finally:
        os.unlink(path)


def main(args):
    if args[:1] == ["tui"]:
        from lib.tui_cli import main as client
        return client(args[1:])
    from lib.server_cli import main as server
    with runnable_guardian():
        code = server(args)
    if len(args) == 1 and args[0] in HELP_FLAGS:
        sys.stdout.write(CLIENT_NOTE)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
