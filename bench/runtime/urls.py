"""Database URLs as users give them (``--storage``, ``MLFLOW_TRACKING_URI``): their passwords masked
for printing, and the Optuna storage URL's scheme checked against the drivers installed here.

Light on purpose (no SQLAlchemy, Optuna or MLflow): the command line checks ``--storage`` with it
before any of those load.
"""
from __future__ import annotations

import importlib.util
import re

from bench.core.errors import BenchError

# user:password@host as SQLAlchemy reads it: the user holds no ':' or '/', the password runs to the
# last '@' before the host (an unencoded '@' in it is kept, and its tail would be printed as the host).
_USERINFO = re.compile(r"(://[^:/]*:).*@(?=[^@/?]*(?:[/?]|$))", re.S)
# query parameters that carry a secret (libpq's password, MySQL drivers' passwd / pwd, tokens)
_SECRET_PARAM = re.compile(r"([?&;][\w.-]*(?:pass|pwd|secret|token)[\w.-]*=)[^&;#]*", re.I)


def mask_secret(url: str) -> str:
    """A URL with its password replaced by ***, safe to log or print: ``user:***@host`` (up to the
    last ``@``) and ``?password=***`` (also ``passwd``, ``pwd``, ``sslpassword``, tokens)."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


# The databases Optuna's RDB storage supports, SQLAlchemy's synchronous drivers for each (the
# ``dialect+driver://`` of a URL), the module each driver imports and the package that brings it.
DRIVERS: dict[str, dict[str, tuple[str, str]]] = {
    "sqlite": {"pysqlite": ("sqlite3", "")},  # Python's own, where it was built with it
    "postgresql": {"psycopg": ("psycopg", "'ttaid-bench[postgres]'"), "psycopg2": ("psycopg2", "psycopg2-binary"),
                   "pg8000": ("pg8000", "pg8000")},
    "mysql": {"mysqldb": ("MySQLdb", "mysqlclient"), "pymysql": ("pymysql", "PyMySQL"),
              "mysqlconnector": ("mysql.connector", "mysql-connector-python")},
}


def default_driver(dialect: str) -> str:
    """The driver SQLAlchemy uses for ``dialect://`` (PostgreSQL: psycopg from SQLAlchemy 2.1 on, psycopg2 before)."""
    if dialect == "postgresql":
        from importlib import metadata

        try:
            major, minor = (int(p) for p in metadata.version("sqlalchemy").split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            return "psycopg"
        return "psycopg" if (major, minor) >= (2, 1) else "psycopg2"
    return {"sqlite": "pysqlite", "mysql": "mysqldb"}[dialect]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package (mysql of mysql.connector) that is not there
        return False


def usable_schemes() -> list[str]:
    """The storage schemes whose driver is installed here: ``sqlite://``, ``postgresql://`` (its
    default driver), ``postgresql+psycopg2://`` (another one) …"""
    out = []
    for dialect, drivers in DRIVERS.items():
        default = default_driver(dialect)
        for driver, (module, _) in drivers.items():
            if _installed(module):
                out.append(f"{dialect}://" if driver == default else f"{dialect}+{driver}://")
    return out


def check_storage(url: str | None, option: str = "--storage") -> None:
    """A one-line BenchError unless ``url`` is a database URL whose scheme Optuna supports and whose
    driver is installed; what the database says (it cannot be reached, no such file) comes when it opens."""
    if url is None:
        return
    shown = mask_secret(url)
    usable = ", ".join(usable_schemes()) or "none (no database driver is installed)"
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise BenchError(f"{option} {shown}: expected a database URL such as sqlite:///optuna.db or "
                         f"postgresql://user@host/db; usable here: {usable} (without {option}: a journal file "
                         f"in --home)")
    dialect, _, driver = scheme.lower().partition("+")
    if dialect not in DRIVERS:
        raise BenchError(f"{option} {shown}: unknown scheme {scheme!r}; expected one of: "
                         f"{', '.join(DRIVERS)} (usable here: {usable})")
    driver = driver or default_driver(dialect)
    if driver not in DRIVERS[dialect]:
        raise BenchError(f"{option} {shown}: unknown driver {driver!r} for {dialect}; expected one of: "
                         f"{', '.join(DRIVERS[dialect])} (usable here: {usable})")
    module, package = DRIVERS[dialect][driver]
    if not _installed(module):
        how = f"pip install {package}" if package else "this Python was built without it"
        raise BenchError(f"{option} {shown}: scheme {scheme!r} needs the {driver} driver (module {module}), "
                         f"which is not installed ({how}); usable here: {usable}")


__all__ = ["mask_secret", "check_storage", "usable_schemes", "default_driver", "DRIVERS"]
