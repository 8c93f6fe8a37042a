"""Credentials out of anything shown or logged: URIs, connection strings.

``redact("postgresql://etl:s3cret@db:5432/mlflow")`` -> ``"postgresql://etl:***@db:5432/mlflow"``;
``redact("10.0.0.5:6379,db=2,password=s3cret")`` -> ``"10.0.0.5:6379,db=2,password=***"``;
``redact("https://host/x?sig=abc&id=1")`` -> ``"https://host/x?sig=***&id=1"``.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@  and  scheme://token@  (userinfo without a password is masked whole)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^@/\s?#]+)@")
# key=value pairs in queries and Feast/Redis connection strings (?, &, ;, or ,-separated)
_SECRET_PARAM = re.compile(
    r"(?P<key>(?:^|[?&;,\s])(?:password|passwd|pwd|pass|token|access_token|api_key|apikey|secret|"
    r"client_secret|key|sig|signature|sas|credential|credentials)=)(?P<value>[^&;,\s]+)",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, sep, _ = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}:{MASK}@" if sep else f"{match.group('scheme')}{MASK}@"


def redact(text: str | None) -> str | None:
    """``text`` with passwords, tokens and signed-URL secrets replaced by ``***``."""
    if text is None:
        return None
    text = _USERINFO.sub(_mask_userinfo, str(text))
    return _SECRET_PARAM.sub(lambda m: m.group("key") + MASK, text)
