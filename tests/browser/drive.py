"""Real-browser checks of `profiledb serve` (tests/server_browser.rs runs this).

Usage: drive.py SERVE_URL WRITE_KEY LOCKED_KEY NPM_DIR SCENARIO...

Profiles are read back with an admin token (write keys only ingest, docs/security.md):
PROFILEDB_ADMIN_TOKEN, a server-wide token, and PROFILEDB_ADMIN_PROJECT, WRITE_KEY's project.

Serves test pages from its own 127.0.0.1 port (another origin than SERVE_URL, so CORS is
real), drives Debian's headless Chromium through chromedriver (selenium), and after each
step reads the profiles back from the server. Scenarios: embed, segment, posthog.
Prints "ok SCENARIO" per scenario; exits non-zero with the reason on the first failure.
"""

import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SERVE, KEY, LOCKED_KEY, NPM = sys.argv[1:5]
SCENARIOS = sys.argv[5:]
ADMIN_TOKEN = os.environ["PROFILEDB_ADMIN_TOKEN"]
ADMIN_PROJECT = os.environ["PROFILEDB_ADMIN_PROJECT"]
WAIT_SECONDS = 30


# ---- reading back: the one place that knows how profiles are read ----
def profile(selector, value):
    """The profile of `selector` (user_id, email, anonymous_id, key) or None (404)."""
    query = urllib.parse.urlencode({selector: value, "project": ADMIN_PROJECT})
    req = urllib.request.Request(f"{SERVE}/v1/profiles?{query}")
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def post_batch(messages):
    """Send messages straight to the server (not through a browser); its JSON answer."""
    body = json.dumps({"batch": messages, "writeKey": KEY}).encode()
    req = urllib.request.Request(f"{SERVE}/v1/batch", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def wait_for(what, fetch, ok):
    """Poll `fetch()` until `ok(value)` holds; fail naming `what` and the last value."""
    deadline = time.time() + WAIT_SECONDS
    while True:
        value = fetch()
        if value is not None and ok(value):
            return value
        if time.time() > deadline:
            raise AssertionError(f"{what}: not reached; last value: {json.dumps(value)}")
        time.sleep(0.1)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- the page server ----
SNIPPET = """<script>window.profiledb=window.profiledb||[];"identify group alias track page reset".split(" ").forEach(function(m){profiledb[m]=profiledb[m]||function(){profiledb.push([m].concat([].slice.call(arguments)))}})</script>
<script async src="SERVE/v1/embed.js?key=KEY"></script>"""


def embed_page(query):
    key = query.get("key", [KEY])[0]
    interval = query.get("interval", [""])[0]
    options = f"profiledb.options={{flushInterval:{int(interval)}}};" if interval else ""
    snippet = SNIPPET.replace("SERVE", SERVE).replace("KEY", key)
    snippet = snippet.replace("})</script>", "});" + options + "</script>", 1)
    return f"""<!doctype html><html><head><title>embed</title>
<script>window.loadedEvents=0;addEventListener("profiledbloaded",function(){{loadedEvents++}});</script>
{snippet}
<script>profiledb.page("Home");</script>
</head><body>embed page</body></html>"""


def segment_page(_query):
    return f"""<!doctype html><html><head><title>segment</title>
<script src="/npm/@segment/analytics-next/dist/umd/index.js"></script>
<script>
window.segmentReady = false;
window.analyticsBrowser = AnalyticsNext.AnalyticsBrowser.load({{writeKey: {json.dumps(KEY)}, cdnURL: {json.dumps(SERVE)}}});
analyticsBrowser.then(function (r) {{ window.segment = r[0]; window.segmentReady = true; }},
                      function (e) {{ window.segmentError = String(e); }});
</script></head><body>segment page</body></html>"""


def posthog_page(_query):
    return f"""<!doctype html><html><head><title>posthog</title>
<script>
window.posthog = []; posthog._i = [];
posthog.init = function (token, config, name) {{ posthog._i.push([token, config, name]); }};
posthog.init({json.dumps(KEY)}, {{api_host: {json.dumps(SERVE)}, autocapture: false,
  disable_session_recording: true, disable_surveys: true, persistence: "localStorage+cookie",
  request_batching: false, opt_out_useragent_filter: true,
  loaded: function (ph) {{ window.posthogReady = true; }}}});
</script>
<script src="/npm/posthog-js/dist/array.js"></script>
</head><body>posthog page</body></html>"""


PAGES = {"/embed.html": embed_page, "/segment.html": segment_page, "/posthog.html": posthog_page}
STATIC = {
    "/npm/": NPM,
    # analytics.js loads its lazy chunks from here when it needs any.
    "/analytics-next/bundles/": os.path.join(NPM, "@segment/analytics-next/dist/umd"),
}


class Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path in PAGES:
            return self.reply(200, "text/html", PAGES[url.path](urllib.parse.parse_qs(url.query)).encode())
        if url.path == "/blank.html":
            return self.reply(200, "text/html", b"<!doctype html><title>blank</title>no script here")
        for prefix, root in STATIC.items():
            if url.path.startswith(prefix):
                rel = os.path.normpath(url.path[len(prefix):])
                path = os.path.join(root, rel)
                if rel.startswith("..") or not os.path.isfile(path):
                    break
                with open(path, "rb") as f:
                    return self.reply(200, "text/javascript", f.read())
        self.reply(404, "text/plain", b"not found")

    def reply(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_pages():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ---- the browser ----
def start_browser(profile_dir):
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("PROFILEDB_CHROMIUM", "/usr/bin/chromium")
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile_dir}"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("PROFILEDB_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_script_timeout(WAIT_SECONDS)
    return driver


def js_wait(driver, what, expression):
    return wait_for(what, lambda: driver.execute_script(f"return {expression}"), bool)


CONSOLE = []


def console(driver):
    """Every browser console line so far (chromedriver hands each line out once)."""
    CONSOLE.extend(e["message"] for e in driver.get_log("browser"))
    return CONSOLE


def open_embed(driver, pages, query=""):
    driver.get(f"{pages}/embed.html{query}")
    js_wait(driver, "profiledbloaded event", "window.loadedEvents === 1 && profiledb.loaded")
    return driver.execute_script("return profiledb.anonymousId()")


# ---- (a) the embed script ----
def scenario_embed(driver, pages):
    # Anonymous calls, made before the script loaded (the snippet queues them) and after.
    aid = open_embed(driver, pages)
    check(driver.get_cookie("pdb_aid")["value"] == aid, "pdb_aid cookie holds the anonymous id")
    check(driver.execute_script("return localStorage.pdb_aid") == aid, "localStorage holds it too")
    driver.execute_script("profiledb.identify({favourite: 'green'}); profiledb.track('Viewed pricing')")
    anon = wait_for("anonymous profile", lambda: profile("anonymous_id", aid),
                    lambda p: p["properties"].get("favourite") == "green")
    check(anon["user_id"] is None, f"anonymous profile has no user id: {anon}")

    # A new page load keeps the device's id (cookie + localStorage).
    check(open_embed(driver, pages) == aid, "the anonymous id survives a page load")

    # Login: the anonymous profile merges into the person.
    driver.execute_script(
        "profiledb.identify('user-a1', {email: 'Ada@Example.com', firstName: 'Ada', plan: 'free'})")
    p = wait_for("login merged the anonymous profile", lambda: profile("user_id", "user-a1"),
                 lambda p: p["properties"].get("favourite") == "green" and aid in p["anonymous_ids"])
    check(p["email"] == "Ada@Example.com" and p["properties"]["first_name"] == "Ada", f"login traits: {p}")
    check(profile("anonymous_id", aid)["key"] == p["key"], "the device resolves to the person")
    key_a1 = p["key"]

    # A property update on a later page (GoSquared style, custom properties), and a company.
    open_embed(driver, pages)
    check(driver.execute_script("return profiledb.userId()") == "user-a1", "user id remembered")
    driver.execute_script(
        "profiledb.identify({id: 'user-a1', custom: {plan: 'pro'}}); profiledb.group('co-1', {name: 'Acme', size: 12})")
    p = wait_for("plan updated, company set", lambda: profile("user_id", "user-a1"),
                 lambda p: p["properties"].get("plan") == "pro" and p["company_id"] == "co-1")
    check(p["key"] == key_a1, "same person")

    # A call the server refuses: the script warns in the console; the profile is unchanged.
    driver.execute_script("profiledb.identify('user-a1', {firstName: 'A', marker: 'refused'})")
    driver.execute_script("profiledb.identify('user-a1', {marker: 'after'})")
    wait_for("the call after the refused one", lambda: profile("user_id", "user-a1"),
             lambda p: p["properties"].get("marker") == "after")
    logs = wait_for("console warnings", lambda: "\n".join(console(driver)) or None,
                    lambda t: "traits.firstName" in t and "refused" in t)
    check("will refuse" in logs, f"client-side warning before sending: {logs}")
    check(profile("user_id", "user-a1")["properties"]["first_name"] == "Ada", "refused call stored nothing")

    # The client's rules agree with the server's on each case.
    cross_check_rules(driver)

    # Logout: the device is detached (server-side unlink) and forgotten here.
    driver.execute_script("profiledb.reset()")
    wait_for("device unlinked at logout", lambda: (profile("anonymous_id", aid) or {"gone": True}),
             lambda p: p.get("gone"))
    p = profile("user_id", "user-a1")
    check(aid not in p["anonymous_ids"] and p["properties"]["plan"] == "pro", f"person kept: {p}")
    aid2 = driver.execute_script("return profiledb.anonymousId()")
    check(aid2 != aid and driver.get_cookie("pdb_aid")["value"] == aid2, "a new anonymous id after reset")
    check(driver.execute_script("return localStorage.pdb_uid") is None, "user id forgotten")

    # A second user in the same browser: email only first (GoSquared), then a login.
    driver.execute_script("profiledb.identify({email: 'bea@example.com', name: 'Bea'})")
    b = wait_for("second user by email", lambda: profile("email", "bea@example.com"),
                 lambda p: aid2 in p["anonymous_ids"])
    check(b["key"] != key_a1 and b["user_id"] is None, f"not merged into the first user: {b}")
    driver.execute_script("profiledb.identify('user-b2', {email: 'bea@example.com'})")
    b = wait_for("second user logged in", lambda: profile("user_id", "user-b2"),
                 lambda p: aid2 in p["anonymous_ids"] and p["properties"].get("name") == "Bea")
    a = profile("user_id", "user-a1")
    check(a["key"] == key_a1 and aid2 not in a["anonymous_ids"], f"first user untouched: {a}")

    # Navigation away mid-batch: with a one-minute flush interval only the page-hide beacon
    # can deliver, and the next page has no script.
    open_embed(driver, pages, "?interval=60000")
    driver.execute_script(
        "profiledb.identify('user-b2', {last_page: 'checkout'}); location.href = '/blank.html'")
    wait_for("beacon delivered on page hide", lambda: profile("user_id", "user-b2"),
             lambda p: p["properties"].get("last_page") == "checkout")

    cors_checks(driver, pages)


# Messages the embed script's check() and the server must judge alike.
RULE_CASES = [
    {"type": "identify", "userId": "xc-ok", "traits": {"email": "x@example.com", "first_name": "Al",
                                                       "created_at": "2026-01-02T03:04:05Z",
                                                       "avatar": "https://img.example/a.png",
                                                       "company_size": 5}},
    {"type": "identify", "userId": "x"},
    {"type": "identify", "userId": "undefined"},
    {"type": "identify", "userId": "someone@example.com"},
    {"type": "identify", "userId": "@simon"},
    {"type": "identify", "anonymousId": "guest"},
    {"type": "identify", "traits": {"email": "not-an-email"}},
    {"type": "identify", "traits": {"email": "a@b"}},
    {"type": "identify", "traits": {"email": "xc-email-ok@example.org"}},
    {"type": "identify", "userId": "xc-2", "traits": {"firstName": "A"}},
    {"type": "identify", "userId": "xc-3", "traits": {"last_name": 7}},
    {"type": "identify", "userId": "xc-4", "traits": {"created_at": "2026-01-02"}},
    {"type": "identify", "userId": "xc-5", "traits": {"avatar": "/me.png"}},
    {"type": "identify", "userId": "xc-6", "traits": {"companySize": "big"}},
    {"type": "identify", "userId": "xc-7", "traits": {"$bad": 1}},
    {"type": "identify", "userId": "xc-8", "traits": {"custom": {"first_name": "Z"}}},
    {"type": "identify", "userId": "xc-9", "traits": {"company": {"id": "xc-co", "size": "x"}}},
    {"type": "identify", "userId": "xc-10", "traits": {"company": {"id": "xc-co2", "size": 3}}},
    {"type": "identify", "userId": "xc-11", "traits": {"x" * 256: 1}},
    {"type": "identify", "userId": "xc-12", "traits": {"blob": "y" * 9000}},
    {"type": "identify", "userId": "xc-13", "$add": {"email": 1}},
    {"type": "identify", "userId": "xc-14", "$add": {"logins": 1}},
    {"type": "identify", "userId": "xc-15", "traits": {"first_name": None}},
    {"type": "identify"},
    {"type": "group", "groupId": "xc-g1", "traits": {"size": "many"}},
    {"type": "group", "groupId": "xc-g2", "userId": "xc-16", "traits": {"name": "G"}},
    {"type": "alias", "userId": "xc-17", "previousId": "null"},
    {"type": "alias", "userId": "xc-18", "previousId": "xc-prev"},
]


def cross_check_rules(driver):
    problems = driver.execute_script("return arguments[0].map(function (m) { return profiledb.check(m) })",
                                      RULE_CASES)
    answer = post_batch(RULE_CASES)
    for case, client, result in zip(RULE_CASES, problems, answer["results"]):
        server_refused = result["status"] == "refused"
        check(server_refused == bool(client),
              f"client and server disagree on {json.dumps(case)[:200]}: client {client}, server {result}")


def cors_checks(driver, pages):
    js = """
    var done = arguments[arguments.length - 1];
    var serve = arguments[0], key = arguments[1], locked = arguments[2], admin = arguments[3];
    function outcome(p) { return p.then(function (r) { return r.text().then(function (t) { return r.status + ' ' + t; }); },
                                      function (e) { return 'blocked: ' + e; }); }
    var batch = function (k, id) { return JSON.stringify({writeKey: k, batch: [{type: 'identify', userId: id}]}); };
    Promise.all([
      // A preflighted request (basic auth header, JSON) to a write endpoint.
      outcome(fetch(serve + '/v1/identify', {method: 'POST', headers: {'Authorization': 'Basic ' + btoa(key + ':'),
        'Content-Type': 'application/json'}, body: JSON.stringify({userId: 'cors-preflight'})})),
      // A project that accepts other origins only.
      outcome(fetch(serve + '/v1/batch', {method: 'POST', headers: {'Content-Type': 'text/plain'}, body: batch(locked, 'cors-locked')})),
      // Reads are admin: never readable from a page, even with an admin token.
      outcome(fetch(serve + '/v1/profiles?user_id=user-a1', {headers: {'Authorization': 'Bearer ' + admin}})),
    ]).then(done);
    """
    driver.get(f"{pages}/blank.html")
    preflighted, locked, read = driver.execute_async_script(js, SERVE, KEY, LOCKED_KEY, ADMIN_TOKEN)
    check(preflighted.startswith("200 "), f"preflighted write: {preflighted}")
    check(profile("user_id", "cors-preflight") is not None, "preflighted write stored")
    check(locked.startswith("403 ") and "origin_not_allowed" in locked, f"locked project: {locked}")
    check(read.startswith("blocked"), f"admin read from a page must be blocked by CORS: {read}")


# ---- (b) Segment's analytics.js ----
def scenario_segment(driver, pages):
    driver.get(f"{pages}/segment.html")
    js_wait(driver, "analytics.js loaded", "window.segmentReady || window.segmentError")
    err = driver.execute_script("return window.segmentError")
    check(not err, f"analytics.js failed to load: {err}")
    aid = driver.execute_script("return segment.user().anonymousId()")
    driver.execute_script("segment.identify({favourite: 'blue'}); segment.page()")
    wait_for("analytics.js anonymous identify", lambda: profile("anonymous_id", aid),
             lambda p: p["properties"].get("favourite") == "blue")
    driver.execute_script(
        "segment.identify('seg-user-1', {email: 'seg@example.com', firstName: 'Sega', plan: 'team'});"
        "segment.group('seg-co', {name: 'SegCo'}); segment.track('Clicked', {button: 'buy'})")
    p = wait_for("analytics.js login merged", lambda: profile("user_id", "seg-user-1"),
                 lambda p: aid in p["anonymous_ids"] and p["company_id"] == "seg-co"
                 and p["properties"].get("favourite") == "blue")
    check(p["email"] == "seg@example.com" and p["properties"]["first_name"] == "Sega", f"traits: {p}")


# ---- (c) posthog-js ----
def answered(endpoint):
    """How many 200 answers the server counted for `endpoint` (its /metrics, which needs a
    server-wide admin token)."""
    req = urllib.request.Request(f"{SERVE}/metrics")
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    line = f'profiledb_http_responses_total{{endpoint="{endpoint}",code="200"}} '
    return sum(int(l[len(line):]) for l in text.splitlines() if l.startswith(line))


def scenario_posthog_start(driver, pages):
    """posthog-js starts against the server: its remote config answered (nothing enabled, so
    it asks for no flags) and its first event (a $pageview) accepted by the capture endpoint."""
    before = {e: answered(e) for e in ["posthog_config", "posthog_capture"]}
    driver.get(f"{pages}/posthog.html")
    js_wait(driver, "posthog-js loaded", "window.posthogReady")
    check(driver.execute_script("return !posthog.isFeatureEnabled('anything')"), "no feature flags")
    for endpoint, n in before.items():
        wait_for(f"posthog-js called {endpoint}", lambda: answered(endpoint), lambda m: m > n)


def scenario_posthog(driver, pages):
    driver.get(f"{pages}/posthog.html")
    js_wait(driver, "posthog-js loaded", "window.posthogReady")
    distinct = driver.execute_script("return posthog.get_distinct_id()")
    driver.execute_script("posthog.identify('ph-user-1', {email: 'ph@example.com', plan: 'growth'})")
    p = wait_for("posthog-js identify", lambda: profile("user_id", "ph-user-1"),
                 lambda p: p["email"] == "ph@example.com" and p["properties"].get("plan") == "growth")
    check(distinct in p["anonymous_ids"], f"the anonymous distinct id merged: {p}")


def main():
    pages_server, pages = start_pages()
    profile_dir = tempfile.mkdtemp(prefix="profiledb-chromium-")
    driver = start_browser(profile_dir)
    try:
        caps = driver.capabilities
        print(f"browser {caps.get('browserName')} {caps.get('browserVersion')}, chromedriver "
              f"{caps.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]}", flush=True)
        for name in SCENARIOS:
            globals()[f"scenario_{name}"](driver, pages)
            print(f"ok {name}", flush=True)
    except Exception:
        try:
            print("browser console:\n" + "\n".join(console(driver)), file=sys.stderr)
        except Exception:
            pass
        raise
    finally:
        driver.quit()
        pages_server.shutdown()
        shutil.rmtree(profile_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
