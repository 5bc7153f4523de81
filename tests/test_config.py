"""The runtime config: defaults, file < env < flags, every error's message, docs in sync."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from edgesplit.config import SECTIONS, Config, EdgeSection, SecuritySection
from edgesplit.config_load import check_security, is_loopback, load_config
from edgesplit.config_render import (
    config_reference_markdown,
    config_to_toml,
    render_default_config,
)
from edgesplit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "edge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.edge.timeout_ms == 1000.0
    assert config.edge.providers == ("tensorrt", "cuda", "openvino", "cpu")
    assert config.cloud.bind == "tcp://127.0.0.1:5555"
    assert config.policy.threshold == 0.9
    assert config.policy.slo_ms is None
    assert config.security.curve is True
    assert config.source_of("edge", "timeout_ms") == "default"


def test_file_values_are_typed_and_recorded(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [logging]
        level = "DEBUG"
        [edge]
        timeout_ms = 250          # an integer for a float key is fine
        providers = ["cuda", "cpu"]
        samples = 10
        [policy]
        threshold = "off"
        slo_ms = 40.5
        [metrics]
        port = 9100
        """,
    )
    config = load_config(path, env={})
    assert config.logging.level == "debug"
    assert config.edge.timeout_ms == 250.0 and isinstance(config.edge.timeout_ms, float)
    assert config.edge.providers == ("cuda", "cpu")
    assert config.edge.samples == 10
    assert config.policy.threshold is None
    assert config.policy.slo_ms == 40.5
    assert config.metrics.port == 9100
    assert config.source_of("edge", "timeout_ms") == f"file {path}"
    assert config.source_of("edge", "backoff_ms") == "default"


def test_env_beats_file_and_flags_beat_env(tmp_path: Path) -> None:
    path = _write(tmp_path, "[edge]\ntimeout_ms = 250\nthreads = 2\nbackoff_ms = 100\n")
    env = {
        "EDGESPLIT_EDGE_TIMEOUT_MS": "300",
        "EDGESPLIT_EDGE_THREADS": "3",
        "EDGESPLIT_CLOUD_PROVIDERS": "cuda, cpu",
        "EDGESPLIT_SECURITY_CURVE": "false",
        "EDGESPLIT_POLICY_THRESHOLD": "off",
        "EDGESPLIT_CACHE": "/tmp/not-a-setting",  # another feature's variable: ignored
        "HOME": "/root",
    }
    config = load_config(path, env=env)
    assert config.edge.timeout_ms == 300.0
    assert config.edge.threads == 3
    assert config.edge.backoff_ms == 100.0  # the file still counts where env is silent
    assert config.cloud.providers == ("cuda", "cpu")
    assert config.security.curve is False
    assert config.policy.threshold is None
    assert config.source_of("edge", "timeout_ms") == "env EDGESPLIT_EDGE_TIMEOUT_MS"

    flags = {"edge.timeout_ms": 400.0, "edge.threads": None, "policy.threshold": "0.7"}
    config = load_config(path, env=env, overrides=flags)
    assert config.edge.timeout_ms == 400.0
    assert config.edge.threads == 3  # None: the flag was not given
    assert config.policy.threshold == 0.7
    assert config.source_of("edge", "timeout_ms") == "flag"
    assert config.source_of("edge", "threads") == "env EDGESPLIT_EDGE_THREADS"


def test_empty_env_value_unsets_an_optional_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[edge]\nconnect = "tcp://10.0.0.2:5555"\n')
    assert load_config(path, env={}).edge.connect == "tcp://10.0.0.2:5555"
    assert load_config(path, env={"EDGESPLIT_EDGE_CONNECT": ""}).edge.connect is None


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = _write(
        conf,
        '[edge]\nbundle = "../bundles/b1"\nresults = "/abs/out.jsonl"\n'
        '[security]\nsecret_key = "keys/edge.key_secret"\n',
    )
    config = load_config(path, env={})
    assert config.edge.bundle == conf.resolve() / "../bundles/b1"
    assert config.edge.results == Path("/abs/out.jsonl")
    assert config.security.secret_key == conf.resolve() / "keys/edge.key_secret"
    # From the environment a relative path stays relative (to the working directory).
    config = load_config(path, env={"EDGESPLIT_EDGE_BUNDLE": "b2"})
    assert config.edge.bundle == Path("b2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[edge]\ntimeout_ms = "abc"\n',
            '{path}: [edge] timeout_ms = "abc": expected a number > 0',
        ),
        ("[edge]\ntimeout_ms = -1\n", "{path}: [edge] timeout_ms = -1: expected a number > 0"),
        (
            "[edge]\npipeline_depth = 17\n",
            "[edge] pipeline_depth = 17: expected an integer in [1, 16]",
        ),
        ("[cloud]\nqueue_size = 2.5\n", "[cloud] queue_size = 2.5: expected an integer >= 1"),
        ("[metrics]\nport = 70000\n", "expected an integer in [0, 65535]"),
        ('[logging]\nlevel = "loud"\n', "expected one of debug, info, warning, error"),
        ('[security]\ncurve = "yes"\n', '[security] curve = "yes": expected true or false'),
        ("[cloud]\nproviders = []\n", "expected a non-empty list of strings"),
        ("[policy]\nthreshold = 1.5\n", 'expected a number in (0, 1], or "off"'),
        ("[policy]\nthreshold = 0\n", 'expected a number in (0, 1], or "off"'),
        ("[edge]\nbattery_level = 1.01\n", "expected a number in [0, 1]"),
        ('[cloud]\nbind = ""\n', "expected a non-empty string"),
        ("[egde]\ntimeout_ms = 1\n", "{path}: unknown section [egde]; did you mean edge?"),
        ("[edge]\ntimeout = 1\n", "{path}: [edge] has no key timeout; did you mean timeout_ms?"),
        ("timeout_ms = 1\n", "{path}: timeout_ms is outside any section; put it under [edge]"),
        (
            "[edge]\nbackoff_ms = 1000\nmax_backoff_ms = 100\n",
            "[edge] max_backoff_ms = 100: edge.max_backoff_ms=100.0 must be >= "
            "edge.backoff_ms=1000.0",
        ),
    ],
)
def test_file_errors_name_the_file_the_key_and_the_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert message.format(path=path) in str(info.value)
    assert "\n" not in str(info.value)


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "[edge]\ntimeout_ms = 1\ntimeout_ms 2\n")
    with pytest.raises(ConfigError, match=r"invalid TOML: .*\(at line 3, column 12\)") as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: config file not found")):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"EDGESPLIT_EDGE_TIMEOUT_MS": "-1"},
            'EDGESPLIT_EDGE_TIMEOUT_MS="-1": expected a number > 0',
        ),
        (
            {"EDGESPLIT_EDGE_TIMEOUT_MS": "abc"},
            'EDGESPLIT_EDGE_TIMEOUT_MS="abc": expected a number',
        ),
        ({"EDGESPLIT_EDGE_TIMEOUT_MS": "nan"}, "expected a number > 0"),
        ({"EDGESPLIT_CLOUD_THREADS": "1.5"}, 'EDGESPLIT_CLOUD_THREADS="1.5": expected an integer'),
        ({"EDGESPLIT_SECURITY_CURVE": "maybe"}, "expected true or false"),
        (
            {"EDGESPLIT_EDGE_TIMEOUTMS": "5"},
            "EDGESPLIT_EDGE_TIMEOUTMS: no such setting; did you mean EDGESPLIT_EDGE_TIMEOUT_MS?",
        ),
        (
            {"EDGESPLIT_EDGE_BACKOFF_MS": "40000"},
            'EDGESPLIT_EDGE_BACKOFF_MS="40000": edge.max_backoff_ms=30000.0 must be >= '
            "edge.backoff_ms=40000.0",
        ),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert message in str(info.value)


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"flag edge\.timeout_ms=-5: expected a number > 0"):
        load_config(None, env={}, overrides={"edge.timeout_ms": -5})
    with pytest.raises(ConfigError, match=r"unknown section \[edg\]; did you mean edge\?"):
        load_config(None, env={}, overrides={"edg.timeout_ms": 5})
    with pytest.raises(ConfigError, match=r"has no key timout_ms; did you mean timeout_ms\?"):
        load_config(None, env={}, overrides={"edge.timout_ms": 5})


def test_source_of_an_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean max_batch"):
        Config().source_of("cloud", "max_batches")


def test_default_file_loads_back_to_the_defaults(tmp_path: Path) -> None:
    text = render_default_config()
    path = _write(tmp_path, text, "edgesplit.toml")
    assert load_config(path, env={}) == Config()
    # Every key appears with its help, in every section.
    for name, cls in SECTIONS.items():
        assert f"[{name}]" in text
        for key in cls.__dataclass_fields__:
            assert re.search(rf"^# {key} = ", text, re.MULTILINE), key


def test_any_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = Config(
        edge=replace(
            EdgeSection(),
            bundle=tmp_path / "b",
            connect="tcp://10.1.2.3:5555",
            samples=7,
            providers=("cpu",),
            timeout_ms=125.5,
            results=tmp_path / 'odd "name".jsonl',
        ),
        security=replace(SecuritySection(), curve=False, insecure=True),
    )
    config = replace(config, policy=replace(config.policy, threshold=None, slo_ms=80.0))
    path = _write(tmp_path, config_to_toml(config), "round.toml")
    assert load_config(path, env={}) == config


def test_docs_match_the_declarations() -> None:
    docs = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert docs == config_reference_markdown(), (
        "docs/config.md is stale: regenerate it with "
        "python -c 'from edgesplit.config_render import config_reference_markdown as m; "
        'print(m(), end="")\' > docs/config.md'
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:5555",
        "tcp://[::1]:5555",
        "tcp://localhost:5555",
        "ipc:///tmp/edgesplit.sock",
        "inproc://cloud",
    ],
)
def test_plaintext_allowed_on_loopback_when_asked_twice(endpoint: str) -> None:
    assert is_loopback(endpoint)
    check_security(endpoint, SecuritySection(curve=False, insecure=True))
    with pytest.raises(ConfigError, match="set security.insecure=true as well"):
        check_security(endpoint, SecuritySection(curve=False, insecure=False))


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://0.0.0.0:5555",
        "tcp://*:5555",
        "tcp://10.0.0.2:5555",
        "tcp://[::]:5555",
        "tcp://eth0:5555",
        "tcp://127.0.0.1.example.com:5555",
        "tcp://localhost.example.com:5555",
        "tcp://10.0.0.1;127.0.0.1:5555",
        "tcp://127.0.0.1",
        "udp://127.0.0.1:5555",
    ],
)
def test_plaintext_refused_off_loopback(endpoint: str) -> None:
    assert not is_loopback(endpoint)
    with pytest.raises(
        ConfigError, match=re.escape(f"{endpoint}: security.curve=false is allowed only")
    ):
        check_security(endpoint, SecuritySection(curve=False, insecure=True))
    check_security(endpoint, SecuritySection())  # CURVE on: any endpoint
