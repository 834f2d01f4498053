"""Drives the emulator with api.video's official Python client (api-video),
as tests/official_client.rs asks: it reports what the client saw as one JSON
object on stdout, and the Rust test checks it against what the emulator
stored.

Environment: EMU_URL, EMU_LIMITED_URL (an emulator allowing 2 reads per
window), API_KEY, WHOLE_FILE, PART_A, PART_B, CHUNK_SIZE. The client package
is found through PYTHONPATH.
"""

import json
import os
import sys
import traceback

import apivideo
from apivideo.api.upload_tokens_api import UploadTokensApi
from apivideo.api.videos_api import VideosApi
from apivideo.exceptions import ApiException
from apivideo.model.token_creation_payload import TokenCreationPayload


def env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set")
    return value


def client_for(url, api_key):
    """An authenticated client (bearer access token from /auth/api-key)
    talking to `url` instead of api.video."""
    client = apivideo.AuthenticatedApiClient(api_key)
    client.configuration.host = url
    client.configuration.chunk_size = int(env("CHUNK_SIZE"))
    return client


def status_of(call):
    """The HTTP status of a call that must fail, or 'no error'."""
    try:
        call()
        return "no error"
    except ApiException as e:
        return e.status


def rate_headers(headers):
    lower = {k.lower(): v for k, v in dict(headers).items()}
    return {
        "limit": lower.get("x-ratelimit-limit"),
        "remaining": lower.get("x-ratelimit-remaining"),
        "retryAfter": lower.get("x-ratelimit-retry-after"),
    }


def main():
    out = {}
    client = client_for(env("EMU_URL"), env("API_KEY"))
    client.connect()
    tokens = UploadTokensApi(client)
    videos = VideosApi(client)

    body, status, headers = tokens.create_token(
        TokenCreationPayload(ttl=3600), _return_http_data_only=False
    )
    token = body.token
    out["created"] = {"token": token, "ttl": body.ttl, "status": status,
                      "rate": rate_headers(headers)}
    body, status, _ = tokens.list(page_size=100, _return_http_data_only=False)
    out["listed"] = [t.token for t in body.data]
    out["listStatus"] = status
    body, status, _ = tokens.get_token(token, _return_http_data_only=False)
    out["shown"] = {"token": body.token, "ttl": body.ttl, "status": status}

    # The session renews its access token with /auth/refresh.
    before = client._access_token
    client.refresh_token()
    out["refreshed"] = client._access_token != before
    _, out["listAfterRefresh"], _ = tokens.list(_return_http_data_only=False)

    # A whole file (sent as `part 1/1`), and a progressive session.
    with open(env("WHOLE_FILE"), "rb") as f:
        whole = videos.upload_with_upload_token(token, f)
    out["whole"] = {"videoId": whole.video_id, "title": whole.title}
    session = videos.create_upload_with_upload_token_progressive_session(token)
    with open(env("PART_A"), "rb") as f:
        first = session.uploadPart(f)
    with open(env("PART_B"), "rb") as f:
        last = session.uploadLastPart(f)
    out["progressive"] = {"firstVideoId": first.video_id,
                          "videoId": last.video_id, "title": last.title}

    _, out["deleteStatus"], _ = tokens.delete_token(token, _return_http_data_only=False)
    out["showDeleted"] = status_of(lambda: tokens.get_token(token))
    out["deleteDeleted"] = status_of(lambda: tokens.delete_token(token))

    def upload_deleted():
        with open(env("WHOLE_FILE"), "rb") as f:
            videos.upload_with_upload_token(token, f)
    out["uploadDeleted"] = status_of(upload_deleted)

    wrong = client_for(env("EMU_URL"), "notTheKey")
    out["wrongKeyConnect"] = status_of(wrong.connect)

    # The reads bucket: 2 admitted, then 429.
    limited = client_for(env("EMU_LIMITED_URL"), env("API_KEY"))
    limited.connect()
    limited_tokens = UploadTokensApi(limited)
    out["limited"] = []
    for _ in range(2):
        _, _, headers = limited_tokens.list(_return_http_data_only=False)
        out["limited"].append(rate_headers(headers))
    try:
        limited_tokens.list()
        out["limitedThird"] = "no error"
    except ApiException as e:
        out["limitedThird"] = e.status
        out["limitedThirdRate"] = rate_headers(e.headers or {})

    for c in (client, wrong, limited):
        c.close()
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - report whatever the client raised
        sys.stderr.write("official Python client failed:\n" + traceback.format_exc())
        sys.exit(1)
