"""Secrets (webhook URLs, routing keys, passwords, API keys).

A secret never lives in a definition, a run or a channel row: configs name
the environment variable that holds it (``url_env``, ``api_key_env``...), or
rely on a conventional variable (SLACK_WEBHOOK_URL...), and the value is read
in the worker when the node runs. Every value read that way is remembered in
this process and scrubbed from node outputs, errors and log lines.

What is scrubbed. Every known value, whole. A URL-shaped value
(``scheme://...``) also leaks through its parts: an error can quote the port
text, a server can echo the token segment of its path. So each part of such a
URL is scrubbed on its own wherever it appears, when it identifies the secret:

- the userinfo, its user and its password;
- the port text: everything after the last ``:`` of the host part, even when
  it is not a number (an IPv6 host's own colons, inside ``[...]``, do not count);
- each path segment, each query value, the whole query and the fragment;
- each of those, and the whole URL, percent-decoded too, as errors often
  show them decoded.

A part identifies the secret when it is at least 6 characters long and holds
both a letter and a digit (``T01ABCDE``, ``p0rtS3cret99``), or is at least 12
characters long whatever it holds. Shorter or plainer parts (``services``,
``hooks``, ``v1``, ``8443``) are words and numbers found everywhere: redacting
them would garble every log line and hide nothing. The host is never a part:
it names a service, not the credential.

Longer fragments win over the shorter ones they contain, and overlapping
fragments are redacted as one span, so no piece of a secret is left over.
Scrubbing runs on every log line: the fragments of a set of known values are
compiled once into one regular expression, and a text holding none of them
costs one search.
"""
from __future__ import annotations

import functools
import logging
import os
import re
from typing import overload
from urllib.parse import unquote, unquote_plus

from django.conf import settings

REDACTED = "[redacted]"
# Values shorter than this are not scrubbed: replacing "a" everywhere helps no one.
MIN_SECRET_LENGTH = 6
# A part of a URL secret is scrubbed when it is this long and mixes letters and digits...
MIN_MIXED_FRAGMENT_LENGTH = 6
# ...or when it is at least this long, whatever it holds.
MIN_PLAIN_FRAGMENT_LENGTH = 12

_URL_SHAPED = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")

_seen: set[str] = set()
_seen_additions = 0  # how many values remember() has added to _seen


class SecretMissing(Exception):
    """A secret a node needs is not set in this process's environment."""


def inline_secret_messages(config: dict, keys: tuple[str, ...]) -> list[str]:
    """Validation messages for secrets written straight into a config."""
    return [
        f"{key} is a secret and must not be written in the definition: "
        f"put it in an environment variable and name it with {key}_env"
        for key in keys
        if key in config
    ]


def env_name_messages(config: dict, keys: tuple[str, ...]) -> list[str]:
    """Validation messages for ``<key>_env`` options that are not variable names."""
    messages = []
    for key in keys:
        name = config.get(f"{key}_env")
        if f"{key}_env" in config and not (isinstance(name, str) and name.strip() and "=" not in name):
            messages.append(f"{key}_env must name an environment variable")
    return messages


# Where a missing secret must be set: a worker reads it when the node runs, not the launcher.
WHERE_SECRETS_LIVE = "in the environment of the workers"


@overload
def secret_env_name(config: dict, key: str, *, default_env: str) -> str: ...
@overload
def secret_env_name(config: dict, key: str, *, default_env: str | None) -> str | None: ...
def secret_env_name(config: dict, key: str, *, default_env: str | None) -> str | None:
    """The variable secret ``key`` of ``config`` is read from: the one ``<key>_env``
    names, else ``default_env`` (None when neither is given)."""
    return config.get(f"{key}_env") or default_env


def secret_get(config: dict, key: str, *, default_env: str | None, what: str) -> str:
    """The secret ``key`` of ``config``: from the variable named by ``<key>_env``,
    else from ``default_env``. Raises SecretMissing (one line naming the
    variable and where to set it, never a value) when it is not set. The value
    is remembered for scrubbing."""
    name = secret_env_name(config, key, default_env=default_env)
    value = os.environ.get(name, "").strip() if name else ""
    if not value:
        if config.get(f"{key}_env"):
            raise SecretMissing(f"No {what}: set {name} (named by the node's {key}_env) {WHERE_SECRETS_LIVE}")
        if default_env:
            raise SecretMissing(f"No {what}: set {default_env} (or the node's {key}_env) {WHERE_SECRETS_LIVE}")
        raise SecretMissing(f"No {what}: name a variable with the node's {key}_env and set it {WHERE_SECRETS_LIVE}")
    remember(value)
    return value


def env_unset(names: list[str]) -> list[str]:
    """Those of ``names`` that this process's environment leaves unset or blank
    (secret_get would raise SecretMissing for them), sorted. Reads values only
    to test them; returns names, never values."""
    return sorted({name for name in names if not os.environ.get(name, "").strip()})


def remember(value: str) -> None:
    """Scrub ``value`` (and its identifying parts) from everything this process writes from now on."""
    global _seen_additions
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in _seen:
        _seen.add(value)
        _seen_additions += 1


def is_identifying(fragment: str) -> bool:
    """Whether ``fragment``, a part of a secret, is specific enough to scrub wherever it appears."""
    if len(fragment) >= MIN_PLAIN_FRAGMENT_LENGTH:
        return True
    return (
        len(fragment) >= MIN_MIXED_FRAGMENT_LENGTH
        and any(char.isalpha() for char in fragment)
        and any(char.isdigit() for char in fragment)
    )


def _url_parts(url: str) -> list[str]:
    """The parts of ``url`` that may identify it (see the module docstring), identifying or not.

    Split by hand rather than with urlsplit, which refuses malformed hosts
    (``[::1``) and ports: a secret has to be scrubbed however it is written."""
    rest = url.split("://", 1)[1]
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    parts = [url, fragment, query]
    if userinfo:
        user, _, password = userinfo.partition(":")
        parts += [userinfo, user, password]
    if hostport.startswith("[") and "]" in hostport:
        after_host = hostport[hostport.index("]") + 1:]
        parts.append(after_host.rpartition(":")[2] if ":" in after_host else "")
    elif ":" in hostport:
        parts.append(hostport.rpartition(":")[2])
    parts += path.split("/")
    for pair in re.split(r"[&;]", query):
        parts.append(pair.partition("=")[2])
    decoded = [unquote(part) for part in parts] + [unquote_plus(part) for part in parts]
    return parts + decoded


def secret_fragments(value: str) -> set[str]:
    """The texts scrubbed for secret ``value``: the value itself and, when it is
    a URL, its identifying parts."""
    fragments = {value} if len(value) >= MIN_SECRET_LENGTH else set()
    if _URL_SHAPED.match(value):
        fragments.update(part for part in _url_parts(value) if is_identifying(part))
    return fragments


# _known()'s last answer and what it was worked out from: (variable names, their names as
# os.environ stores them, their raw values, the state of _seen, the answer).
_known_memo: tuple | None = None


def _env_keys(names: tuple[str, ...]) -> tuple | None:
    encode = getattr(os.environ, "encodekey", None)
    return tuple(encode(name) for name in names) if encode is not None else None


def _raw_env_values(names: tuple[str, ...], keys: tuple | None) -> tuple:
    """The values of variables ``names`` as os.environ holds them, to tell whether one changed.

    Read from the dict inside CPython's os.environ when there is one: os.environ.get
    runs the generic Mapping code, which made up most of the cost of every log line."""
    data = getattr(os.environ, "_data", None)
    if keys is not None and type(data) is dict:
        return tuple([data.get(key) for key in keys])
    return tuple([os.environ.get(name) for name in names])


def _known() -> frozenset[str]:
    """The secret values known now: those remembered, and those of settings.SECRET_ENV_VARS.
    Worked out again only when one of these changed."""
    global _known_memo
    names = tuple(settings.SECRET_ENV_VARS)
    memo = _known_memo
    keys = memo[1] if memo is not None and memo[0] == names else _env_keys(names)
    raw = _raw_env_values(names, keys)
    seen = (_seen_additions, len(_seen))
    if memo is not None and memo[0] == names and memo[2] == raw and memo[3] == seen:
        return memo[4]
    values = set(_seen)
    for name in names:
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LENGTH:
            values.add(value)
    known = frozenset(values)
    _known_memo = (names, keys, raw, seen, known)
    return known


class _Matcher:
    """Finds secret fragments (non-empty texts) in a text and redacts them."""

    def __init__(self, fragments: set[str]):
        # Longest first: where two fragments start at one place, the longer one is taken.
        alternatives = "|".join(re.escape(f) for f in sorted(fragments, key=lambda f: (-len(f), f)))
        self.any = re.compile(alternatives)
        # A lookahead matches at every position, so overlapping fragments are all found.
        self.every = re.compile(f"(?=({alternatives}))")

    def sub(self, text: str) -> str:
        if self.any.search(text) is None:
            return text
        spans: list[list[int]] = []
        for match in self.every.finditer(text):
            start, end = match.start(), match.end(1)
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
        pieces, position = [], 0
        for start, end in spans:
            pieces += [text[position:start], REDACTED]
            position = end
        pieces.append(text[position:])
        return "".join(pieces)


@functools.lru_cache(maxsize=8)
def _matcher_for(values: frozenset[str]) -> _Matcher | None:
    fragments = set().union(*(secret_fragments(value) for value in values))
    # An empty alternation would match everywhere: no fragments, nothing to scrub.
    return _Matcher(fragments) if fragments else None


def _matcher() -> _Matcher | None:
    """The matcher for the secrets known now (built once per set of values)."""
    return _matcher_for(_known())


def scrub(obj):
    """``obj`` with every known secret value, and every identifying part of a
    URL secret, replaced by REDACTED (deep, for JSON-like data)."""
    matcher = _matcher()
    if matcher is None:
        return obj
    return _scrub(obj, matcher)


def _scrub(obj, matcher: _Matcher):
    if isinstance(obj, str):
        return matcher.sub(obj)
    if isinstance(obj, dict):
        return {_scrub(k, matcher): _scrub(v, matcher) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, matcher) for v in obj]
    return obj


# Attributes every LogRecord has; any other attribute came from ``extra`` (or a
# library) and is written by the JSON formatter, so it is scrubbed too.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_PLAIN_TYPES = (int, float, bool, type(None))


def _scrub_field(value, matcher: _Matcher):
    """``value`` of a log record's field, scrubbed deep; an object of another type
    is replaced by its scrubbed text only when that text held a secret."""
    if isinstance(value, str):
        return matcher.sub(value)
    if isinstance(value, dict):
        return {_scrub_field(k, matcher): _scrub_field(v, matcher) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_field(v, matcher) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrub_field(v, matcher) for v in value)
    if isinstance(value, _PLAIN_TYPES):
        return value
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - an object that cannot show itself cannot show a secret either
        return value
    clean = matcher.sub(text)
    return value if clean == text else clean


class ScrubFilter(logging.Filter):
    """Removes known secrets from log records before any formatter sees them:
    from the message, the traceback (exc_info / exc_text), stack_info, and
    every non-standard attribute (``extra`` fields), deep. Always passes the
    record on."""

    def filter(self, record: logging.LogRecord) -> bool:
        matcher = _matcher()
        if matcher is None:
            return True
        self._message(record, matcher)
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            clean = matcher.sub(record.exc_text)
            if clean != record.exc_text:
                # The JSON formatter formats exc_info afresh; without it, it writes the scrubbed exc_text.
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = matcher.sub(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRS:
                setattr(record, name, _scrub_field(value, matcher))
        return True

    @staticmethod
    def _message(record: logging.LogRecord, matcher: _Matcher) -> None:
        if isinstance(record.msg, dict) and not record.args:
            record.msg = _scrub_field(record.msg, matcher)  # the JSON formatter writes a dict message as fields
            return
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - any error of the message's own formatting
            # A message that does not format would be dumped raw, arguments and all, by Handler.handleError.
            message = f"{record.msg} (unformattable log arguments: {record.args!r})"
        clean = matcher.sub(message)
        if clean != message:
            record.msg, record.args = clean, ()


_TRACEBACKS = logging.Formatter()
