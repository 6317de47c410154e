"""Settings from the environment, base URL rules, and the Secret wrapper."""

from __future__ import annotations

import copy
import pickle

import pytest

from runcomfy_async import (
    DEFAULT_BASE_URL,
    Limits,
    MissingTokenError,
    RunComfy,
    Timeouts,
)
from runcomfy_async._config import (
    BASE_URL_ENV_VAR,
    TOKEN_ENV_VARS,
    Secret,
    base_url_from_env,
    is_loopback_host,
    normalize_base_url,
    token_from_env,
)

TOKEN = "rc-test-SECRET-0123456789"


@pytest.fixture
def clean_env(monkeypatch):
    """No token or base URL variable set."""
    for name in (*TOKEN_ENV_VARS, BASE_URL_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- token -----------------------------------------------------------------------------


def test_token_env_var_names_and_order():
    """The official tools' variables, in the contract's order."""
    assert ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_API_KEY") == TOKEN_ENV_VARS


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"RUNCOMFY_API_TOKEN": "a", "RUNCOMFY_TOKEN": "b", "RUNCOMFY_API_KEY": "c"},
            "a",
            id="api-token-first",
        ),
        pytest.param({"RUNCOMFY_TOKEN": "b", "RUNCOMFY_API_KEY": "c"}, "b", id="token-second"),
        pytest.param({"RUNCOMFY_API_KEY": "c"}, "c", id="api-key-last"),
        pytest.param({"RUNCOMFY_API_TOKEN": "", "RUNCOMFY_TOKEN": "b"}, "b", id="empty-skipped"),
        pytest.param(
            {"RUNCOMFY_API_TOKEN": "  \n", "RUNCOMFY_API_KEY": "c"}, "c", id="blank-skipped"
        ),
        pytest.param({"RUNCOMFY_API_TOKEN": " a \n"}, "a", id="stripped"),
    ],
)
def test_token_from_env_order(clean_env, env, expected):
    """The first non-empty variable wins."""
    for name, value in env.items():
        clean_env.setenv(name, value)

    assert Secret(expected) == token_from_env()


def test_token_from_env_none(clean_env):
    """No variable set: no token."""
    assert None is token_from_env()


def test_token_from_given_mapping(clean_env):
    """An explicit mapping is read instead of os.environ."""
    clean_env.setenv("RUNCOMFY_API_TOKEN", "from-os")

    assert Secret("from-map") == token_from_env({"RUNCOMFY_API_KEY": "from-map"})


def test_client_reads_the_token_from_env(clean_env):
    """RunComfy() with no token takes it from the environment."""
    clean_env.setenv("RUNCOMFY_TOKEN", TOKEN)

    client = RunComfy()

    assert Secret(TOKEN) == client._transport._token


def test_client_argument_beats_env(clean_env):
    """An explicit token overrides the environment."""
    clean_env.setenv("RUNCOMFY_API_TOKEN", "from-env")

    assert Secret(TOKEN) == RunComfy(TOKEN)._transport._token


def test_client_without_token(clean_env):
    """No token anywhere is a MissingTokenError (not an APIError) naming the variables."""
    with pytest.raises(MissingTokenError, match="RUNCOMFY_API_TOKEN"):
        RunComfy()


# -- base URL --------------------------------------------------------------------------


def test_default_base_url(clean_env):
    """Without the variable the production host is used."""
    assert "https://model-api.runcomfy.net" == DEFAULT_BASE_URL == base_url_from_env()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "https://model-api-int.runcomfy.net", "https://model-api-int.runcomfy.net", id="host"
        ),
        pytest.param(
            "https://model-api-int.runcomfy.net/", "https://model-api-int.runcomfy.net", id="slash"
        ),
        pytest.param(
            "https://model-api-int.runcomfy.net/v1", "https://model-api-int.runcomfy.net", id="v1"
        ),
        pytest.param(
            "https://model-api-int.runcomfy.net/v1/",
            "https://model-api-int.runcomfy.net",
            id="v1-slash",
        ),
        pytest.param(
            "  https://proxy.example/runcomfy/v1 ", "https://proxy.example/runcomfy", id="prefix"
        ),
        pytest.param("http://127.0.0.1:8000", "http://127.0.0.1:8000", id="loopback-http"),
        pytest.param("", DEFAULT_BASE_URL, id="empty-is-default"),
    ],
)
def test_base_url_from_env(clean_env, value, expected):
    """The variable is normalised: no trailing slash, no ``/v1``."""
    clean_env.setenv(BASE_URL_ENV_VAR, value)

    assert expected == base_url_from_env()


def test_client_reads_the_base_url_from_env(clean_env):
    """RunComfy() with no base_url takes it from the environment."""
    clean_env.setenv(BASE_URL_ENV_VAR, "https://model-api-int.runcomfy.net/v1/")

    assert "https://model-api-int.runcomfy.net" == RunComfy(TOKEN)._transport.base_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://localhost:8000/", "http://localhost:8000", id="localhost"),
        pytest.param("http://127.0.0.1:1/v1", "http://127.0.0.1:1", id="v4"),
        pytest.param("http://127.9.9.9", "http://127.9.9.9", id="v4-any-127"),
        pytest.param("http://[::1]:8000", "http://[::1]:8000", id="v6"),
        pytest.param(
            "HTTPS://Model-API.runcomfy.net", "https://Model-API.runcomfy.net", id="upper-scheme"
        ),
        pytest.param("https://h.example/v1x", "https://h.example/v1x", id="v1-prefix-of-segment"),
    ],
)
def test_normalize_base_url(url, expected):
    """http is allowed on loopback only; the path loses ``/`` and ``/v1``."""
    assert expected == normalize_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://model-api.runcomfy.net", id="http-public"),
        pytest.param("http://10.0.0.1:8000", id="http-private"),
        pytest.param("http://127.evil.example", id="http-127-dns-name"),
        pytest.param("http://127.0.0.1.nip.io", id="http-127-prefixed-name"),
        pytest.param("http://localhost.evil.example", id="http-localhost-dns-name"),
        pytest.param("ftp://model-api.runcomfy.net", id="ftp"),
        pytest.param("model-api.runcomfy.net", id="no-scheme"),
        pytest.param("https://", id="no-host"),
        pytest.param("https://user:pw@model-api.runcomfy.net", id="credentials"),
        pytest.param("https://model-api.runcomfy.net?x=1", id="query"),
        pytest.param("https://model-api.runcomfy.net#x", id="fragment"),
    ],
)
def test_normalize_base_url_refuses(url):
    """Clear-text http off loopback and odd URLs are refused."""
    with pytest.raises(ValueError):
        normalize_base_url(url)


def test_client_refuses_http_base_url():
    """The client will not send its token over http to a remote host."""
    with pytest.raises(ValueError, match="https"):
        RunComfy(TOKEN, base_url="http://model-api.runcomfy.net")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("localhost", True, id="localhost"),
        pytest.param("LOCALHOST", True, id="localhost-upper"),
        pytest.param("127.0.0.1", True, id="v4"),
        pytest.param("127.255.255.254", True, id="v4-range"),
        pytest.param("::1", True, id="v6"),
        pytest.param("[::1]", True, id="v6-bracketed"),
        pytest.param("128.0.0.1", False, id="v4-other"),
        pytest.param("127.evil.example", False, id="dns-name-127"),
        pytest.param("localhost.example", False, id="dns-name-localhost"),
        pytest.param("::2", False, id="v6-other"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_loopback_host(host, expected):
    """Only literal loopback addresses and ``localhost`` are loopback."""
    assert expected is is_loopback_host(host)


# -- Secret ----------------------------------------------------------------------------


def test_secret_hides_itself():
    """repr, str and f-strings show stars, never the value."""
    secret = Secret(TOKEN)

    assert ("Secret('***')", "Secret('***')", "Secret('***')") == (
        repr(secret),
        str(secret),
        f"{secret}",
    )
    assert TOKEN not in repr([secret, {"token": secret}])


def test_secret_reveal():
    """Only ``reveal()`` gives the value back."""
    assert TOKEN == Secret(TOKEN).reveal()


def test_secret_equality_and_hash():
    """Secrets compare by value and can be dict keys."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert 1 == len({Secret("a"), Secret("a")})


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secret_refuses_pickling(protocol):
    """A Secret cannot be pickled with any protocol."""
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(TOKEN), protocol=protocol)


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_secret_refuses_copying(copier):
    """Copying goes through the same refusal: no second place holds the token."""
    with pytest.raises(TypeError):
        copier(Secret(TOKEN))


def test_secret_has_no_dict():
    """A Secret has slots only: nothing else can be attached and leaked."""
    with pytest.raises(AttributeError):
        Secret(TOKEN).extra = 1  # type: ignore[attr-defined]


# -- other settings --------------------------------------------------------------------


def test_timeouts_defaults():
    """Connect, read and total time limits have defaults."""
    assert (10.0, 60.0, 90.0) == (Timeouts().connect, Timeouts().read, Timeouts().total)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"max_jobs_in_flight": 0}, id="no-jobs"),
        pytest.param({"max_concurrent_requests": 0}, id="no-requests"),
        pytest.param({"initial_rate": 0.0}, id="zero-rate"),
        pytest.param({"min_rate": 0.0}, id="zero-min-rate"),
        pytest.param({"burst": 0.5}, id="burst-under-1"),
    ],
)
def test_limits_refuse_nonsense(settings):
    """Limits cannot be built with impossible settings."""
    with pytest.raises(ValueError):
        Limits(**settings)
