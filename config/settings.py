"""Django settings, read only from environment variables (see config/env.py)."""

from __future__ import annotations

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
    "django_tasks_db",
    # Its templates and static files: /api/docs serves Swagger UI locally, not from a CDN.
    "ninja",
    "inference",
    "annotation",
    "training",
]

MIDDLEWARE = [
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

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default", "gpu"],
    }
}
# Modules imported at start-up that register more training stages (training/stages.py).
TRAINING_STAGE_MODULES = env_list("TRAINING_STAGE_MODULES", [])

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
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

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
