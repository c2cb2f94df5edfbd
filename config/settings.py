"""Django settings, read only from environment variables (see config/env.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# The secret: SECRET_KEY, else the file `make run` writes (VAR_DIR/secret_key), so every
# manage.py command works as typed after `make run` with no extra environment.
SECRET_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY and SECRET_KEY_FILE.is_file():
    SECRET_KEY = SECRET_KEY_FILE.read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and DEBUG is off, and {SECRET_KEY_FILE} is absent or "
            "empty. Either run `make run` once (it writes that file), or set SECRET_KEY "
            "to a long random string (python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'); DEBUG=1 uses an insecure key for "
            "local development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS only when DEBUG is off: behind a TLS proxy (platform/Caddyfile) that sets
# X-Forwarded-Proto. INSECURE_HTTP=1 is the one switch for plain HTTP on a local
# machine (`make run`, the tests' live server); it turns all of this off.
INSECURE_HTTP = env_bool("INSECURE_HTTP", False)
_HTTPS = not DEBUG and not INSECURE_HTTP
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = _HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _HTTPS else None
# 30 days; 0 turns HSTS off (e.g. when the compose stack is tried on localhost, whose
# browsers would otherwise refuse plain HTTP to it for that long).
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 30 * 24 * 3600) if _HTTPS else 0

# Where model artifacts live: demo models, trained policies, reward models.
MODEL_DIR = Path(env_str("MODEL_DIR", str(VAR_DIR / "models")))
# Where training stages keep their run directories (config, progress, checkpoints).
RUN_DIR = Path(env_str("RUN_DIR", str(VAR_DIR / "runs")))
# Where exports and snapshots are written.
EXPORT_DIR = Path(env_str("EXPORT_DIR", str(VAR_DIR / "exports")))
# The inference process (manage.py serve_inference) that streams playground replies:
# its unix socket, and how many policies it keeps loaded.
INFERENCE_SOCKET = Path(env_str("INFERENCE_SOCKET", str(VAR_DIR / "inference.sock")))
INFERENCE_CACHE_SIZE = env_int("INFERENCE_CACHE_SIZE", 2)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tasks",
    # Its templates and static files: /api/docs serves Swagger UI locally, not from a CDN.
    "ninja",
    "axes",
    "inference",
    "annotation",
    "training",
    # After training: an earlier app's command wins, and training's `db_worker` (one that
    # waits out a database restart) must replace the one of django_tasks_db.
    "django_tasks_db",
    # The demo is a guest on top of the product apps; product code never imports it.
    "demo",
]

MIDDLEWARE = [
    "config.body_limit.RejectLargeBodies",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "config.middleware.RejectUnstorableText",
    # Last, as django-axes asks: it answers a locked-out login attempt.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"

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
                "config.context.roles",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
    try:
        # Persistent connections, checked before reuse: opening one per request halved
        # the submissions/s on PostgreSQL (bench/annotation_load.py). 0 closes each one.
        db = dj_database_url.parse(
            url,
            conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
            conn_health_checks=True,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"DATABASE_URL could not be parsed ({exc}); expected e.g. "
            "postgres://user@host:5432/name or sqlite:///path/db.sqlite3"
        ) from None
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # WAL + IMMEDIATE transactions + a busy timeout: concurrent writers (web and
        # worker) wait for the lock instead of failing with "database is locked".
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                "PRAGMA busy_timeout=30000;"
            ),
        }
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The job queue (DESIGN.md, "Scale"). "database", the default: the database is the
# queue (django-tasks-db), a queued task commits with the rows it serves, and the
# workers are `manage.py db_worker`. "rq": Redis (REDIS_URL) through django-tasks-rq,
# for a team that prefers a broker; the workers are `manage.py rqworker default gpu
# --with-scheduler` (training/rq_worker.py), and tasks are queued once the
# transaction that asks for them commits (config/task_queue.py).
TASK_QUEUES = ["default", "gpu"]


def rq_settings(redis_url: str) -> dict:
    """Return the settings of TASK_BACKEND=rq for the Redis at `redis_url` (the
    tests' RQ fixture sets the same)."""
    return {
        "TASKS": {
            "default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": TASK_QUEUES}
        },
        # No time limit (-1): a training stage runs for hours; the reaper, not RQ,
        # fails the job of a worker that died.
        "RQ_QUEUES": {
            name: {"URL": redis_url, "DEFAULT_TIMEOUT": -1} for name in TASK_QUEUES
        },
        # The job class runs Tasks API functions (django-tasks-rq); the worker is ours.
        "RQ": {
            "JOB_CLASS": "django_tasks_rq.Job",
            "WORKER_CLASS": "training.rq_worker.Worker",
        },
    }


TASK_BACKEND = env_str("TASK_BACKEND", "database")
if TASK_BACKEND == "database":
    TASKS = {
        "default": {
            "BACKEND": "django_tasks_db.DatabaseBackend",
            "QUEUES": TASK_QUEUES,
        }
    }
elif TASK_BACKEND == "rq":
    REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            f"REDIS_URL={REDIS_URL!r} is not a Redis address: give one like "
            "redis://127.0.0.1:6379/0 (rediss:// for TLS, unix:// for a socket)"
        )
    _rq = rq_settings(REDIS_URL)
    TASKS, RQ_QUEUES, RQ = _rq["TASKS"], _rq["RQ_QUEUES"], _rq["RQ"]
    INSTALLED_APPS.append("django_rq")
else:
    raise ImproperlyConfigured(
        f"TASK_BACKEND={TASK_BACKEND!r} is not a job queue this platform has: use "
        "'database' (the default: the database is the queue, workers are "
        "`manage.py db_worker`) or 'rq' (Redis at REDIS_URL, workers are "
        "`manage.py rqworker default gpu --with-scheduler`)"
    )
# A running stage with no progress line for this long is marked "no progress" on its
# round's page (a hung stage still heartbeats: its worker lives); Cancel stops it.
STAGE_STALL_MINUTES = env_int("STAGE_STALL_MINUTES", 30)
# Modules imported at start-up that register more training stages (training/stages.py).
TRAINING_STAGE_MODULES = env_list("TRAINING_STAGE_MODULES", [])

_VALIDATION = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_VALIDATION}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_VALIDATION}.MinimumLengthValidator"},
    {"NAME": f"{_VALIDATION}.CommonPasswordValidator"},
    {"NAME": f"{_VALIDATION}.NumericPasswordValidator"},
]
# Login throttling (django-axes): five failed logins for one user from one address
# lock that pair out for 15 minutes (429); a success resets the count. Keyed on the
# pair so that nobody can lock a user out from everywhere. Behind the compose proxy
# FORWARDED_CLIENT_IP=1 takes the address from its X-Forwarded-For (config/proxy.py).
# API tokens do not log in and are not throttled here.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
FORWARDED_CLIENT_IP = env_bool("FORWARDED_CLIENT_IP", False)
AXES_CLIENT_IP_CALLABLE = "config.proxy.client_ip"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Request bodies: larger ones get 413 before any view (config/body_limit.py); the
# compose proxy caps them too (MAX_REQUEST_BODY in platform/Caddyfile). Django keeps
# at most DATA_UPLOAD_MAX_MEMORY_SIZE of form or JSON data and spools file uploads
# past FILE_UPLOAD_MAX_MEMORY_SIZE to disk.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 200 << 20)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # 2.5 MiB, Django's default, made explicit
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# Imports (annotation/importing.py): records, bytes after decompression, how many
# times its size a compressed file may inflate to, and the longest JSONL line.
IMPORT_MAX_RECORDS = env_int("IMPORT_MAX_RECORDS", 1_000_000)
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 1 << 30)
IMPORT_MAX_RATIO = env_int("IMPORT_MAX_RATIO", 50)
IMPORT_MAX_LINE_BYTES = env_int("IMPORT_MAX_LINE_BYTES", 8 << 20)
# The most pairs a web request reads: a download of a snapshot of up to this many
# pairs is written in the request (about 0.2 s), and so is a comparison of two such
# snapshots; a larger snapshot's export or comparison is the worker's job
# (annotation/export.py, annotation/snapshots.py).
REQUEST_MAX_PAIRS = env_int("REQUEST_MAX_PAIRS", 20_000)
# A project of up to this many rankings has its dashboard and overview figures
# computed in the request (about 0.4 s); a larger one's are computed by the worker and
# kept (annotation/figures.py), again when rankings came in since and the kept ones
# are FIGURES_MIN_INTERVAL seconds old, or whatever came in once they are
# FIGURES_MAX_AGE seconds old (gold marks and pauses change them too).
REQUEST_MAX_RANKINGS = env_int("REQUEST_MAX_RANKINGS", 10_000)
FIGURES_MIN_INTERVAL = env_int("FIGURES_MIN_INTERVAL", 60)
FIGURES_MAX_AGE = env_int("FIGURES_MAX_AGE", 600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
