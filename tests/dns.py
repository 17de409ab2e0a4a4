"""Fixed answers for apps.outbound's resolver, so no test asks a real DNS server."""
from __future__ import annotations

import socket


class FixedResolver:
    """Answers look-ups from a table: a name -> its successive answers, the last
    one repeating. Unknown names fail as DNS says "no such name". ``calls``
    lists every name asked, in order."""

    def __init__(self):
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def add(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = [list(answer) for answer in answers]

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers.pop(0) if len(answers) > 1 else answers[0])
