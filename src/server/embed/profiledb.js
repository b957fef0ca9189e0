/*! profiledb embed script: window.profiledb (docs/browser.md). No dependencies. */
(function (w, d) {
  'use strict';
  var stub = w.profiledb;
  if (stub && stub.loaded) return; // included twice
  var VERSION = '1';
  var AID = 'pdb_aid'; // cookie + localStorage: this device's anonymous id
  var UID = 'pdb_uid'; // localStorage: the user id of the person logged in
  var QUEUE = 'pdb_queue'; // localStorage: calls not yet acknowledged when a page was left
  var MAX_BATCH = 50;
  var KEEPALIVE_BYTES = 60000; // browsers cap keepalive bodies in flight at 64 KiB

  // Where the script came from: its origin is the server, its ?key= the write key.
  var me = d.currentScript || [].slice.call(d.scripts).filter(function (s) {
    return /\/v1\/embed\.js\?/.test(s.src);
  })[0];
  var src = new URL(me.src, location.href);
  var KEY = src.searchParams.get('key');
  var API = src.origin;
  var options = (stub && stub.options) || {};
  var interval = options.flushInterval || 500;

  function warn() {
    var a = [].slice.call(arguments);
    a.unshift('[profiledb]');
    console.warn.apply(console, a);
  }

  // ---- storage: a first-party cookie and localStorage, both optional (privacy modes) ----
  function store(k, v) {
    try {
      if (v === undefined) return localStorage.getItem(k);
      if (v === null) localStorage.removeItem(k);
      else localStorage.setItem(k, v);
    } catch (e) { /* storage disabled */ }
  }
  function cookie(k, v) {
    if (v === undefined) {
      var m = d.cookie.match(new RegExp('(?:^|; )' + k + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : null;
    }
    d.cookie = k + '=' + encodeURIComponent(v || '') + '; path=/; max-age=' +
      (v ? 31536000 : 0) + '; SameSite=Lax' +
      (location.protocol == 'https:' ? '; Secure' : '') +
      (options.cookieDomain ? '; domain=' + options.cookieDomain : '');
  }
  function uuid() {
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = b[6] & 15 | 64;
    b[8] = b[8] & 63 | 128;
    var h = [].map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join('');
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join('-');
  }
  function setAnonymousId(id) {
    anonymousId = id;
    cookie(AID, id);
    store(AID, id);
  }
  var anonymousId = cookie(AID) || store(AID);
  setAnonymousId(anonymousId || uuid());
  var userId = store(UID);

  // ---- the server's rules for special properties (docs/semantics.md, SPEC 3.1) ----
  var PLACEHOLDERS = ('null undefined anonymous guest 0 -1 nan none nil [object object] ' +
    'unknown n/a na false true 00000000-0000-0000-0000-000000000000').split(' ');
  var CAMEL = { firstName: 'first_name', lastName: 'last_name', createdAt: 'created_at',
    companyName: 'company_name', companySize: 'company_size',
    companyIndustry: 'company_industry', companyPosition: 'company_position' };
  var NOT_ADDABLE = /^(email|first_name|last_name|name|created_at|avatar|company|company_name|company_industry|company_position)$/;
  var DATE_TIME = /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/;
  function chars(s) { return Array.from(s).length; }
  function bytes(s) { return new TextEncoder().encode(s).length; }
  function isNumber(v) { return typeof v == 'number' && isFinite(v); }

  function emailProblem(e) {
    if (typeof e != 'string') return 'must be a string';
    e = e.trim();
    var parts = e.split('@');
    if (!e) return 'must be a valid email address (got an empty string)';
    if (bytes(e) > 254) return 'must be at most 254 bytes';
    if (/\s/.test(e)) return 'must be a valid email address: no spaces';
    if (parts.length != 2) return "must be a valid email address: exactly one '@'";
    if (!parts[0]) return "must be a valid email address: empty part before '@'";
    if (parts[1].split('.').length < 2 || parts[1].split('.').indexOf('') >= 0) {
      return 'must be a valid email address: the domain needs a dot and no empty labels';
    }
  }
  // `person`: user and anonymous ids are checked against the placeholder list.
  function idProblem(id, person) {
    var t = String(id).trim();
    if (!t) return 'must not be blank';
    if (person && PLACEHOLDERS.indexOf(t.toLowerCase()) >= 0) return 'is a placeholder id, not a real id';
    if (chars(String(id)) > 255) return 'must be at most 255 characters';
  }
  function userIdProblem(id) {
    return idProblem(id, 1) ||
      (chars(String(id)) < 2 ? 'must be 2 to 255 characters' : '') ||
      (/@/.test(id) && !emailProblem(String(id)) ? 'must not be an email address; put it in traits.email' : '');
  }
  function nameProblem(name) {
    if (!name) return 'property name must not be empty';
    if (chars(name) > 255) return 'property name must be at most 255 characters';
    if (name[0] == '$') return "property name must not start with '$'";
  }
  // The reserved traits' rules (`name` in snake_case).
  function valueProblem(name, v) {
    if (v === null || v === undefined) return;
    if (/^(first|last)_name$/.test(name)) {
      if (typeof v != 'string') return 'must be a string';
      if (chars(v) < 2 || chars(v) > 50) return 'must be 2 to 50 characters';
    }
    if (name == 'created_at' && !(typeof v == 'string' && DATE_TIME.test(v))) {
      return 'must be an ISO 8601 / RFC 3339 date-time, e.g. 2026-11-22T10:00:00Z';
    }
    if (name == 'avatar' && !(typeof v == 'string' && /^https?:\/\//i.test(v) && !/\s/.test(v) && hostOf(v))) {
      return 'must be an absolute URL (http:// or https://)';
    }
    if (name == 'company_size' && !isNumber(v)) return 'must be a number';
    if (name == 'company' && v.size != null && !isNumber(v.size)) return 'size: must be a number';
  }
  function hostOf(url) {
    var authority = url.split('://')[1].split(/[/?#]/)[0].split('@').pop();
    return authority[0] == '[' ? authority.slice(1).split(']')[0] : authority.split(':')[0];
  }

  // Every problem of a message as "field: rule" (empty when the server would accept it).
  function check(m) {
    var out = [];
    function add(field, problem) { if (problem) out.push(field + ': ' + problem); }
    function props(base, obj, reserved) {
      Object.keys(obj || {}).forEach(function (k) {
        var v = obj[k];
        if (k == 'custom' && reserved && v && typeof v == 'object' && !Array.isArray(v)) {
          return props(base + '.custom', v, reserved);
        }
        var field = base + '.' + k;
        add(field, nameProblem(k) ||
          (v != null && bytes(JSON.stringify(v)) > 8192 ? 'value must be at most 8192 bytes' : ''));
        if (reserved) add(field, valueProblem(CAMEL[k] || k, v));
        else if (k == 'size' && v != null && !isNumber(v)) add(field, 'must be a number');
      });
    }
    var t = m.traits || {};
    if (m.userId != null) add('userId', userIdProblem(m.userId));
    if (m.anonymousId != null) add('anonymousId', idProblem(m.anonymousId, 1));
    if (m.type == 'identify') {
      if (m.userId == null && t.email == null && m.anonymousId == null) {
        add('userId', 'one of userId, traits.email, anonymousId is required');
      }
      if (t.email != null) add('traits.email', emailProblem(t.email));
      var rest = {};
      Object.keys(t).forEach(function (k) {
        var v = t[k];
        if (k == 'email' || (k == 'id' && v != null)) return;
        if (k == 'company' && v && typeof v == 'object' && v.id != null) {
          add('traits.company.id', idProblem(v.id));
          var ct = {};
          Object.keys(v).forEach(function (c) { if (c != 'id') ct[c] = v[c]; });
          return props('traits.company', ct);
        }
        rest[k] = v;
      });
      props('traits', rest, 1);
      props('$set_once', m.$set_once, 1);
      Object.keys(m.$add || {}).forEach(function (k) {
        add('$add.' + k, nameProblem(k) ||
          (NOT_ADDABLE.test(CAMEL[k] || k) ? 'is a reserved trait that is not a number; $add cannot change it' : ''));
      });
    }
    if (m.type == 'group') {
      add('groupId', m.groupId == null ? 'is required' : idProblem(m.groupId));
      props('traits', t);
    }
    if (m.type == 'alias') {
      add('previousId', m.previousId == null ? 'is required' : idProblem(m.previousId, 1));
      if (m.userId == null) add('userId', 'is required');
    }
    return out;
  }

  // ---- the queue: batched, persisted when the page is left, retried with backoff ----
  var queue = []; // messages, and {unlink: anonymousId} markers that must go out in order
  var sending = false;
  var timer = 0;
  var attempt = 0;
  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(flush, ms);
  }
  function enqueue(item) {
    queue.push(item);
    if (!sending && (!timer || queue.length >= MAX_BATCH)) later(queue.length >= MAX_BATCH ? 0 : interval);
  }
  // The next request: messages up to the next unlink marker, or that marker alone.
  function nextRequest() {
    if (!queue.length) return null;
    if (queue[0].unlink) {
      return { n: 1, url: API + '/v1/unlink', body: { anonymousId: queue[0].unlink, writeKey: KEY } };
    }
    var n = 0;
    while (n < queue.length && n < MAX_BATCH && !queue[n].unlink) n++;
    return { n: n, url: API + '/v1/batch', body: { batch: queue.slice(0, n), writeKey: KEY, sentAt: new Date().toISOString() } };
  }
  function flush() {
    timer = 0;
    var r = nextRequest();
    if (sending || !r) return;
    sending = true;
    var body = JSON.stringify(r.body);
    // text/plain and no custom header: a "simple" request, no CORS preflight.
    fetch(r.url, {
      method: 'POST', body: body, credentials: 'omit',
      keepalive: body.length < KEEPALIVE_BYTES, headers: { 'Content-Type': 'text/plain' }
    }).then(function (res) {
      if (res.status >= 500 || res.status == 429) throw new Error('HTTP ' + res.status);
      return res.json().catch(function () { return {}; }).then(function (answer) {
        if (res.status >= 400) warn('dropped', r.n, 'call(s):', res.status, answer.message || '');
        (answer.results || []).forEach(function (x) {
          if (x.status == 'refused') warn('refused:', x.reason, r.body.batch[x.index]);
        });
        forget(queue.splice(0, r.n));
        attempt = 0;
        sending = false;
        if (queue.length) later(0);
      });
    }).catch(function (e) {
      // Network error or a server error: the same messages again later (their messageIds
      // make a resend safe), 1 s, 2 s, 4 s, ... up to 5 minutes.
      sending = false;
      attempt++;
      warn('sending failed, retrying:', e.message || e);
      later(Math.min(300000, 1000 * Math.pow(2, attempt - 1)));
    });
  }
  // Acknowledged calls are no longer kept for the next page.
  function forget(done) {
    var kept = store(QUEUE);
    if (!kept) return;
    var ids = done.map(function (x) { return x.messageId || x.unlink; });
    store(QUEUE, JSON.stringify(JSON.parse(kept).filter(function (x) {
      return ids.indexOf(x.messageId || x.unlink) < 0;
    })));
  }
  // Leaving the page: send what is left with sendBeacon, and keep it for the next page of
  // this site (resent there; duplicates are recognised by messageId).
  function leave() {
    if (!queue.length) return;
    var old = JSON.parse(store(QUEUE) || '[]');
    store(QUEUE, JSON.stringify(old.concat(queue).slice(-500)));
    var r;
    var rest = queue.slice();
    while ((r = nextRequest())) {
      var sent = navigator.sendBeacon && navigator.sendBeacon(r.url,
        new Blob([JSON.stringify(r.body)], { type: 'text/plain' }));
      if (!sent) break;
      queue.splice(0, r.n);
    }
    queue = rest; // still ours if the page comes back from the back/forward cache
  }
  addEventListener('pagehide', leave);
  d.addEventListener('visibilitychange', function () {
    if (d.visibilityState == 'hidden') leave();
  });

  // ---- the API ----
  function send(type, m) {
    m.type = type;
    m.anonymousId = anonymousId;
    if (userId && m.userId == null && type != 'alias') m.userId = userId;
    m.messageId = uuid();
    m.timestamp = new Date().toISOString();
    m.context = { library: { name: 'profiledb.js', version: VERSION } };
    var problems = check(m);
    if (problems.length) warn('the server will refuse this ' + type + ' call:', problems.join('; '), m);
    enqueue(m);
  }
  function remember(id) {
    if (id == null) return;
    userId = String(id);
    store(UID, userId);
  }

  var api = {
    loaded: true,
    version: VERSION,
    // identify(userId, traits) or identify({id, email, name, custom: {...}}) (id optional).
    identify: function (id, traits) {
      if (id && typeof id == 'object') {
        traits = {};
        Object.keys(id).forEach(function (k) { if (k != 'id') traits[k] = id[k]; });
        id = id.id;
      }
      var m = { traits: traits || {} };
      if (id != null) m.userId = typeof id == 'number' ? String(id) : id;
      send('identify', m);
      if (m.userId != null && !check({ userId: m.userId }).length) remember(m.userId);
    },
    group: function (groupId, traits) {
      send('group', { groupId: groupId == null ? groupId : String(groupId), traits: traits || {} });
    },
    // alias(newUserId[, previousId]): the two ids are one person.
    alias: function (newId, previousId) {
      send('alias', { userId: newId, previousId: previousId == null ? (userId || anonymousId) : previousId });
      remember(newId);
    },
    track: function (event, properties) {
      send('track', { event: event, properties: properties || {} });
    },
    page: function (name, properties) {
      send('page', { name: name, properties: properties || {} });
    },
    // Logout: this device is detached from the person (server-side unlink, after the calls
    // queued before it), forgotten here, and continues under a new anonymous id.
    reset: function () {
      enqueue({ unlink: anonymousId });
      userId = null;
      store(UID, null);
      setAnonymousId(uuid());
    },
    anonymousId: function () { return anonymousId; },
    userId: function () { return userId; },
    flush: function () { clearTimeout(timer); flush(); },
    check: check
  };

  // Calls made before the script loaded (the snippet queues them in an array), then any
  // left by earlier pages.
  var early = Array.isArray(stub) ? stub : [];
  w.profiledb = api;
  queue = JSON.parse(store(QUEUE) || '[]').filter(function (x) { return x && typeof x == 'object'; });
  store(QUEUE, null);
  if (queue.length) later(0);
  early.forEach(function (call) {
    if (api[call[0]]) api[call[0]].apply(api, call.slice(1));
  });
  w.dispatchEvent(new Event('profiledbloaded'));
})(window, document);
