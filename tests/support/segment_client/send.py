"""Drive a profiledb server with Segment's own Python client (segment-analytics-python).

Usage: python send.py HOST WRITE_KEY
Sends identify, group, alias and track (sync mode, then queued with gzip and flush), checks
that an unknown key is refused with Segment's error shape, and prints "ok" on success. Any
failure exits non-zero with the reason on stderr. tests/server_segment_client.rs reads the
profiles back and checks them.
"""

import sys

from segment.analytics import Client
from segment.analytics.request import APIError


def main():
    host, write_key = sys.argv[1], sys.argv[2]
    errors = []

    def on_error(error, items):
        errors.append((error, items))

    # Sync mode: every call is one POST /v1/batch, answered before the call returns; a non-2xx
    # answer raises.
    client = Client(write_key, host=host, sync_mode=True, on_error=on_error, max_retries=1)
    client.identify(
        "py-user-1",
        {"email": "Pat@Example.com", "firstName": "Pat", "lastName": "Lee", "plan": "pro"},
        anonymous_id="py-anon-1",
        message_id="py-m-1",
    )
    # A retry of the same messageId is acknowledged and ignored.
    client.identify("py-user-1", {"plan": "pro"}, message_id="py-m-1")
    client.group("py-user-1", "py-co-1", {"name": "PyCo", "size": 12})
    client.alias("py-prev-1", "py-user-1")
    client.track("py-user-1", "Signed Up", {"source": "test"}, anonymous_id="py-anon-2")

    # Queued mode with gzip: messages are batched by the client's consumer thread.
    queued = Client(write_key, host=host, gzip=True, on_error=on_error, max_retries=1)
    for i in range(50):
        queued.identify("py-bulk-%d" % i, {"n": i, "email": "bulk%d@example.com" % i})
    queued.track("py-bulk-0", "Logged In", anonymous_id="py-bulk-anon")
    queued.flush()
    queued.shutdown()
    if errors:
        sys.exit("errors from the queued client: %r" % (errors,))

    # An unknown key: Segment's error shape (code, message) reaches the client.
    bad = Client("not-a-key", host=host, sync_mode=True, max_retries=0)
    try:
        bad.identify("py-user-2", {"plan": "x"})
    except APIError as e:
        if e.status != 401 or e.code != "unauthorized":
            sys.exit("unexpected error for an unknown key: %s %s %s" % (e.status, e.code, e.message))
    else:
        sys.exit("an unknown key was accepted")
    print("ok")


if __name__ == "__main__":
    main()
