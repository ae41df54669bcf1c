"""Settings: one object, one table of (name, default, help).

Precedence, lowest to highest: defaults < TOML file (``--config``) < ``HOUNSFIELD_*`` environment variables
< command-line flags. Remote nodes (peers) come from the TOML ``[peers.NAME]`` tables and the REST API.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hounsfield import tls
from hounsfield.access import ALL_SERVICES, parse_services
from hounsfield.routing.rules import InvalidRule, Rule
from hounsfield.routing.rules import parse as parse_rule


@dataclass(frozen=True)
class Peer:
    """A remote DICOM node known by its AE title, and the DICOM services it may use here (``access``);
    reached over TLS when ``tls`` (``port`` is then its TLS port), and the owner of the TLS client certificates
    whose fingerprints ``tls_fingerprints`` holds (``tls.certificate_refusal``)."""

    name: str
    ae_title: str
    host: str
    port: int
    allow: frozenset[str] = ALL_SERVICES
    tls: bool = False
    tls_fingerprints: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./hounsfield-data", "Directory holding the stored files and the default SQLite index."),
    Setting("database_url", "", "SQLAlchemy URL of the index; empty means SQLite at DATA_DIR/index.sqlite."),
    Setting("ae_title", "HOUNSFIELD", "AE title of the DICOM service."),
    Setting("dicom_host", "0.0.0.0", "Address the DICOM service listens on."),
    Setting("dicom_port", 11112, "Port of the DICOM service."),
    Setting("http_host", "127.0.0.1", "Address the HTTP service listens on."),
    Setting("http_port", 8042, "Port of the HTTP service."),
    # --- HTTP hardening (issue 12) ---
    Setting("http_auth", "auto",
            "Logins on HTTP: auto (on whenever http_host is beyond loopback), on, or off (loopback only, unless "
            "insecure_http). With logins on, serve refuses to start without an enabled admin user."),
    Setting("insecure_http", False,
            "Serve HTTP beyond loopback without logins (http_auth off): whoever reaches the port can read, change "
            "and delete every study. Logged as a warning at every start."),
    Setting("session_idle_minutes", 60, "A web login ends after this many minutes without a request."),
    Setting("session_max_hours", 12, "A web login ends this many hours after it began, in use or not."),
    Setting("login_max_failures", 5,
            "Failed logins for one user name or from one address before further attempts are refused (429)."),
    Setting("login_lockout_seconds", 300, "How long that refusal lasts, counted from the last failure."),
    Setting("tls_cert", "", "PEM certificate (chain) of this server: HTTPS on the HTTP port, and DICOM TLS."),
    Setting("tls_key", "", "PEM private key of tls_cert."),
    Setting("tls_ca", "",
            "PEM CA bundle: the certificates DICOM TLS peers (clients of the TLS port, and nodes this server "
            "connects to over TLS) are checked against; empty: the system's."),
    Setting("dicom_tls_port", 0, "Port of DICOM over TLS (2762 is IANA's); 0: off. Needs tls_cert and tls_key."),
    Setting("dicom_tls_verify_clients", False,
            "On the DICOM TLS port, ask every caller for a client certificate signed by tls_ca, and refuse one "
            "whose certificate no configured peer owns."),
    Setting("audit_syslog", "",
            "Forward audit events as DICOM Audit Messages (PS3.15 A.5) to a syslog collector: tcp://host:port or "
            "tls://host:port (RFC 5424 framing); empty: the audit table only."),
    Setting("allowed_hosts", "",
            "Host header names the HTTP service answers besides localhost, 127.0.0.1, ::1, this machine's name, "
            "http_host and the address a request came in on (comma-separated; .example.org takes its subdomains "
            "too; * takes any name); any other Host is refused with 400 (DNS rebinding)."),
    Setting("cors_origins", "",
            "Origins (scheme://host[:port], comma-separated) whose pages may read /dicom-web from another origin "
            "(CORS, with credentials) and send this server state-changing requests; empty: CORS off."),
    Setting("cors_methods", "GET, HEAD, POST",
            "Methods the cors_origins may use on /dicom-web (DELETE, PUT, PATCH only when listed here)."),
    Setting("max_upload_bytes", 2 << 30,
            "Largest request body STOW-RS and /api/upload take (413 beyond); other requests take 16 MiB at most."),
    Setting("duplicate_policy", "keep", "What a second instance with a known SOP Instance UID does: keep or overwrite."),
    Setting("known_aes_only", False, "Accept associations only from calling AE titles configured as peers."),
    Setting("check_called_ae", False,
            "Reject an association whose called AE title is not ae_title (A-ASSOCIATE-RJ, called AE not recognised)."),
    Setting("check_peer_address", False,
            "Reject an association from a configured peer's AE title calling from an address its host does not "
            "resolve to (A-ASSOCIATE-RJ, calling AE not recognised)."),
    Setting("unknown_ae_services", "echo,store",
            "DICOM services a calling AE title that is not a configured peer may use from another host "
            "(comma-separated: echo, store, find, get, move, worklist, mpps; a peer's own list is its allow "
            "setting). Others: 0x0124."),
    Setting("trust_loopback_aes", True,
            "Let an AE title that is not a configured peer use every DICOM service when it calls from this "
            "machine's own loopback address (local tools on a fresh install)."),
    Setting("max_associations", 16, "Most DICOM associations served at once (per DICOM process)."),
    Setting("dicom_processes", 0, "Processes sharing the DICOM port (0: two per CPU core, at most 8)."),
    Setting("log_level", "INFO", "Logging level: DEBUG, INFO, WARNING, ERROR."),
    Setting("fsync", True, "fsync every stored file before it is indexed (turning it off loses crash safety)."),
    Setting("dicom_read_timeout", 30,
            "Seconds a DICOM peer may take to send the rest of a PDU it has begun (or its association request) "
            "before the association is aborted and its slot freed."),
    Setting("uid_policy", "lenient",
            "UIDs that break PS3.5 9.1 but real equipment sends (leading zeros, a trailing space): lenient stores "
            "them, strict refuses them. A value that cannot be a UID at all is always refused."),
    Setting("max_sequence_depth", 64,
            "Deepest nesting of sequences a stored dataset may have (deeper: refused, C-STORE 0xC000, STOW 409)."),
    Setting("dicom_fast_path", True,
            "Run the DICOM service on hounsfield's fast paths inside pynetdicom (off: stock pynetdicom)."),
    # --- worklist (MWL SCP and MPPS) ---
    Setting("worklist_station_only", False, "MWL: answer a modality only with items scheduled on its own AE title."),
    Setting("worklist_days", 0, "MWL: answer only items scheduled within this many days of today (0: any day)."),
    Setting("worklist_max_answers", 0, "MWL: at most this many answers to one C-FIND (0: no limit)."),
    Setting("worklist_fuzzy_pn", False, "MWL: match person names ignoring case (and as prefixes of components)."),
    Setting("worklist_show_closed", False, "MWL: still answer steps that are completed, discontinued or canceled."),
    Setting("worklist_expire_hours", 0,
            "Steps still SCHEDULED this many hours after their start become DISCONTINUED (0: never)."),
    Setting("worklist_query_log_size", 10000, "How many received MWL queries the query log keeps."),
    # --- HL7 v2 orders into the worklist (issue 14) ---
    Setting("hl7_port", 0, "Port of the HL7 v2 MLLP listener (orders and patient updates, 2575 is IANA's); 0: off."),
    Setting("hl7_host", "0.0.0.0", "Address the HL7 MLLP listener listens on."),
    Setting("hl7_senders", "",
            "Who may send HL7 messages: addresses, networks (10.1.0.0/16) or host names, comma-separated; empty: "
            "this machine's loopback only. Anyone else's connection is closed at once and logged."),
    Setting("hl7_tls", False, "The HL7 port speaks MLLP over TLS (tls_cert and tls_key, TLS 1.2 or later)."),
    Setting("hl7_max_message_bytes", 1 << 20,
            "Largest HL7 message taken (bytes between 0x0B and 0x1C); a longer one is refused (AR) and its "
            "connection closed."),
    Setting("hl7_read_timeout", 30,
            "Seconds an HL7 sender may take to send the rest of a message it has begun before its connection "
            "is closed."),
    Setting("hl7_log_size", 100000, "How many received HL7 messages the message log keeps (0: all)."),
    # --- plugins and routing rules (issue 14) ---
    Setting("plugins", "",
            "Python plugin files serve loads (comma-separated; a TOML array; serve --plugin FILE adds one). A file "
            "that is missing or fails to load stops serve from starting."),
    Setting("study_stable_seconds", 60,
            "A study is stable (on_study_stable, routing rules on study_stable) once it has gained no instance "
            "for this many seconds."),
    Setting("routing_retry_seconds", 10,
            "Seconds before a failed routing delivery is tried again; the wait doubles at each failure."),
    Setting("routing_retry_max_seconds", 3600, "The longest wait between two attempts of a routing delivery."),
    Setting("routing_max_attempts", 10,
            "Attempts of a routing delivery before it is failed (retried then only when asked: REST, the page)."),
)

# Text settings that take one of a few values.
CHOICES: dict[str, tuple[str, ...]] = {"duplicate_policy": ("keep", "overwrite"), "uid_policy": ("lenient", "strict"),
                                       "http_auth": ("auto", "on", "off")}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Text settings holding a list: comma- or space-separated text, or a TOML array of strings.
LISTS = frozenset({"allowed_hosts", "cors_origins", "cors_methods", "hl7_senders", "plugins"})

TABLES = frozenset({"peers", "routing"})  # TOML tables that are no setting: [peers.NAME], [routing.NAME]

_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def kind_of(setting: Setting) -> str:
    """The type a setting takes, as messages and ``--help`` name it: boolean, integer or text."""
    if isinstance(setting.default, bool):
        return "boolean"
    if isinstance(setting.default, int):
        return "integer"
    return "text"


def _coerce(value: Any, setting: Setting, source: str) -> Any:
    """``value`` as the setting's type; a value of another type is a ValueError naming the setting, the type it
    needs and where the value came from (TOML values keep their own type: ``dicom_port = "104"`` is text)."""
    kind = kind_of(setting)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_TRUE | _BOOL_FALSE:
            return value.strip().lower() in _BOOL_TRUE
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
    elif isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    elif setting.name in LISTS and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    expected = {"boolean": "a boolean (true or false)", "integer": "an integer",
                "text": "text"}[kind]
    raise ValueError(f"setting {setting.name} ({source}) must be {expected}, not {value!r}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./hounsfield-data")
    database_url: str = ""
    ae_title: str = "HOUNSFIELD"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    http_host: str = "127.0.0.1"
    http_port: int = 8042
    http_auth: str = "auto"
    insecure_http: bool = False
    session_idle_minutes: int = 60
    session_max_hours: int = 12
    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    dicom_tls_port: int = 0
    dicom_tls_verify_clients: bool = False
    audit_syslog: str = ""
    allowed_hosts: str = ""
    cors_origins: str = ""
    cors_methods: str = "GET, HEAD, POST"
    max_upload_bytes: int = 2 << 30
    duplicate_policy: str = "keep"
    known_aes_only: bool = False
    check_called_ae: bool = False
    check_peer_address: bool = False
    unknown_ae_services: str = "echo,store"
    trust_loopback_aes: bool = True
    max_associations: int = 16
    dicom_processes: int = 0
    log_level: str = "INFO"
    fsync: bool = True
    dicom_read_timeout: int = 30
    uid_policy: str = "lenient"
    max_sequence_depth: int = 64
    dicom_fast_path: bool = True
    worklist_station_only: bool = False
    worklist_days: int = 0
    worklist_max_answers: int = 0
    worklist_fuzzy_pn: bool = False
    worklist_show_closed: bool = False
    worklist_expire_hours: int = 0
    worklist_query_log_size: int = 10000
    hl7_port: int = 0
    hl7_host: str = "0.0.0.0"
    hl7_senders: str = ""
    hl7_tls: bool = False
    hl7_max_message_bytes: int = 1 << 20
    hl7_read_timeout: int = 30
    hl7_log_size: int = 100000
    plugins: str = ""
    study_stable_seconds: int = 60
    routing_retry_seconds: int = 10
    routing_retry_max_seconds: int = 3600
    routing_max_attempts: int = 10
    peers: tuple[Peer, ...] = field(default_factory=tuple)
    routing: tuple[Rule, ...] = field(default_factory=tuple)  # issue 14: the [routing.NAME] tables

    @property
    def index_url(self) -> str:
        """The database URL actually used: the configured one or SQLite inside the data directory."""
        return self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'index.sqlite'}"

    def with_overrides(self, **values: Any) -> "Settings":
        """Apply non-None overrides (command-line flags)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def split_list(value: str) -> tuple[str, ...]:
    """The items of a list setting (``LISTS``): ``"a, b c"`` → ``("a", "b", "c")``."""
    return tuple(item for item in re.split(r"[,\s]+", value) if item)


def env_var(name: str) -> str:
    return f"HOUNSFIELD_{name.upper()}"


def load(config_file: Path | None = None, environ: dict[str, str] | None = None, **flags: Any) -> Settings:
    """Build the settings from defaults, the TOML file, the environment and the flags, in that order."""
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or (Path(environ[env_var("config")]) if env_var("config") in environ else None)
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {s.name: "default" for s in SETTINGS}
    peers: list[Peer] = []
    routing: tuple[Rule, ...] = ()
    if config_file is not None:
        try:
            doc = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config file {config_file}: {exc}") from exc
        unknown = set(doc) - {s.name for s in SETTINGS} - TABLES
        if unknown:
            raise ValueError(f"{config_file}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in doc.items() if k not in TABLES})
        sources.update({k: f"in {config_file}" for k in doc if k not in TABLES})
        routing = _routing_rules(doc.get("routing", {}), config_file)
        for name, peer in doc.get("peers", {}).items():
            try:
                found = Peer(name, str(peer.get("ae_title", name)), str(peer["host"]), int(peer["port"]))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{config_file}: peer {name!r} needs host and port ({exc})") from exc
            if "allow" in peer:
                if not isinstance(peer["allow"], list):
                    raise ValueError(f"{config_file}: peer {name!r}: allow must be a list of DICOM services")
                found = replace(found, allow=parse_services(peer["allow"], f"{config_file}: peer {name!r} allow"))
            peers.append(replace(found, **tls.peer_fields(peer, Path(config_file).parent,
                                                          f"{config_file}: peer {name!r}")))
    for s in SETTINGS:
        if env_var(s.name) in environ:
            values[s.name] = environ[env_var(s.name)]
            sources[s.name] = f"from {env_var(s.name)}"
    for name, value in flags.items():
        if value is not None:
            values[name] = value
            sources[name] = f"--{name.replace('_', '-')}"
    coerced = {s.name: _coerce(values[s.name], s, sources[s.name]) for s in SETTINGS}
    coerced["data_dir"] = Path(coerced["data_dir"])
    parse_services(coerced["unknown_ae_services"], f"setting unknown_ae_services ({sources['unknown_ae_services']})")
    for name, allowed in CHOICES.items():
        if coerced[name] not in allowed:
            raise ValueError(f"setting {name} ({sources[name]}) must be {' or '.join(map(repr, allowed))}, "
                             f"not {coerced[name]!r}")
    if coerced["log_level"].upper() not in LOG_LEVELS:
        raise ValueError(f"setting log_level ({sources['log_level']}) must be one of {', '.join(LOG_LEVELS)}, "
                         f"not {coerced['log_level']!r}")
    return Settings(**coerced, peers=tuple(peers), routing=routing)


def _routing_rules(tables: Any, config_file: Path) -> tuple[Rule, ...]:
    """The ``[routing.NAME]`` tables as rules (``routing.rules``); a wrong one is a ValueError naming the file."""
    if not isinstance(tables, dict):
        raise ValueError(f"{config_file}: routing must be tables [routing.NAME] of rules")
    try:
        return tuple(parse_rule(name, spec) for name, spec in tables.items())
    except InvalidRule as exc:
        raise ValueError(f"{config_file}: {exc}") from None


