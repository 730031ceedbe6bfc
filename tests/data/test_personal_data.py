import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfllm.data.personal_data import KINDS, PLACEHOLDERS, redact_personal_data

PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM2\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    "kind, value",
    [
        ("email", "ada.lovelace+notes@mail.example.co.uk"),
        ("email", "j_doe@example.com"),
        ("phone", "+44 20 7946 0958"),
        ("phone", "+1 (555) 123-4567"),
        ("phone", "+4915112345678"),
        ("phone", "(555) 123-4567"),
        ("phone", "555-123-4567"),
        ("phone", "555.123.4567"),
        ("ip_address", "8.8.8.8"),
        ("ip_address", "10.0.0.12"),
        ("ip_address", "2606:4700:4700::1111"),
        ("ip_address", "2001:4860:4860:0:0:0:0:8888"),
        ("payment_card", "4111 1111 1111 1111"),
        ("payment_card", "5500-0000-0000-0004"),
        ("payment_card", "378282246310005"),
        ("payment_card", "3782 822463 10005"),
        ("secret", "AKIAIOSFODNN7EXAMPLE"),
        ("secret", "ghp_" + "a1B2c3D4e5" * 4),
        ("secret", "xoxb-123456789012-abcdefABCDEF"),
        ("secret", "sk-" + "Ab3dE6gH9j" * 4),
        ("secret", PRIVATE_KEY),
    ],
)
def test_each_kind_is_redacted_with_its_placeholder_and_counted(kind, value):
    text = f"Contact: {value}, thanks."
    assert redact_personal_data(text) == (f"Contact: {PLACEHOLDERS[kind]}, thanks.", {kind: 1})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("api_key = 'Zx8kQ2mP9vL4nR7tY3wB'", "api_key = '<SECRET>'"),
        ('{"auth_token": "Zx8kQ2mP9vL4nR7tY3wB"}', '{"auth_token": "<SECRET>"}'),
        ("PASSWORD: hunter2hunter2XyZ9q", "PASSWORD: <SECRET>"),
    ],
)
def test_assigned_secrets_lose_their_value_and_keep_their_name(text, expected):
    assert redact_personal_data(text) == (expected, {"secret": 1})


@pytest.mark.parametrize(
    "text",
    [
        "Install v1.2.3, 1.2.3 or 2.21.0; version 1.2.3.4 and v1.2.3.4 and 1.2.3.4.5 are versions too.",
        "Section 8.2.4.44 of the spec.",
        "Dates 2024-01-15 and 15/01/2024 at 12:30:45 or 12:30.",
        "ISBN 978-3-16-148410-0 and 9780306406157; a non-Luhn 4111111111111112 and 1234567890123.",
        "uuid 550e8400-e29b-41d4-a716-446655440000, sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "Loopback 127.0.0.1 and ::1, any 0.0.0.0, netmask 255.255.255.0, docs 192.0.2.1 and 2001:db8::1.",
        "Slices a[::2], b[1:2:3], std::vector<int>, a MAC 00:1a:2b:3c:4d:5e, ratio 1:2:3.",
        "Matrix product y = x@self.weight; decorator @property.",
        "token = tokenizer.encode_batch(x); password = os.environ.get('PASSWORD_FILE_NAME')",
        "notAKIAIOSFODNN7EXAMPLE and sk-learn-is-a-long-package-name",
        "Numbers 100 200 3000, (1, 2, 3), 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 and 1-800-FLOWERS.",
    ],
)
def test_look_alikes_are_kept(text):
    assert redact_personal_data(text) == (text, {})


def test_counts_every_redaction_by_kind():
    text = "a@example.com b@example.com 8.8.8.8 and 555-123-4567"
    assert redact_personal_data(text) == (
        "<EMAIL> <EMAIL> <IP_ADDRESS> and <PHONE>",
        {"email": 2, "ip_address": 1, "phone": 1},
    )


def test_placeholders_are_named_after_the_kinds():
    assert set(PLACEHOLDERS) == set(KINDS)
    assert PLACEHOLDERS["ip_address"] == "<IP_ADDRESS>" and PLACEHOLDERS["payment_card"] == "<PAYMENT_CARD>"


# Digits, separators and the characters the patterns look for, so that the search finds near-misses.
pii_like = st.lists(
    st.sampled_from(list("0123456789abcfxAKI .:-_+@()[]/=\n'\"") + ["sk-", "api_key=", ".com", "xoxb-", "AKIA"]),
    max_size=80,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(pii_like)
def test_redacting_twice_changes_nothing(text):
    once, _ = redact_personal_data(text)
    assert redact_personal_data(once) == (once, {})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdefghijklmnopqrstuvwxyz .,;:!?'\"()\n\t"))))
def test_lowercase_prose_without_digits_at_signs_or_dashes_is_unchanged(text):
    # Every pattern needs a digit, an "@", an uppercase letter or a "-"/"_" joining a key's parts.
    assert redact_personal_data(text) == (text, {})
