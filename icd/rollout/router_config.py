"""The router's desired state (:class:`RouterSpec`) and its rendering to an nginx configuration.

Clients call one public model name through KServe v2 (``/v2/models/<public>/infer``); nginx rewrites the name
to the chosen variant (``bert_baseline``, ``bert_icd``, ...) and proxies to the *active* upstream colour
(blue/green, each one or more Triton servers). The variant is chosen, in this order, by:

1. the sticky header (default ``X-ICD-Variant: <variant>``) naming a *pinnable* variant — pins the request. A
   variant is pinnable when it has a weight above 0 or is listed in ``pinnable``: a client cannot reach a
   0 %-weight variant (a candidate under analysis, a rolled-back canary) unless the spec allows it;
2. the ``match`` rules, in order (header or cookie equal to a value / matching a regex) — the A/B strategy's
   routing (Flagger's ``match``): e.g. every request with ``X-Canary: always`` goes to the candidate;
3. ``split_clients`` over the client header (default ``X-ICD-Client: <id>``) — a client always gets the same
   variant for given weights;
4. ``split_clients`` over ``$request_id`` — a weighted random choice per request.

With a ``mirror``, a sampled share of the inference requests is also sent (nginx ``mirror``) to the shadow
comparator (:mod:`icd.rollout.shadow`), which asks the primary and the candidate and compares their answers. nginx
discards the mirror's response: the client only ever gets the primary's answer.

Every proxied model request is logged as one JSON line (variant, status, latencies, upstream, generation, request
id) and answered with ``X-ICD-Variant``, ``X-ICD-Generation`` and ``X-ICD-Request-Id`` headers; ``GET /icd/router``
returns the live spec and ``/icd/stub_status`` nginx's connection counters.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from icd.defaults import LOOPBACK
from icd.rollout.weights import normalise

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ADDR = re.compile(r"^[A-Za-z0-9_.-]+:\d{1,5}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]+$")
_COOKIE = re.compile(r"^[A-Za-z0-9_]+$")
_VALUE = re.compile(r"^[^\"\\;{}\s]+$")

SPEC_FILE = "router.json"
CONF_FILE = "nginx.conf"
ACCESS_LOG = "access.jsonl"
DEFAULT_STICKY_HEADER = "X-ICD-Variant"
DEFAULT_CLIENT_HEADER = "X-ICD-Client"


@dataclass(frozen=True)
class MatchRule:
    """Route requests whose header (or cookie) matches to ``variant`` (the A/B strategy, Flagger's ``match``)."""

    variant: str
    """Variant the matching requests go to."""
    header: str = ""
    """Request header to match (e.g. ``X-Canary``); exactly one of ``header`` / ``cookie``."""
    cookie: str = ""
    """Cookie to match (e.g. ``canary``)."""
    value: str = ""
    """Exact value; or, with ``regex``, a regular expression (nginx/PCRE)."""
    regex: bool = False
    """Treat ``value`` as a regular expression."""

    def validate(self) -> None:
        if not _NAME.match(self.variant):
            raise ValueError(f"match.variant must match {_NAME.pattern}, got {self.variant!r}")
        if bool(self.header) == bool(self.cookie):
            raise ValueError(f"match rule for {self.variant!r}: give exactly one of header / cookie")
        if self.header and not _HEADER.match(self.header):
            raise ValueError(f"match.header must match {_HEADER.pattern}, got {self.header!r}")
        if self.cookie and not _COOKIE.match(self.cookie):
            raise ValueError(f"match.cookie must match {_COOKIE.pattern}, got {self.cookie!r}")
        if not _VALUE.match(self.value):
            raise ValueError(f"match.value must be non-empty without quotes, backslashes, spaces, ';' or braces, "
                             f"got {self.value!r}")

    def nginx_var(self) -> str:
        return _header_var(self.header) if self.header else f"$cookie_{self.cookie}"


@dataclass(frozen=True)
class MirrorSpec:
    """Shadow traffic: send ``share`` of the inference requests, also, to the comparator for ``variant``."""

    variant: str
    """The candidate whose answers are compared with the primary's (never returned to a client)."""
    share: float
    """Fraction of inference requests mirrored, within [0, 1]."""
    comparator: str
    """``host:port`` of the shadow comparator (:mod:`icd.rollout.shadow`)."""

    def validate(self) -> None:
        if not _NAME.match(self.variant):
            raise ValueError(f"mirror.variant must match {_NAME.pattern}, got {self.variant!r}")
        if not (isinstance(self.share, (int, float)) and 0.0 <= float(self.share) <= 1.0):
            raise ValueError(f"mirror.share must be within [0, 1], got {self.share!r}")
        if not _ADDR.match(self.comparator):
            raise ValueError(f"mirror.comparator must be host:port, got {self.comparator!r}")


@dataclass
class RouterSpec:
    """What the router should do; persisted as ``router.json`` next to the rendered ``nginx.conf``."""

    listen_port: int
    """TCP port nginx listens on (127.0.0.1)."""
    public_model: str
    """The model name clients use in ``/v2/models/<name>/...``."""
    weights: dict[str, float]
    """Variant (Triton model name) → percentage of traffic; normalised to sum to 100."""
    upstreams: dict[str, list[str]]
    """Colour (e.g. ``blue``, ``green``) → Triton HTTP addresses ``host:port``."""
    active: str
    """The colour that receives traffic."""
    sticky_header: str = DEFAULT_STICKY_HEADER
    """Request header that pins a request to a named variant."""
    client_header: str = DEFAULT_CLIENT_HEADER
    """Request header whose value is hashed to keep a client on one variant."""
    generation: int = 0
    """Incremented on every applied change; returned in ``X-ICD-Generation``."""
    listen_host: str = LOOPBACK
    """Address nginx binds."""
    client_keepalive_s: int = 0
    """Client keep-alive timeout. 0 (default) answers ``Connection: close``: a reload then drops no request,
    because no idle client connection can be closed by an old worker just as the client reuses it."""
    failover: bool = True
    """Other colours' servers are ``backup`` servers of the active colour: a request the active upstream
    refuses (connection refused, e.g. a killed server) is retried on the previous colour, not failed."""
    pinnable: list[str] = field(default_factory=list)
    """Variants a client may pin with the sticky header even at 0 % weight (e.g. for golden checks)."""
    match: list[MatchRule] = field(default_factory=list)
    """Header / cookie rules routing matching requests to a variant (A/B strategy), checked in order."""
    mirror: MirrorSpec | None = None
    """Shadow traffic to a candidate (``None`` = no mirroring)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (who changed it, why)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and value when the spec cannot be rendered."""
        if not 0 < self.listen_port < 65536:
            raise ValueError(f"listen_port must be a TCP port, got {self.listen_port}")
        for name in [self.public_model, *self.weights, *self.pinnable]:
            if not _NAME.match(name):
                raise ValueError(f"model name must match {_NAME.pattern}, got {name!r}")
        normalise(self.weights)
        for rule in self.match:
            rule.validate()
        if self.mirror is not None:
            self.mirror.validate()
        if self.active not in self.upstreams:
            raise ValueError(f"active colour {self.active!r} not in upstreams {sorted(self.upstreams)}")
        for colour, addrs in self.upstreams.items():
            if not _NAME.match(colour) or not addrs or not all(_ADDR.match(a) for a in addrs):
                raise ValueError(f"upstreams[{colour!r}] must be a non-empty list of host:port, got {addrs}")
        for header in (self.sticky_header, self.client_header):
            if not _HEADER.match(header):
                raise ValueError(f"header name must match {_HEADER.pattern}, got {header!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pinnable_variants(self) -> list[str]:
        """Variants the sticky header may pin: weighted above 0, or explicitly allowed."""
        return list(dict.fromkeys([*(n for n, w in self.weights.items() if w > 0), *self.pinnable]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterSpec:
        data = dict(data)
        data["match"] = [MatchRule(**m) for m in data.get("match", [])]
        mirror = data.get("mirror")
        data["mirror"] = MirrorSpec(**mirror) if mirror else None
        spec = cls(**data)
        spec.validate()
        return spec

    @classmethod
    def load(cls, path: str | Path) -> RouterSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _header_var(header: str) -> str:
    return "$http_" + header.lower().replace("-", "_")


_CONF = jinja2.Template(
    """# Generated by icd (icd/rollout/router_config.py) — generation {{ spec.generation }}. Do not edit.
{% if run_as_root %}user nobody nogroup;
{% endif %}worker_processes 1;
daemon off;
pid {{ prefix }}/nginx.pid;
error_log {{ prefix }}/error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path {{ prefix }}/tmp/body;
    proxy_temp_path {{ prefix }}/tmp/proxy;
    fastcgi_temp_path {{ prefix }}/tmp/fastcgi;
    uwsgi_temp_path {{ prefix }}/tmp/uwsgi;
    scgi_temp_path {{ prefix }}/tmp/scgi;
    client_body_buffer_size 16m;  # bodies stay in memory: workers (nobody) never need the temp path
    client_max_body_size 16m;
    proxy_buffering off;
    access_log off;
    log_format icd_json escape=json '{"t":$msec,"variant":"$icd_variant","status":$status,'
        '"request_time":$request_time,"upstream_time":"$upstream_response_time",'
        '"upstream":"$upstream_addr","colour":"{{ spec.active }}","generation":{{ spec.generation }},'
        '"rid":"$request_id"}';

    map {{ client_var }} $icd_split_key {
        ""      $request_id;
        default {{ client_var }};
    }
    split_clients "${icd_split_key}" $icd_weighted {
{% for name, pct in split %}        {{ pct }} {{ name }};
{% endfor %}    }
{% for var, value, regex, variant, fallback, out in match_chain %}    map {{ var }} {{ out }} {
        default {{ fallback }};
        {% if regex %}"~{{ value }}"{% else %}"{{ value }}"{% endif %} {{ variant }};
    }
{% endfor %}    map {{ sticky_var }} $icd_variant {
        default {{ after_pin }};
{% for name in variants %}        "{{ name }}" {{ name }};
{% endfor %}    }
{% if mirroring and spec.mirror.share < 1 %}    split_clients "${request_id}" $icd_mirror_sample {
        {{ mirror_pct }} "1";
        * "";
    }
{% endif %}{% for colour, addrs in spec.upstreams.items() %}
    upstream icd_{{ colour }} {
{% for addr in addrs %}        server {{ addr }} max_fails=0;
{% endfor %}{% if spec.failover %}{% for other, oaddrs in spec.upstreams.items() if other != colour %}{% for addr in oaddrs if addr not in addrs %}        server {{ addr }} backup;
{% endfor %}{% endfor %}{% endif %}        keepalive 64;
    }
{% endfor %}
    server {
        listen {{ spec.listen_host }}:{{ spec.listen_port }};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 300s;
        keepalive_timeout {{ spec.client_keepalive_s }};
        # Inference has no side effects: a request cut by a dying upstream is retried on the backup colour.
        proxy_next_upstream error timeout non_idempotent;
        proxy_next_upstream_tries 2;

        location = /icd/router {
            default_type application/json;
            return 200 '{{ spec_json }}';
        }
        location = /icd/stub_status {
            stub_status;
        }
        location = /v2/models/{{ spec.public_model }}/infer {
            access_log {{ access_log }} icd_json;
            add_header X-ICD-Variant $icd_variant always;
            add_header X-ICD-Generation {{ spec.generation }} always;
            add_header X-ICD-Request-Id $request_id always;
{% if mirroring %}            mirror /_icd_mirror;
            mirror_request_body on;
{% endif %}            proxy_pass http://icd_{{ spec.active }}/v2/models/$icd_variant/infer$is_args$args;
        }
        location ~ ^/v2/models/{{ spec.public_model }}(?<icd_rest>/.*)?$ {
            access_log {{ access_log }} icd_json;
            add_header X-ICD-Variant $icd_variant always;
            add_header X-ICD-Generation {{ spec.generation }} always;
            add_header X-ICD-Request-Id $request_id always;
            proxy_pass http://icd_{{ spec.active }}/v2/models/$icd_variant$icd_rest$is_args$args;
        }
{% if mirroring %}        # Shadow traffic: the comparator answers 204 at once and judges the candidate later;
        # nginx discards the mirror's answer, so the candidate's output never reaches a client.
        location = /_icd_mirror {
            internal;
{% if spec.mirror.share < 1 %}            if ($icd_mirror_sample = "") {
                return 204;
            }
{% endif %}            proxy_set_header X-ICD-Primary $icd_variant;
            proxy_set_header X-ICD-Candidate {{ spec.mirror.variant }};
            proxy_set_header X-ICD-Upstream {{ active_addr }};
            proxy_set_header X-ICD-Request-Id $request_id;
            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            proxy_next_upstream off;
            proxy_pass http://{{ spec.mirror.comparator }}/shadow;
        }
{% endif %}        location / {
            add_header X-ICD-Generation {{ spec.generation }} always;
            proxy_pass http://icd_{{ spec.active }};
        }
    }
}
""",
    autoescape=False,
    keep_trailing_newline=True,
)


def split_lines(weights: dict[str, float]) -> list[tuple[str, str]]:
    """``split_clients`` entries: every non-zero variant but the last gets ``NN.NN%``, the last gets ``*``."""
    pct = [(name, w) for name, w in normalise(weights).items() if w > 0]
    lines = [(name, f"{w:.2f}%") for name, w in pct[:-1]]
    return [*lines, (pct[-1][0], "*")]


def _match_chain(spec: RouterSpec) -> tuple[list[tuple[str, str, bool, str, str, str]], str]:
    """nginx maps chaining the match rules: each rule's map falls back to the next, the last to the weights."""
    chain = []
    fallback = "$icd_weighted"
    for i, rule in reversed(list(enumerate(spec.match))):
        out = f"$icd_match{i}"
        chain.append((rule.nginx_var(), rule.value, rule.regex, rule.variant, fallback, out))
        fallback = out
    return list(reversed(chain)), fallback


def render_nginx_conf(spec: RouterSpec, prefix: str | Path, run_as_root: bool = False) -> str:
    """The full nginx.conf for ``spec`` with every path under ``prefix``."""
    spec.validate()
    prefix = Path(prefix)
    live = {"generation": spec.generation, "public_model": spec.public_model, "weights": normalise(spec.weights),
            "active": spec.active, "upstreams": spec.upstreams, "pinnable": spec.pinnable_variants(),
            "match": [asdict(m) for m in spec.match], "mirror": asdict(spec.mirror) if spec.mirror else None}
    chain, after_pin = _match_chain(spec)
    mirroring = spec.mirror is not None and spec.mirror.share > 0
    return _CONF.render(
        spec=spec, prefix=prefix, access_log=prefix / ACCESS_LOG, run_as_root=run_as_root,
        split=split_lines(spec.weights), variants=spec.pinnable_variants(), client_var=_header_var(spec.client_header),
        sticky_var=_header_var(spec.sticky_header),
        spec_json=json.dumps(live, sort_keys=True).replace("'", "").replace("$", "\\u0024"),
        match_chain=chain, after_pin=after_pin, mirroring=mirroring,
        mirror_pct=f"{100.0 * spec.mirror.share:.2f}%" if spec.mirror else "",
        active_addr=spec.upstreams[spec.active][0],
    )
