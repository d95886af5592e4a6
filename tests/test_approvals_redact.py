"""The shared redaction (auditor.approvals.redact) on real public samples (Google auth test data, the
Azurite README, the AWS CLI docs; tests/data/approvals/SOURCES.md), hostile shapes and properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auditor.approvals.redact import MAX_DEPTH, MAX_ITEMS, MAX_STRING, REDACTED, redact, redact_text, secret_name

DATA = Path(__file__).parent / "data" / "approvals"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AWS_DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_google_service_account_key_file_as_a_parameter():
    """A credentials file passed to a tool, as an object and as the text of a file to write."""
    document = json.loads((DATA / "google_gdch_service_account.json").read_text())
    pem = document["private_key"]
    assert redact({"credentials": document}) == {"credentials": REDACTED}  # a secret name hides it whole
    as_object = redact({"service_account": document})["service_account"]
    assert as_object["private_key"] == REDACTED and as_object["project"] == "project_foo"
    as_text = redact({"path": "/tmp/sa.json", "content": (DATA / "google_gdch_service_account.json").read_text()})
    body = pem.split("\n")[1]
    assert body not in json.dumps(as_text) and "MIIEpAIBAAKCAQEA" not in json.dumps(as_text)
    assert json.loads(as_text["content"])["name"] == "service_identity_name"  # the rest still reads


def test_google_authorized_user_secrets_by_name_and_in_text():
    text = (DATA / "google_authorized_user.json").read_text()
    document = json.loads(text)
    redacted = redact(document)
    assert (redacted["client_secret"], redacted["refresh_token"]) == (REDACTED, REDACTED)
    assert redacted["client_id"] == "123" and redacted["quota_project"] == "offiredulassed"
    assert "alabalaportocala" not in redact_text(text)
    assert json.loads(redact_text(text))["type"] == "authorized_user"


def test_azurite_connection_strings_and_account_key():
    text = (DATA / "azurite_readme_connection_strings.md").read_text()
    assert text.count(AZURITE_KEY) == 3
    redacted = redact_text(text)
    assert AZURITE_KEY not in redacted and "AccountKey=key1" not in redacted
    assert "AccountName=devstoreaccount1;AccountKey=[redacted];BlobEndpoint=http://127.0.0.1:10000" in redacted
    assert redact({"AZURE_STORAGE_KEY": AZURITE_KEY}) == {"AZURE_STORAGE_KEY": REDACTED}


def test_aws_cli_configure_examples_lose_the_secret_values_only():
    text = (DATA / "aws_cli_configure_set_examples.rst").read_text()
    redacted = redact_text(text)
    assert "default_secret_key" not in redacted
    assert "aws configure set aws_secret_access_key [redacted]" in redacted
    assert "aws_secret_access_key = [redacted]" in redacted
    assert "region = us-west-1" in redacted and "aws configure set preview.cloudsearch true" in redacted


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"export AWS_SECRET_ACCESS_KEY={AWS_DOC_SECRET}", AWS_DOC_SECRET),
        (f"creds: AKIAIOSFODNN7EXAMPLE {AWS_DOC_SECRET} us-west-2", AWS_DOC_SECRET),
        ("Authorization: Bearer ya29.a0AfH6SMBxYz-secret_value", "ya29.a0AfH6SMBxYz-secret_value"),
        ("postgresql://app:p%40ss-w0rd@db:5432/prod", "p%40ss-w0rd"),
        ("Server=tcp:db;Database=x;User ID=sa;Password=Sup3r;Encrypt=True", "Sup3r"),
        ("https://acct.blob.core.windows.net/c?sv=2021&sig=abcDEF%2Bxyz&se=2030", "abcDEF%2Bxyz"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNry"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "b3BlbnNzaC1rZXktdjEAAAAA"),  # cut short
        ('{"api_key": "sk-proj-abcdefghijklmnop1234"}', "sk-proj-abcdefghijklmnop1234"),
        ("mysql --password hunter2 -h db", "hunter2"),
    ],
)
def test_secrets_inside_free_text(text, secret):
    assert secret not in redact_text(text)
    assert REDACTED in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1 hex digest, 40 characters
        "arn:aws:s3:::prod-logs/2026/11/20/object.json",
        "the secret ingredient is love",
        "rm -rf /var/tmp/build",
        "https://example.com/path?page=2",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("clientSecret", True),
        ("X-Api-Key", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("SessionToken", True),
        ("Authorization", True),
        ("AccountKey", True),
        ("private_key", True),
        ("Key", False),  # an S3 object key: scanned by value, not hidden by name
        ("KeyId", False),
        ("Bucket", False),
        ("monkey", False),
    ],
)
def test_secret_names(name, secret):
    assert secret_name(name) is secret


def test_hostile_shapes_are_bounded_and_json_ready():
    deep: dict = {}
    cursor = deep
    for _ in range(MAX_DEPTH + 10):
        cursor["next"] = {}
        cursor = cursor["next"]
    wide = {str(i): i for i in range(MAX_ITEMS + 5)}
    huge = "A" * (MAX_STRING * 20)
    cyclic: list = []
    cyclic.append(cyclic)
    value = {
        "deep": deep,
        "wide": wide,
        "huge": huge,
        "bytes": b"\x00secret",
        "cycle": cyclic,
        "nan": math.nan,
        "object": object(),
        3: "non-string key",
        "tuple": ("a", "b"),
    }
    out = redact(value)
    text = json.dumps(out, allow_nan=False)
    assert "[too deep]" in text and "[5 more entries]" in text
    assert len(out["huge"]) <= MAX_STRING and out["huge"].endswith("more characters]")
    assert out["bytes"] == "[7 bytes]" and "secret" not in text
    assert out["object"] == "[object]" and out["nan"] == "nan" and out["3"] == "non-string key"
    assert out["tuple"] == ["a", "b"]


SECRETS = st.sampled_from(
    [
        lambda s: {"password": s},
        lambda s: {"headers": {"Authorization": f"Bearer {s}"}},
        lambda s: {"dsn": f"postgresql://user:{s}@host/db"},
        lambda s: {"cmd": f"run --password={s} now"},
        lambda s: {"list": [{"nested": {"api_key": s}}]},
        lambda s: {"env": f"CLIENT_SECRET={s};OTHER=1"},
    ]
)
SECRET_VALUES = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789", min_size=12, max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(shape=SECRETS, secret=SECRET_VALUES, noise=st.dictionaries(st.text(max_size=8), JSON, max_size=3))
def test_a_planted_secret_never_survives(shape, secret, noise):
    # The secret must be new text: not a piece of the shape's own words ("Authorizatio") or of the noise.
    assume(secret not in json.dumps(shape("")) and secret not in json.dumps(noise))
    params = noise | shape(secret)
    assert secret not in json.dumps(redact(params))


@settings(max_examples=150, deadline=None)
@given(value=JSON)
def test_redaction_is_idempotent_and_json_ready(value):
    once = redact(value)
    json.dumps(once, allow_nan=False)
    assert redact(once) == once
