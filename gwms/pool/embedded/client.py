"""HTTP clients of the embedded collector: `EmbeddedCollector` and `EmbeddedSchedd`.

Both speak the JSON API of `gwms.pool.embedded.server` with a bearer token read from a
file. One instance per thread (they share a `requests.Session`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import classad2
import requests

from gwms import classads
from gwms.pool.base import (
    ANY_AD_TYPE,
    ConflictError,
    Constraint,
    NotFoundError,
    PoolError,
    parse_job_id,
)
from gwms.pool.embedded.tokens import read_token_file

API = "/v1"


class _Http:
    """One base URL, one token, one session; maps HTTP failures to one-sentence PoolErrors."""

    def __init__(
        self,
        url: str,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise PoolError(f"collector URL {url!r} must start with http:// or https://.")
        self.url = url.rstrip("/")
        self.token_file = Path(token_file) if token_file else None
        self.timeout = timeout
        self.session = requests.Session()
        # Passed on every call: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        self.verify: str | bool = str(ca_file) if ca_file else True
        if self.token_file is not None:
            token = read_token_file(self.token_file)
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, token_file={self.token_file!r})"

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.post(
                self.url + path, json=body, timeout=self.timeout, verify=self.verify
            )
        except requests.RequestException as exc:
            raise PoolError(
                f"cannot reach the collector at {self.url} ({type(exc).__name__}); check that "
                "`gwms collector serve` runs there and that the URL is right."
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code == 200 and isinstance(payload, dict):
            return payload
        reason = payload.get("error") if isinstance(payload, dict) else None
        reason = reason or f"HTTP {response.status_code}"
        if response.status_code == 401:
            where = (
                f"the token in {self.token_file}"
                if self.token_file
                else "a request without a token"
            )
            raise PoolError(f"the collector at {self.url} refused {where}: {reason}.")
        if response.status_code == 404:
            raise NotFoundError(f"the collector at {self.url}: {reason}")
        if response.status_code == 409:
            raise ConflictError(f"the collector at {self.url}: {reason}")
        raise PoolError(f"the collector at {self.url} rejected the request: {reason}")

    def close(self) -> None:
        self.session.close()


def _constraint(constraint: Constraint) -> str:
    expr = classads.as_expr(constraint, "constraint")  # fail here, before any network call
    return repr(expr)


def _ads_to_json(ads: Sequence[classad2.ClassAd]) -> list[dict[str, Any]]:
    return [classads.ad_to_json(ad) for ad in ads]


def _json_to_ads(items: Any, where: str) -> list[classad2.ClassAd]:
    if not isinstance(items, list):
        raise PoolError(f"the collector sent a malformed answer: {where} is not a list.")
    return [classads.json_to_ad(item, where) for item in items]


class _EmbeddedClient:
    """What both embedded clients share: one HTTP session with the server's URL and token."""

    def __init__(
        self,
        url: str,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.http = _Http(url, token_file, ca_file, timeout)

    def __repr__(self) -> str:
        return repr(self.http).replace("_Http", type(self).__name__)

    def close(self) -> None:
        """Release the HTTP connections."""
        self.http.close()


class EmbeddedCollector(_EmbeddedClient):
    """`Collector` over the embedded collector's HTTP API."""

    def advertise(self, ads: Sequence[classad2.ClassAd], lifetime: int | None = None) -> int:
        """Store or replace `ads`; the server stamps AuthenticatedIdentity from our token."""
        answer = self.http.post(f"{API}/ads", {"ads": _ads_to_json(ads), "lifetime": lifetime})
        return int(answer.get("advertised", 0))

    def query(
        self,
        ad_type: str = ANY_AD_TYPE,
        constraint: Constraint = "true",
        projection: Sequence[str] | None = None,
    ) -> list[classad2.ClassAd]:
        """Unexpired ads of MyType `ad_type` matching `constraint`."""
        body = {
            "type": ad_type,
            "constraint": _constraint(constraint),
            "projection": list(projection) if projection is not None else None,
        }
        return _json_to_ads(self.http.post(f"{API}/ads/query", body).get("ads"), "ads")

    def invalidate(self, ad_type: str, constraint: Constraint = "true") -> int:
        """Drop matching ads; return how many."""
        body = {"type": ad_type, "constraint": _constraint(constraint)}
        return int(self.http.post(f"{API}/ads/invalidate", body).get("invalidated", 0))


class EmbeddedSchedd(_EmbeddedClient):
    """`Schedd` over the embedded collector's HTTP API, including the pilot's claim/complete."""

    def submit(self, job_ads: Sequence[classad2.ClassAd]) -> list[str]:
        """Queue `job_ads` as one cluster; return their "cluster.proc" ids."""
        ids = self.http.post(f"{API}/jobs", {"jobs": _ads_to_json(job_ads)}).get("ids")
        if not isinstance(ids, list):
            raise PoolError("the collector sent a malformed answer: ids is not a list.")
        return [str(i) for i in ids]

    def query(
        self, constraint: Constraint = "true", projection: Sequence[str] | None = None
    ) -> list[classad2.ClassAd]:
        """Job ads matching `constraint`, oldest first."""
        body = {
            "constraint": _constraint(constraint),
            "projection": list(projection) if projection is not None else None,
        }
        return _json_to_ads(self.http.post(f"{API}/jobs/query", body).get("jobs"), "jobs")

    def remove(self, constraint: Constraint) -> int:
        """Mark matching idle/running jobs removed; return how many."""
        answer = self.http.post(f"{API}/jobs/remove", {"constraint": _constraint(constraint)})
        return int(answer.get("removed", 0))

    def claim(self, machine_ad: classad2.ClassAd) -> classad2.ClassAd | None:
        """Take the oldest idle job matching `machine_ad` both ways (server-side, atomic)."""
        job = self.http.post(f"{API}/jobs/claim", {"machine": classads.ad_to_json(machine_ad)}).get(
            "job"
        )
        return None if job is None else classads.json_to_ad(job, "job")

    def complete(self, job_id: str, exit_code: int, output_tail: str = "") -> classad2.ClassAd:
        """Report a claimed job's exit code and output tail; return its final ad."""
        parse_job_id(job_id)
        body = {"exit_code": int(exit_code), "output_tail": output_tail}
        job = self.http.post(f"{API}/jobs/{job_id}/complete", body).get("job")
        return classads.json_to_ad(job, "job")
