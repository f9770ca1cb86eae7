"""flowlayer.pyz: `python flowlayer.pyz [server flags]` runs the server,
`python flowlayer.pyz tui [client flags]` the terminal client (this file is its __main__.py)."""
import sys

HELP_FLAGS = ("-h", "-help", "--help")
CLIENT_NOTE = "\nIn flowlayer.pyz: `python flowlayer.pyz tui [FLAGS]` runs the terminal client (see `tui --help`).\n"


def main(args):
    if args[:1] == ["tui"]:
        from lib.tui_cli import main as client
        return client(args[1:])
    from lib.server_cli import main as server
    code = server(args)
    if len(args) == 1 and args[0] in HELP_FLAGS:
        sys.stdout.write(CLIENT_NOTE)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
