"""Go-style command-line flags and usage errors, shared by the server and the client.

`-name value`, `--name value`, `-name=value` and `--name=value` all work, as with Go's
flag package, so the programs accept what users of the original tools type.
"""
import sys


class UsageError(Exception):
    """A command line that cannot be understood; the CLI prints it with the help."""


def report(error, help_text=""):
    """`Error: <error>` on stderr, then the help (for a usage error); exit code 2."""
    sys.stderr.write(f"Error: {error}\n" + (f"\n{help_text}" if help_text else ""))
    return 2


def parse(argv, valued, switches, aliases=None):
    """Split argv into ({canonical name: value}, [positionals]).

    `valued` names take a value, `switches` are booleans; `aliases` maps other spellings
    to a canonical name. Giving the same canonical flag twice is a usage error.
    """
    aliases = aliases or {}
    values, positionals, given = {}, [], {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            positionals.extend(args)
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        spelled, has_value, value = arg.lstrip("-").partition("=")
        if arg.startswith("---") or not spelled:
            raise UsageError(f"bad flag syntax: {arg}")
        name = aliases.get(spelled, spelled)
        if name in given:
            raise UsageError(f"flag {arg} conflicts with {given[name]}")
        if name in switches:
            if has_value:
                raise UsageError(f"flag {arg.partition('=')[0]} takes no value")
            values[name] = True
        elif name in valued:
            if not has_value:
                if not args:
                    raise UsageError(f"flag needs an argument: {arg}")
                value = args.pop(0)
            values[name] = value
        else:
            raise UsageError(f"flag provided but not defined: {arg.partition('=')[0]}")
        given[name] = arg.partition("=")[0]
    return values, positionals
