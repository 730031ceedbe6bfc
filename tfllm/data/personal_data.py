"""Redaction of personal data and secrets: e-mail addresses, phone numbers, IP addresses,
payment card numbers and credentials, each replaced by a typed placeholder.

The patterns favour keeping text over redacting it where a look-alike is common in code and
documentation: version numbers (`v1.2.3`, `2.21.0`, `version 1.2.3.4`), dates, times, UUIDs,
git hashes, ISBNs and other long numbers stay. What is redacted:

- `<EMAIL>`: `local@domain.tld`.
- `<PHONE>`: numbers written with a leading `+` and country code (`+44 20 7946 0958`), or
  North American style with separators (`(555) 123-4567`, `555-123-4567`, `555.123.4567`).
  Plain runs of digits are not phones: too many numbers in code look like them.
- `<IP_ADDRESS>`: valid IPv4 and IPv6 addresses, except those that name no machine: loopback,
  unspecified, multicast, reserved (netmasks such as 255.255.255.0 fall here) and the
  documentation ranges (192.0.2.0/24, 2001:db8::/32...). An IPv4 address inside a longer
  dotted chain or after "v"/"version" is a version number.
- `<PAYMENT_CARD>`: 13 to 19 digits, optionally grouped by spaces or dashes, with a card
  network's prefix and a valid Luhn check digit.
- `<SECRET>`: AWS access key ids, GitHub, Slack, Stripe, Google and OpenAI-style keys, PEM
  private key blocks, and the value of `api_key = ...`, `token: ...`, `password=...` (and
  similar) assignments when it is 16+ characters of letters and digits with high entropy.
"""

import ipaddress
import math
import re
from collections import Counter

KINDS = ("secret", "email", "payment_card", "ip_address", "phone")
PLACEHOLDERS = {kind: f"<{kind.upper()}>" for kind in KINDS}

# Speed: Python's `re` skips ahead fast only when a pattern starts with a literal or a character
# set, so each pattern below starts with one (boundary lookbehinds come after the first
# character, or the match is checked in Python), and each key pattern runs only on text that
# holds one of its literals, which `in` finds far faster than a regex.
_SECRETS = (
    (("PRIVATE KEY",), re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\sA-Za-z0-9+/=:,-]*)",
        re.DOTALL,
    )),
    (("AKIA", "ASIA"), re.compile(r"A(?:KIA|SIA)[A-Z0-9]{16}\b")),
    (("AIza",), re.compile(r"AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), re.compile(r"gh[pousr]_[A-Za-z0-9]{36,255}\b")),
    (("github_pat_",), re.compile(r"github_pat_[A-Za-z0-9_]{22,255}\b")),
    (("xox",), re.compile(r"xox[abposre]-[A-Za-z0-9-]{10,}")),
    (("k_live_", "k_test_"), re.compile(r"[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b")),
    # OpenAI-style: letters and digits both, so that `sk-learn-is-a-long-package-name` stays.
    (("sk-",), re.compile(
        r"sk-(?:proj-|svcacct-|admin-)?(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}"
    )),
)
# `name = value`, `name: value`, `"name": "value"`, `name => value`: the value, found first,
# then the name before it. Only the value is redacted.
_ASSIGNED_VALUE = re.compile(r"[:=>][ \t]*[\"']?([A-Za-z0-9_\-+/.=]{16,})")
_SECRET_NAME_BEFORE = re.compile(
    r"(?i)(?:key|token|secret|passw(?:or)?d|pwd|credentials?)[\w-]{0,20}[\"']?[ \t]*(?:=|:|=>)[ \t]*[\"']?$"
)
_EMAIL_DOMAIN = re.compile(r"@(?!self\.)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![\w-])")
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}$")
# Cards, IPv4 addresses and phone numbers in one pass, told apart by the group that matched.
# Cards: 13-19 digits written whole, or in groups of 2-6 after a first group of 4 (4-4-4-4,
# Amex's 4-6-5) with one kind of separator, so that a list of single digits is not a card.
# Phones: a leading "+" and country code, or North American style with separators.
_NUMBER = re.compile(
    r"[\d+(](?<![\w.+-][\d+(])(?:"
    r"(?P<payment_card>(?<=\d)\d{3}(?:\d{9,15}|(?P<sep>[ -])\d{2,6}(?:(?P=sep)\d{2,6}){1,3}))"
    r"|(?P<ip_address>(?<=\d)\d{0,2}(?:\.\d{1,3}){3})"
    r"|(?P<phone>(?<=\+)\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,8}){1,4}"
    r"|(?<=\+)\d{10,15}"
    r"|(?<=\()\d{3}\) ?\d{3}[ .-]\d{4}"
    r"|(?<=\d)\d{2}(?P<phone_sep>[.-])\d{3}(?P=phone_sep)\d{4})"
    r")(?![\w-]|\.\d)"
)
# From the first two colons; the hex group before them is added by `_ipv6_spans`.
_IPV6_TAIL = re.compile(r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*")
_IPV6_HEAD = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}$")
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bversion|\brelease|\bver\.?|\bsection|§)\s*[:=]?\s*$")
# Issuer prefixes (IIN) of Visa, Mastercard, American Express, Discover, JCB, Diners Club,
# UnionPay and Maestro; a number without one is not a card, whatever its check digit.
_CARD_PREFIX = re.compile(r"4|5[0-8]|2[2-7]|3[0-8]|6")
_NO_MACHINE = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "0.0.0.0/8", "2001:db8::/32")
]


def redact_personal_data(text: str) -> tuple:
    """`(redacted_text, counts)`: `text` with each match replaced by its placeholder, and the
    number of redactions per kind (only kinds that occurred).

    Redacting twice changes nothing: the patterns run again until nothing matches (a
    redaction can remove what kept a neighbouring match from matching), and no placeholder
    matches any pattern.

    Example:

    >>> redact_personal_data("Mail ada@example.org from 203.0.114.7, not 127.0.0.1 (v1.2.3.4).")
    ('Mail <EMAIL> from <IP_ADDRESS>, not 127.0.0.1 (v1.2.3.4).', {'email': 1, 'ip_address': 1})
    """
    counts = Counter()
    # Each pass replaces matched characters by placeholders, which no pattern matches, so it
    # ends; in practice a second pass finds nothing.
    for _ in range(8):
        redacted = _redact_once(text, counts)
        if redacted == text:
            break
        text = redacted
    return text, {kind: counts[kind] for kind in KINDS if counts[kind]}


def _redact_once(text: str, counts: Counter) -> str:
    for hints, pattern in _SECRETS:
        if any(hint in text for hint in hints):
            text = pattern.sub(lambda m: _replace(_starts_a_word(m), "secret", m, counts), text)
    text = _splice(text, _assigned_secret_spans(text), "secret", counts)
    if "@" in text:
        text = _splice(text, _email_spans(text), "email", counts)
    text = _NUMBER.sub(lambda m: _number(m, counts), text)
    return _splice(text, _ipv6_spans(text), "ip_address", counts)


def _number(match, counts):
    if match.group("payment_card"):
        return _replace(_is_card(match.group()), "payment_card", match, counts)
    if match.group("ip_address"):
        return _replace(_is_ipv4(match), "ip_address", match, counts)
    return _replace(_is_phone(match.group()), "phone", match, counts)


def _starts_a_word(match) -> bool:
    """No letter, digit or "_" just before the match (a PEM block may follow anything)."""
    start = match.start()
    before = match.string[start - 1 : start]
    return match.group().startswith("-") or not (before.isalnum() or before == "_")


def _replace(condition, kind, match, counts):
    if not condition:
        return match.group()
    counts[kind] += 1
    return PLACEHOLDERS[kind]


def _splice(text, spans, kind, counts):
    """`text` with the (start, end) `spans`, in order and disjoint, replaced by `kind`'s placeholder."""
    parts, end = [], 0
    for start, stop in spans:
        if start < end:
            continue
        parts += [text[end:start], PLACEHOLDERS[kind]]
        end = stop
        counts[kind] += 1
    return "".join(parts) + text[end:] if parts else text


def _assigned_secret_spans(text):
    for match in _ASSIGNED_VALUE.finditer(text):
        start, end = match.span(1)
        # The name first: most long values (`self.assertEqual`) follow no secret's name.
        if _SECRET_NAME_BEFORE.search(text, max(0, start - 48), start) and _looks_random(match.group(1)):
            yield start, end


def _looks_random(value: str) -> bool:
    """Letters and digits mixed, and at least 3.5 bits of entropy per character: a key, not
    `tokenizer.encode_batch` or `os.environ.get`."""
    if not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
        return False
    n = len(value)
    entropy = -sum(k / n * math.log2(k / n) for k in Counter(value).values())
    return entropy >= 3.5


def _email_spans(text):
    for match in _EMAIL_DOMAIN.finditer(text):
        local = _EMAIL_LOCAL.search(text, max(0, match.start() - 65), match.start())
        if local is not None:
            yield local.start(), match.end()


def _ipv6_spans(text):
    for match in _IPV6_TAIL.finditer(text):
        head = _IPV6_HEAD.search(text, max(0, match.start() - 5), match.start())
        if head is None:
            continue
        start, end = head.start(), match.end()
        # A sentence's full stop, or a dotted tail that is not an IPv4 ending.
        while end > start and text[end - 1] in ".:" and text[end - 2 : end] != "::":
            end -= 1
        if end < len(text) and (text[end].isalnum() or text[end] == "_"):
            continue
        if _is_ipv6(text[start:end]):
            yield start, end


def _is_card(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19 or not _CARD_PREFIX.match(number):
        return False
    # Luhn: double every second digit from the right.
    total = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return total % 10 == 0


def _is_phone(number: str) -> bool:
    return 7 <= sum(c.isdigit() for c in number) <= 15


def _is_ipv4(match) -> bool:
    if _VERSION_BEFORE.search(match.string, max(0, match.start() - 12), match.start()):
        return False
    try:
        address = ipaddress.IPv4Address(match.group())
    except ValueError:
        return False
    return _names_a_machine(address)


def _is_ipv6(candidate: str) -> bool:
    # Slices (`a[::2]`) and C++ scopes (`std::move`, `a::b`) look like short IPv6 addresses;
    # a real one written out has at least three groups.
    if sum(1 for group in candidate.split(":") if group) < 3:
        return False
    try:
        address = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return _names_a_machine(address)


def _names_a_machine(address) -> bool:
    if address.is_loopback or address.is_unspecified or address.is_multicast or address.is_reserved:
        return False
    return not any(address in network for network in _NO_MACHINE if network.version == address.version)
