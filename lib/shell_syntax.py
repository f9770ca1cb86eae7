"""The boot warning for a string `cmd`/`stopCmd` that holds shell syntax (SPEC 6.1).

A string command is split on whitespace and run without a shell (public format), so
`a && b`, `$HOME`, quotes or `PORT=1 api` do not mean what they say. The service still starts
as written; the warning names it and gives the exact array form to write instead."""
import json
import re

SHELL_SYNTAX = re.compile(r"&&|\|\||[|;<>$`'\"]")
ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)\Z", re.S)


def shell_warning(service, field, cmd):
    """The warning line for `services.<service>.<field>` = `cmd`, or None when `cmd` is an
    array or a plain command."""
    if not isinstance(cmd, str):
        return None
    where = f'service "{service}": {field} is split on whitespace and run without a shell'
    words = cmd.split()
    assignments = [ASSIGNMENT.match(word) for word in words]
    leading = next((i for i, match in enumerate(assignments) if not match), len(words))
    found = SHELL_SYNTAX.search(cmd)
    if found or (words and leading == len(words)):  # only assignments: a shell's meaning too
        syntax = found.group() if found else words[0]
        suggestion = json.dumps(["sh", "-c", cmd.strip()], ensure_ascii=False)
        return (f"{where}, but it holds shell syntax ({syntax}); it starts as written. "
                f'To run it through a shell, write "{field}": {suggestion}')
    if leading:
        env = {match.group(1): match.group(2) for match in assignments[:leading]}
        return (f'{where}, but it starts with {" ".join(words[:leading])}, which runs as a '
                f'program; it starts as written. Write "env": '
                f'{json.dumps(env, ensure_ascii=False)}, "{field}": '
                f'{json.dumps(words[leading:], ensure_ascii=False)}')
    return None
