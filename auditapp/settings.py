"""Attest settings: one module, configured by environment variables.

With no variables set this is the embedded default: SQLite and a filesystem
Celery broker under var/. DATABASE_URL and CELERY_BROKER_URL switch to
PostgreSQL and Redis; DJANGO_ENV=production turns on the hardened settings.
"""

import base64
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from auditapp.decisions.signing import parse_public_keys, public_key_of_seed
from auditapp.encryption import parse_blind_index_key, parse_data_keys
from auditapp.env import env_bool, env_int, env_list, env_str, filesystem_broker_options

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ATTEST_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

PRODUCTION = env_str("DJANGO_ENV", "development") == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = (
    env_str("SECRET_KEY")
    if PRODUCTION
    else env_str("SECRET_KEY", "dev-only-insecure-key-" + "x" * 40)
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from /static/, pinned with the package
    "csp",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "auditapp.accounts",
    "auditapp.approvals",
    "auditapp.registry",
    "auditapp.decisions",
    "auditapp.reviews",
    "auditapp.monitoring",
    "auditapp.reports",
    "auditapp.serving",
    "auditapp.web",
    "auditapp.demo",
    "explain",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside every middleware that reads the database (sessions, auth, axes): while
    # the database, the cache or the broker is unreachable, a 503 with Retry-After.
    "auditapp.web.outage.OutageMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed a TOTP code (django-otp).
    "django_otp.middleware.OTPMiddleware",
    # With ATTEST_REQUIRE_2FA, the roles that must use two factors reach only the
    # enrolment and verification pages until they have (accounts/roles.py).
    "auditapp.accounts.middleware.TwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# --- Content Security Policy (django-csp) ---------------------------------------
# Scripts and styles come from our own /static/ only: no inline <script>, no event
# handler attributes, no eval (htmx runs with allowEval off, see base.html), no inline
# style. Charts are SVG with presentation attributes, which CSP does not govern.
# data: images are the favicon placeholder and the icons inside Swagger UI's CSS.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

ROOT_URLCONF = "auditapp.urls"
WSGI_APPLICATION = "auditapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "auditapp.web.context.navigation",
            ],
        },
    },
]

# The development server (`make run`) serves each client connection on a thread of
# its own, and clients keep their connections alive: a database connection kept for
# CONN_MAX_AGE on each of those threads is one idle PostgreSQL backend per open client
# connection, until PostgreSQL refuses more. There, each request closes its own.
DEV_SERVER = sys.argv[1:2] == ["runserver"]
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'attest.sqlite3'}"),
        conn_max_age=0 if DEV_SERVER else 60,
        # A kept connection is checked before a request reuses it: after PostgreSQL
        # restarts, the first request of each process reconnects instead of failing.
        conn_health_checks=True,
    )
}
# PostgreSQL's JIT compiles a query the planner costs above jit_above_cost: Attest's
# pages and API stop early (LIMIT) where the planner costs a scan, and paid more compiling
# than running (the search page's capped count: 66 ms compiling, 18 ms working, at 2M
# decisions); whole-table aggregates ran no faster with it. Off, unless DATABASE_URL's
# `options` turns it on (they come after, and win).


def _jit_off(database: dict) -> None:
    options = database.setdefault("OPTIONS", {})
    options["options"] = f"-c jit=off {options.get('options', '')}".strip()


if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _jit_off(DATABASES["default"])
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets the worker read while the web process writes; IMMEDIATE
        # takes the write lock up front instead of failing on upgrade.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

# --- Reads off the primary (README: Deployment) -----------------------------------
# DATABASE_REPLICA_URL names a PostgreSQL streaming replica of DATABASE_URL. Only reads
# marked as tolerant of its lag go there (auditapp/replicas.py: searches, list pages,
# reports, monitoring figures); writes and every other read stay on the primary.
# TEST MIRROR: a test run creates, migrates and flushes its database on the primary
# alone (a standby refuses writes), and Django points this alias's NAME at that test
# database, keeping the replica's host and port: a streaming replica copies the whole
# cluster, test databases included, so the alias reads the real replica's copy of it.
_replica_url = env_str("DATABASE_REPLICA_URL", "")
if _replica_url:
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL needs DATABASE_URL to name PostgreSQL: "
            "SQLite has no replicas. Unset DATABASE_REPLICA_URL or set DATABASE_URL."
        )
    DATABASES["replica"] = dj_database_url.parse(
        _replica_url,
        conn_max_age=DATABASES["default"]["CONN_MAX_AGE"],
        conn_health_checks=True,
    )
    if DATABASES["replica"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_REPLICA_URL must name a PostgreSQL replica.")
    _jit_off(DATABASES["replica"])
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
    DATABASE_ROUTERS = ["auditapp.replicas.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: API rate counters and failed-token counts ---------------------------
# Shared by every web worker, so that a limit holds across gunicorn processes:
# Redis when ATTEST_CACHE_URL (or a redis:// CELERY_BROKER_URL) names one, else
# files under var/cache/ (one host). Never a per-process memory cache.
_cache_url = env_str("ATTEST_CACHE_URL", "")
if not _cache_url and env_str("CELERY_BROKER_URL", "").startswith(("redis://", "rediss://")):
    _cache_url = env_str("CELERY_BROKER_URL")
if _cache_url:
    CACHES = {
        "default": {
            "BACKEND": "auditapp.rediscache.ReusingRedisCache",
            "LOCATION": _cache_url,
            "KEY_PREFIX": "attest",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "KEY_PREFIX": "attest",
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Sign-in lockout (django-axes) ----------------------------------------------
# ATTEST_LOGIN_FAILURE_LIMIT failed sign-ins for one username (from anywhere) or from
# one address (any usernames) lock that username or address out for the cool-off;
# every attempt meanwhile is refused. The site login and /admin/ go through the
# same backend. Attempts are counted in the database (shared by all workers); the
# lockout itself is written to the audit log (accounts/signals.py).
AUTHENTICATION_BACKENDS = [
    "auditapp.accounts.lockout.LockoutBackend",
    # OpenID Connect sign-in (accounts/sso.py): answers only the callback of a sign-in it
    # started, and only when ATTEST_OIDC_ISSUER and the client are set.
    "auditapp.accounts.sso.SSOBackend",
    # Django's, reading the signed-in user's roles with the user (one query, not two).
    "auditapp.accounts.authentication.ModelBackend",
    # A session names the backend that signed it in: the ones from before the line above
    # keep being read through Django's own, rather than everyone signing in again.
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ATTEST_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ATTEST_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success does not wipe the count: else signing in to one's own account would
# reset an address's count between guesses at someone else's.
AXES_RESET_ON_SUCCESS = False
# Attempts refused during a lockout do not restart it: the cool-off ends at most
# ATTEST_LOGIN_COOLOFF_MINUTES after the failure that caused it (Retry-After).
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "auditapp.accounts.throttling.client_address"
AXES_LOCKOUT_CALLABLE = "auditapp.accounts.lockout.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are in Attest's own audit log
AXES_ENABLE_ADMIN = False  # the admin shows records read-only; unlock with axes_reset_*

# --- Single sign-on: OpenID Connect (README: Single sign-on and two-factor authentication)
# On when the issuer, client id and client secret are all set; off by default (the
# embedded default signs in with local accounts only, which stay in any case). The
# endpoints and signing keys come from the issuer's /.well-known/openid-configuration,
# read when a sign-in needs them (accounts/sso.py), never at start-up. The IdP's groups
# (ATTEST_OIDC_GROUPS_CLAIM) map to Attest's roles by ATTEST_OIDC_ROLE_MAP, a JSON object
# {"idp group": "role"}, read again at every sign-in; a person none of whose groups map
# to a role is refused.
ATTEST_OIDC_ISSUER = env_str("ATTEST_OIDC_ISSUER", "").rstrip("/")
ATTEST_OIDC_CLIENT_ID = env_str("ATTEST_OIDC_CLIENT_ID", "")
ATTEST_OIDC_CLIENT_SECRET = env_str("ATTEST_OIDC_CLIENT_SECRET", "")
ATTEST_OIDC_ENABLED = bool(ATTEST_OIDC_ISSUER or ATTEST_OIDC_CLIENT_ID or ATTEST_OIDC_CLIENT_SECRET)
if ATTEST_OIDC_ENABLED and not (
    ATTEST_OIDC_ISSUER and ATTEST_OIDC_CLIENT_ID and ATTEST_OIDC_CLIENT_SECRET
):
    raise ImproperlyConfigured(
        "Single sign-on needs ATTEST_OIDC_ISSUER, ATTEST_OIDC_CLIENT_ID and "
        "ATTEST_OIDC_CLIENT_SECRET together: set all three, or none."
    )
if PRODUCTION and ATTEST_OIDC_ISSUER and not ATTEST_OIDC_ISSUER.startswith("https://"):
    raise ImproperlyConfigured("ATTEST_OIDC_ISSUER must be an https:// address in production.")
ATTEST_OIDC_PROVIDER_NAME = env_str("ATTEST_OIDC_PROVIDER_NAME", "single sign-on")
ATTEST_OIDC_USERNAME_CLAIM = env_str("ATTEST_OIDC_USERNAME_CLAIM", "preferred_username")
ATTEST_OIDC_GROUPS_CLAIM = env_str("ATTEST_OIDC_GROUPS_CLAIM", "groups")
try:
    ATTEST_OIDC_ROLE_MAP = json.loads(env_str("ATTEST_OIDC_ROLE_MAP", "{}"))
except ValueError:
    ATTEST_OIDC_ROLE_MAP = None
if not isinstance(ATTEST_OIDC_ROLE_MAP, dict) or not all(
    isinstance(k, str) and isinstance(v, str) for k, v in ATTEST_OIDC_ROLE_MAP.items()
):
    # Role names are checked against accounts/roles.py by `manage.py check` (accounts/checks.py).
    raise ImproperlyConfigured(
        'ATTEST_OIDC_ROLE_MAP must be a JSON object of IdP group to role: {"risk-admins": "admin"}.'
    )
if ATTEST_OIDC_ISSUER:
    # Logging out posts a form whose answer redirects to the IdP's end-session endpoint
    # (RP-initiated logout), and browsers hold a form's redirects to form-action.
    _issuer = urlsplit(ATTEST_OIDC_ISSUER)
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"].append(
        f"{_issuer.scheme}://{_issuer.netloc}"
    )
# The settings of mozilla-django-oidc, whose views and backend accounts/sso.py extends.
OIDC_RP_CLIENT_ID = ATTEST_OIDC_CLIENT_ID
OIDC_RP_CLIENT_SECRET = ATTEST_OIDC_CLIENT_SECRET
OIDC_RP_SIGN_ALGO = env_str("ATTEST_OIDC_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("ATTEST_OIDC_SCOPES", "openid email profile")
OIDC_USE_NONCE = True
OIDC_USE_PKCE = True
OIDC_TIMEOUT = 10  # seconds for each call to the IdP (token, user info, keys, discovery)
OIDC_STORE_ID_TOKEN = True  # for RP-initiated logout (id_token_hint)
OIDC_CREATE_USER = True
OIDC_AUTHENTICATION_CALLBACK_URL = "sso-callback"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/"

# --- Two-factor authentication (django-otp, TOTP) ----------------------------------
# With ATTEST_REQUIRE_2FA, the roles accounts/roles.py names (admin, compliance officer)
# must enrol a TOTP device and give a code at every sign-in, local or single sign-on,
# before any page answers them. API tokens are not asked (they are for machines).
ATTEST_REQUIRE_2FA = env_bool("ATTEST_REQUIRE_2FA", False)
OTP_TOTP_ISSUER = env_str("ATTEST_2FA_ISSUER", "Attest")
OTP_TOTP_THROTTLE_FACTOR = 1  # after n wrong codes in a row, wait 2^(n-1) s before the next
OTP_ADMIN_HIDE_SENSITIVE_DATA = True  # no secret in the admin (accounts/admin.py)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"

# A batch of 10,000 decisions is a few megabytes of JSON.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("ATTEST_MAX_REQUEST_BYTES", 64 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "auditapp.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's parsers, refusing what no endpoint can store and any key or field given twice.
    "DEFAULT_PARSER_CLASSES": [
        "auditapp.web.parsers.JSONParser",
        "auditapp.web.parsers.MultiPartParser",
        "auditapp.web.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "auditapp.web.api_errors.exception_handler",
    # NaN and Infinity are parsed so that validation can name the field.
    "STRICT_JSON": False,
    # ?format= names a file format of our own (csv, parquet), not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# --- API rate limits ------------------------------------------------------------
# Per token (or signed-in user) and per client address, counted in CACHES per
# fixed window; over the limit: 429 with Retry-After. Failed token
# authentications are limited per address before any token is looked up
# (accounts/authentication.py). The defaults are far above what the demo, the
# tests or a well-behaved client send.
ATTEST_PROXY_COUNT = env_int("ATTEST_PROXY_COUNT", 0)
REST_FRAMEWORK |= {
    "DEFAULT_THROTTLE_CLASSES": [
        "auditapp.accounts.throttling.TokenRateThrottle",
        "auditapp.accounts.throttling.AddressRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str("ATTEST_API_RATE_PER_TOKEN", "1200/min"),
        "address": env_str("ATTEST_API_RATE_PER_ADDRESS", "6000/min"),
    },
    # Reverse proxies in front of the app: the client is the address they add to
    # X-Forwarded-For. With none, X-Forwarded-For is the client's own claim: ignored.
    "NUM_PROXIES": ATTEST_PROXY_COUNT,
}
ATTEST_TOKEN_FAILURE_LIMIT = env_int("ATTEST_TOKEN_FAILURE_LIMIT", 20)
ATTEST_TOKEN_FAILURE_WINDOW = env_int("ATTEST_TOKEN_FAILURE_WINDOW", 600)  # seconds
for _scope, _rate in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].items():
    if not re.fullmatch(r"[0-9]+/[smhd][a-z]*", _rate):  # DRF would fail on every request
        raise ImproperlyConfigured(f"The API rate per {_scope} must look like 1200/min: {_rate!r}")

SPECTACULAR_SETTINGS = {
    "TITLE": "Attest API",
    "DESCRIPTION": "Audit trail and explanations for machine-learning decisions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs are for signed-in users (or a token) only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI from drf-spectacular-sidecar under /static/: pinned, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge fetched from the public validator service.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Recovery: leases, time limits, queues -----------------------------------------
# A worker that claims explanations holds a lease on them (their updated_at) and renews
# it every ATTEST_EXPLAIN_LEASE / 3 seconds while it computes. The sweeper runs every
# ATTEST_SWEEP_INTERVAL seconds on a queue of its own, `maintenance`, which every worker
# started without -Q serves (so no backlog delays it), and sends again what is lost:
# rows whose lease expired (their worker died, or was killed at the hard time limit),
# pending rows whose task the broker refused (the publisher marks them: at the next
# sweep), and pending rows the broker lost: after ATTEST_UNSENT_GRACE when no
# explanation task waits in the broker, else after ATTEST_PENDING_GRACE (they may be
# waiting in the backlog). A dead worker's rows are back in the queue within lease +
# sweep interval (60 s by default); refused rows, within a sweep interval (15 s) of
# the worker's reconnection; lost rows, within grace + sweep interval (30 s).
# The order that must hold (the first by construction, the others checked below):
#   renewal interval < lease: a renewal or two late (a long call holding the GIL, the
#     database away for seconds) does not take a live worker's rows away;
#   soft < hard time limit: a batch that overruns stores why before it is killed;
#   hard limit + the longest retry countdown (120 s) < the broker's visibility timeout:
#     Redis never hands a message to a second worker while the first still runs it.
# The lease need not exceed the time limits: renewal, not a guess at how long a batch
# takes, tells a live worker from a dead one. Nor does recovery wait for the visibility
# timeout: a dead worker's message comes back an hour later and finds its rows done.
ATTEST_EXPLAIN_LEASE = env_int("ATTEST_EXPLAIN_LEASE", 45)
ATTEST_EXPLAIN_HEARTBEAT = ATTEST_EXPLAIN_LEASE / 3
ATTEST_SWEEP_INTERVAL = env_int("ATTEST_SWEEP_INTERVAL", 15)
ATTEST_UNSENT_GRACE = env_int("ATTEST_UNSENT_GRACE", 15)
ATTEST_PENDING_GRACE = env_int("ATTEST_PENDING_GRACE", 300)
ATTEST_EXPLAIN_SOFT_TIME_LIMIT = env_int("ATTEST_EXPLAIN_SOFT_TIME_LIMIT", 300)
ATTEST_EXPLAIN_TIME_LIMIT = env_int("ATTEST_EXPLAIN_TIME_LIMIT", 360)
ATTEST_BROKER_VISIBILITY_TIMEOUT = env_int("ATTEST_BROKER_VISIBILITY_TIMEOUT", 3600)
# Tasks that set no limits of their own (each of ours does: reports 900/960 s are the longest).
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
if not (
    0
    < ATTEST_EXPLAIN_SOFT_TIME_LIMIT
    < ATTEST_EXPLAIN_TIME_LIMIT
    < ATTEST_BROKER_VISIBILITY_TIMEOUT - 120
    and ATTEST_EXPLAIN_LEASE > 0
):
    raise ImproperlyConfigured(
        "Need 0 < ATTEST_EXPLAIN_SOFT_TIME_LIMIT < ATTEST_EXPLAIN_TIME_LIMIT < "
        "ATTEST_BROKER_VISIBILITY_TIMEOUT - 120 and a positive ATTEST_EXPLAIN_LEASE."
    )

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(VAR_DIR / "broker")
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": ATTEST_BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery closes a worker's database connection around every task unless told to
# reuse it: a new PostgreSQL backend per task (and its cold caches) costs more than
# explaining a batch with a small tree model. Tasks still drop broken or old
# connections first (explain/tasks.py: close_old_connections, CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 100)
CELERY_TASK_DEFAULT_QUEUE = "explain"
# Declared so that a worker started without -Q serves every queue; production
# runs dedicated workers per queue (see the README).
CELERY_TASK_QUEUES = [
    Queue(name, Exchange(name), routing_key=name)
    for name in (
        "explain",
        "explain-lime",
        "explain-priority",
        "explain-cf",  # counterfactuals of adverse decisions (explain/counterfactual_work.py)
        "reports",
        "monitoring",
        "verify",
        "maintenance",
        "serving",  # shadow versions scoring what was served (serving/tasks.py)
    )
]
CELERY_TASK_ROUTES = {
    "explain.sweep": {"queue": "maintenance"},
    "explain.counterfactuals": {"queue": "explain-cf"},
    "partitions.create_ahead": {"queue": "maintenance"},
    "retention.apply": {"queue": "maintenance"},
    "audit.verify": {"queue": "verify"},  # decisions/tasks.py: verification jobs
    # Sent by name from services modules (the task modules import those, not the reverse).
    "reports.generate": {"queue": "reports"},
    "monitoring.compute_window": {"queue": "monitoring"},
    "monitoring.deliver_webhook": {"queue": "monitoring"},
    "monitoring.deliver_email": {"queue": "monitoring"},
    "serving.shadow": {"queue": "serving"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A client waiting for its decisions to be acknowledged must not wait on a
# broker that is down: the sweeper re-sends what could not be enqueued.
CELERY_TASK_PUBLISH_RETRY = False
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # Monitoring snapshots of the last completed hour / day / week, soon after it ends.
    "monitoring-compute-due": {
        "task": "monitoring.compute_due",
        "schedule": 300.0,
        "options": {"queue": "monitoring"},
    },
    # Lost explanations back to the queue (see "Recovery" above), never behind a backlog.
    "explain-sweep": {
        "task": "explain.sweep",
        "schedule": float(ATTEST_SWEEP_INTERVAL),
        "options": {"queue": "maintenance"},
    },
    # Next months' partitions of decisions (PostgreSQL), created long before they are needed.
    "partitions-create-ahead": {
        "task": "partitions.create_ahead",
        "schedule": 6 * 3600.0,
        "options": {"queue": "maintenance"},
    },
    # Personal inputs past each model's retention period erased (decisions/input_retention.py).
    "retention-apply": {
        "task": "retention.apply",
        "schedule": 24 * 3600.0,
        "options": {"queue": "maintenance"},
    },
    # New decisions, audit events and records join the log within a minute.
    "audit-seal": {"task": "audit.seal", "schedule": 60.0, "options": {"queue": "reports"}},
    # Report requests whose message never reached a worker are sent again.
    "reports-resend": {
        "task": "reports.resend_pending",
        "schedule": 60.0,
        "options": {"queue": "reports"},
    },
}

# --- Seals: signing key, verification -------------------------------------------
# Every seal is a signed tree head of the log (README: Audit log). The key is the
# base64 of a 32-byte Ed25519 seed, from the environment: production must set it
# (start-up stops without it); the embedded default makes one once and keeps it in
# ATTEST_SEAL_KEY_FILE. A malformed key stops start-up instead of failing each seal.
ATTEST_SEAL_SIGNING_KEY = (
    env_str("ATTEST_SEAL_SIGNING_KEY") if PRODUCTION else env_str("ATTEST_SEAL_SIGNING_KEY", "")
)
ATTEST_SEAL_KEY_FILE = VAR_DIR / "seal-signing.key"
if ATTEST_SEAL_SIGNING_KEY:
    try:
        if len(base64.b64decode(ATTEST_SEAL_SIGNING_KEY.strip(), validate=True)) != 32:
            raise ValueError
    except ValueError:
        raise ImproperlyConfigured(
            "ATTEST_SEAL_SIGNING_KEY must be the base64 of a 32-byte Ed25519 seed "
            "(e.g. openssl rand -base64 32)."
        ) from None
# The public keys of earlier signing keys, oldest first, comma-separated base64 (the
# `public_key` of GET /api/v1/audit/public-key): they stay trusted for the seals they
# signed (README: rotating the signing key). Checked here, so a typo stops start-up.
ATTEST_SEAL_RETIRED_KEYS = tuple(
    entry.strip() for entry in env_str("ATTEST_SEAL_RETIRED_KEYS", "").split(",") if entry.strip()
)
try:
    _retired = parse_public_keys(ATTEST_SEAL_RETIRED_KEYS)
    if ATTEST_SEAL_SIGNING_KEY and public_key_of_seed(ATTEST_SEAL_SIGNING_KEY) in _retired:
        raise ValueError(
            "ATTEST_SEAL_RETIRED_KEYS lists the public key of ATTEST_SEAL_SIGNING_KEY, the "
            "current key: list only the keys that signed earlier seals"
        )
except ValueError as _error:
    raise ImproperlyConfigured(f"{_error}.") from None
# --- Encryption at rest of sensitive inputs (README: Encryption at rest) -------------
# Data keys: comma-separated `keyid:base64(32 bytes)`, the first encrypts, every one
# decrypts (the older ones until `manage.py rotate_data_keys` has re-encrypted their
# rows). The blind-index key (base64 of 32 bytes) keys the HMAC that lets the search
# match a sensitive value exactly. Production must set both (start-up stops without
# them); elsewhere each is made once and kept in var/. Checked here: a typo stops start-up.
ATTEST_DATA_KEYS = tuple(
    entry.strip()
    for entry in (
        env_str("ATTEST_DATA_KEYS") if PRODUCTION else env_str("ATTEST_DATA_KEYS", "")
    ).split(",")
    if entry.strip()
)
ATTEST_DATA_KEY_FILE = VAR_DIR / "data-keys"
ATTEST_BLIND_INDEX_KEY = (
    env_str("ATTEST_BLIND_INDEX_KEY") if PRODUCTION else env_str("ATTEST_BLIND_INDEX_KEY", "")
)
ATTEST_BLIND_INDEX_KEY_FILE = VAR_DIR / "blind-index.key"
try:
    parse_data_keys(ATTEST_DATA_KEYS)
    if ATTEST_BLIND_INDEX_KEY:
        parse_blind_index_key(ATTEST_BLIND_INDEX_KEY)
except ValueError as _error:
    raise ImproperlyConfigured(f"{_error}.") from None
# GET /api/v1/audit/verify verifies in the request up to this many decisions and
# audit events together; beyond, it answers 409 and POST runs it as a job.
ATTEST_VERIFY_NOW_LIMIT = env_int("ATTEST_VERIFY_NOW_LIMIT", 50_000)
# How far back a row of the log may be dated against the row written before it
# and the seals around it (concurrent writers, clocks of several hosts) before
# verification calls it backdated (decisions/sealing.py, _Clock).
ATTEST_LOG_CLOCK_TOLERANCE = env_int("ATTEST_LOG_CLOCK_TOLERANCE", 300)

ATTEST_EXPLAIN_BATCH_SIZE = env_int("ATTEST_EXPLAIN_BATCH_SIZE", 250)
ATTEST_MAX_BATCH = 10_000
# The review queue takes decisions whose score is this close to the threshold.
ATTEST_REVIEW_THRESHOLD = float(env_str("ATTEST_REVIEW_THRESHOLD", "0.5"))
ATTEST_REVIEW_SCORE_BAND = float(env_str("ATTEST_REVIEW_SCORE_BAND", "0.05"))
# Monitoring alerts: a webhook (POSTed JSON) and e-mail recipients, both optional.
ATTEST_ALERT_WEBHOOK_URL = env_str("ATTEST_ALERT_WEBHOOK_URL", "")
ATTEST_ALERT_WEBHOOK_TIMEOUT = float(env_str("ATTEST_ALERT_WEBHOOK_TIMEOUT", "5"))
ATTEST_ALERT_EMAILS = env_list("ATTEST_ALERT_EMAILS", [])
# Alert rules judge only windows with at least this many decisions.
ATTEST_MONITORING_MIN_DECISIONS = env_int("ATTEST_MONITORING_MIN_DECISIONS", 30)
# Drift (of inputs, scores, attributions) is judged on windows of at least this many
# decisions: on a few dozen any PSI is large (a 39-decision partial day once raised
# drift alerts on nothing).
ATTEST_MONITORING_MIN_DRIFT_DECISIONS = env_int("ATTEST_MONITORING_MIN_DRIFT_DECISIONS", 100)
# Performance (ROC AUC and the rest) is judged with at least this many outcomes of each
# class (of all outcomes, for a regression): a ROC AUC "drop" once fired on 17 positives.
ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS = env_int("ATTEST_MONITORING_MIN_OUTCOMES_PER_CLASS", 30)
# Reports and notices: how a person contests an automated decision (printed on every notice).
ATTEST_CONTEST_TEXT = env_str(
    "ATTEST_CONTEST_TEXT",
    "You may ask for a person to review this decision, express your point of view and "
    "contest it. Write to the organisation that made the decision within 30 days, quoting "
    "the reference on this notice; a member of staff who was not involved will review it "
    "and answer within one month.",
)
# A report still pending after this many seconds is sent to the workers again.
ATTEST_REPORT_RESEND_AFTER = env_int("ATTEST_REPORT_RESEND_AFTER", 300)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"expected_refusals": {"()": "auditapp.logfilters.ExpectedRefusals"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Django's own console handler would print each request warning a second time.
        "django": {"level": "INFO"},
        "django.request": {"filters": ["expected_refusals"]},
        # A line per task received and finished buries what matters (`make run`): Celery's
        # per-task lines at WARNING; its start-up, failures and Attest's own lines stay.
        "celery.app.trace": {"level": env_str("CELERY_TASK_LOG_LEVEL", "WARNING")},
        "celery.worker.strategy": {"level": env_str("CELERY_TASK_LOG_LEVEL", "WARNING")},
        "celery.beat": {"level": env_str("CELERY_TASK_LOG_LEVEL", "WARNING")},
        "axes": {"level": "WARNING"},
    },
}

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"

# Input limits --------------------------------------------------------------------------
# What the API and pages accept (README: Security > Input limits). Every refusal is a
# 4xx naming the field, never a 500.
# The largest request body; DATA_UPLOAD_MAX_MEMORY_SIZE above reads ATTEST_MAX_REQUEST_BYTES.
# A larger body (other than a multipart upload) is a 413 before it is read.
ATTEST_MAX_JSON_DEPTH = env_int("ATTEST_MAX_JSON_DEPTH", 32)
ATTEST_METADATA_MAX_DEPTH = env_int("ATTEST_METADATA_MAX_DEPTH", 5)
ATTEST_METADATA_MAX_KEYS = env_int("ATTEST_METADATA_MAX_KEYS", 1000)
ATTEST_METADATA_MAX_BYTES = env_int("ATTEST_METADATA_MAX_BYTES", 64 * 1024)
# predicted_at (and an outcome's observed_at) must lie in this window around the server's clock.
ATTEST_PREDICTED_AT_MAX_AGE_DAYS = env_int("ATTEST_PREDICTED_AT_MAX_AGE_DAYS", 3650)
ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES = env_int("ATTEST_PREDICTED_AT_MAX_AHEAD_MINUTES", 1440)
# The longest period a compliance report covers.
ATTEST_REPORT_MAX_DAYS = env_int("ATTEST_REPORT_MAX_DAYS", 3660)
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "auditapp.web.limits.InputLimitsMiddleware",
)

# Four-eyes approvals (README: Four-eyes approvals): days a request waits for a second
# person before it expires. Every model starts with four-eyes on (not an environment
# variable: a deployment cannot turn the control off for all; the test settings do).
ATTEST_APPROVAL_TTL_DAYS = env_int("ATTEST_APPROVAL_TTL_DAYS", 7)
ATTEST_FOUR_EYES_NEW_MODELS = True

# Serving (README: Processes, sizing and the cold start): a web process loads, as it
# starts, the versions that answer under each model's traffic policy, so that the first
# predict after a deploy does not pay the cold load.
ATTEST_SERVING_PRELOAD = env_bool("ATTEST_SERVING_PRELOAD", True)
