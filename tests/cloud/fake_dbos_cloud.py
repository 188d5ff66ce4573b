#!/usr/bin/python3
"""A stand-in for the DBOS Cloud API (spec/dbos-cloud-api.md), for tests.

Standard library only. Serves HTTPS on 127.0.0.1 with the certificate it is
given, and implements what the official CLI (@dbos-inc/dbos-cloud 2.10.24,
dist/databases/databases.js, cloudutils.js, users/authentication.js) sends:

  GET    /v1alpha1/user/profile
  GET    /v1alpha1/ORG/databases
  POST   /v1alpha1/ORG/databases/userdb               {"Name","AdminName","AdminPassword"}
  GET    /v1alpha1/ORG/databases/userdb/info/NAME
  DELETE /v1alpha1/ORG/databases/userdb/NAME
  POST   /v1alpha1/ORG/databases/userdb/NAME/credentials  {"Password"}
  POST   /v1alpha1/ORG/databases/userdb/NAME/restore  {"RestoreName","RestoreTimestamp"}
  POST   /v1alpha1/ORG/databases/byod                 {"Name","HostName","Port","Password",...}
  DELETE /v1alpha1/ORG/databases/byod/NAME
  POST   /oauth/token        (form: grant_type=refresh_token&client_id=..&refresh_token=..)
  POST   /oauth/device/code  (form: client_id, scope, audience)  device authorization
  POST   /oauth/token        (form: grant_type=urn:ietf:params:oauth:grant-type:device_code,
                              device_code, client_id)  403 authorization_pending until
                              approved, 429 slow_down, 403 expired_token / access_denied

Every API request needs "Authorization: Bearer T" with a token this server
issued and whose exp has not passed; otherwise 401. Errors are
{"message","statusCode","requestID"}. Provisioning is asynchronous: an
instance is "provisioning" for --provision-delay seconds, then "available".

Tests drive it through /__admin/ (no auth):
  GET  /__admin/stats               {"counts": {"GET /databases": n, ...}, "connections": n}
  POST /__admin/stats/reset
  POST /__admin/faults              {"faults": [FAULT, ...]}  (appended)
  DELETE /__admin/faults
  POST /__admin/instances           {"instances": [raw instance objects], "password"?}
  DELETE /__admin/instances/NAME    as if another client destroyed it
  POST /__admin/apps                {"apps": [application objects]} (GET /applications)
  POST /__admin/bulk                {"count": N, "prefix": "db"}
  GET  /__admin/state               every instance, with the fields dbosfs never sees
  POST /__admin/token               {"expires_in": S} -> {"token"}
  POST /__admin/revoke              every access token issued so far stops working
  POST /__admin/config              {"provision_delay": S, "refresh_enabled": bool}
  GET  /__admin/requests            the last 200 requests (method, path, auth ok)
  POST /__admin/device              {"outcome": "approve"|"deny"|"expire", "after": N,
                                     "interval": S, "expires_in": S, "slow_down": [k, ...]}
                                    how the next device logins end: after N pending polls;
                                    poll number k (1-based) answers slow_down instead
  GET  /__admin/device              {"polls": [[device_code_prefix, monotonic time], ...]}

FAULT = {"match": "GET /databases" | "*", "kind": KIND, "times": n (default 1,
-1 = forever), ...} where KIND is one of
  status     answer "status" (default 500) with an error body ("message"),
             after "delay" seconds if given
  latency    sleep "delay" seconds, then answer normally
  malformed  the request takes effect, the answer's body is not JSON (or
             "raw_body", sent as is with the real status)
  truncated  200 with the real JSON body cut in half (consistent Content-Length)
  short      announce the full Content-Length, send half, close the connection
  huge       200 with a valid JSON body of "size" bytes (default 16 MiB)
  hang       never answer (until the server stops or "delay" passes)
  close      close the connection without answering
  omit       200 with the real list minus the instances named in "names"
             (a lagging replica, a paging glitch)
The match key is "METHOD TEMPLATE", as in the stats counts.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_IDS = {"6p7Sjxf13cyLMkdwn14MxlH7JdhILled", "G38fLmVErczEo9ioCFjVIHea6yd0qMZu"}
NAME_RE = re.compile(r"^[a-z0-9_]{3,30}$")
BAD_PASSWORD_CHARS = set('/"@\' \t\r\n')


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class ApiError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class State:
    def __init__(self, org, user, provision_delay):
        self.lock = threading.Lock()
        self.org = org
        self.user = user
        self.provision_delay = provision_delay
        self.refresh_enabled = True
        self.secret = os.urandom(32)
        self.tokens = set()
        self.refresh_token = "rt-" + b64url(os.urandom(24))
        self.instances = {}
        # Every server ever linked, by name: what the API was told, and
        # whether its data was ever dropped (an unlink never drops it).
        self.linked_servers = {}
        self.apps = []
        self.faults = []
        self.counts = {}
        self.connections = 0  # TCP connections accepted (shows reuse)
        self.recent = []
        self.stop = threading.Event()
        self.device_plan = {"outcome": "approve", "after": 1, "interval": 1,
                            "expires_in": 600, "slow_down": []}
        self.devices = {}  # device_code -> {"polls": n, "plan": {...}, "scope": s}
        self.device_polls = []

    # --- tokens -----------------------------------------------------------
    def make_token(self, expires_in=3600, locked=False):
        header = {"alg": "HS256", "typ": "JWT", "kid": "fake"}
        payload = {
            "sub": "auth0|" + self.user,
            "aud": "dbos-cloud-api",
            "iat": int(time.time()),
            "exp": int(time.time() + expires_in),
            "jti": uuid.uuid4().hex,
        }
        signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
        sig = hmac.new(self.secret, signing.encode(), hashlib.sha256).digest()
        token = signing + "." + b64url(sig)
        if locked:
            self.tokens.add(token)
        else:
            with self.lock:
                self.tokens.add(token)
        return token

    def token_ok(self, token):
        with self.lock:
            if token not in self.tokens:
                return False
        try:
            payload = json.loads(b64url_decode(token.split(".")[1]))
        except (ValueError, IndexError):
            return False
        return payload.get("exp", 0) > time.time()

    # --- instances ----------------------------------------------------------
    def settle(self, inst):
        ready = inst.get("_ready_at")
        if ready is not None and time.time() >= ready:
            inst["Status"] = inst.get("_final_status", "available")
            if inst.get("_final_host"):
                inst["HostName"] = inst["_final_host"]
            del inst["_ready_at"]

    def public(self, inst):
        self.settle(inst)
        return {k: v for k, v in inst.items() if not k.startswith("_")}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ctx, state):
        self.ctx = ctx
        self.state = state
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the request's own thread, so a client
        # that never speaks cannot block the accept loop.
        request.settimeout(15)
        with self.state.lock:
            self.state.connections += 1
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeDBOSCloud/1.0"
    timeout = 60

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fake-dbos-cloud: " + (fmt % args) + "\n")

    # --- plumbing -----------------------------------------------------------
    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status, body, ctype="application/json", length=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status, obj):
        self.send_bytes(status, json.dumps(obj).encode())

    def error_obj(self, status, message):
        return {"message": message, "statusCode": status, "requestID": str(uuid.uuid4())}

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    # --- routing --------------------------------------------------------------
    def route(self, method, path):
        """(template, handler, args) or None."""
        st = self.server.state
        if path == "/oauth/token":
            return "/oauth/token", self.oauth_token, ()
        if path == "/oauth/device/code":
            return "/oauth/device/code", self.device_code, ()
        if path == "/v1alpha1/user/profile":
            return "/user/profile", self.profile, ()
        m = re.match(r"^/v1alpha1/([^/]+)(/databases.*|/applications)$", path)
        if not m:
            return None
        org, rest = urllib.parse.unquote(m.group(1)), m.group(2)
        table = [
            ("GET", r"^/databases$", "/databases", self.list_dbs),
            ("GET", r"^/applications$", "/applications", self.list_apps),
            ("POST", r"^/databases/userdb$", "/databases/userdb", self.provision),
            ("GET", r"^/databases/userdb/info/([^/]+)$", "/databases/userdb/info", self.info),
            ("DELETE", r"^/databases/userdb/([^/]+)$", "/databases/userdb", self.destroy),
            ("POST", r"^/databases/userdb/([^/]+)/credentials$", "/databases/userdb/credentials",
             self.credentials),
            ("POST", r"^/databases/userdb/([^/]+)/restore$", "/databases/userdb/restore",
             self.restore),
            ("POST", r"^/databases/byod$", "/databases/byod", self.link),
            ("DELETE", r"^/databases/byod/([^/]+)$", "/databases/byod", self.unlink),
        ]
        for meth, rx, tmpl, fn in table:
            mm = re.match(rx, rest)
            if mm and meth == method:
                return tmpl, fn, (org,) + mm.groups()
        return None

    def dispatch(self, method):
        st = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        try:
            raw = self.read_body()
        except OSError:
            return
        if path.startswith("/__admin/"):
            return self.admin(method, path[len("/__admin/"):], raw)

        r = self.route(method, path)
        key = f"{method} {r[0]}" if r else f"{method} ?"
        with st.lock:
            st.counts[key] = st.counts.get(key, 0) + 1
        fault = self.take_fault(key)
        if fault and fault["kind"] == "latency":
            st.stop.wait(float(fault.get("delay", 1.0)))
            fault = None
        if fault and fault["kind"] == "status" and "delay" in fault:
            st.stop.wait(float(fault["delay"]))  # a slow refusal
        if fault and fault["kind"] in ("hang", "close", "status", "huge"):
            return self.apply_simple_fault(fault)

        status, obj = self.handle_api(method, path, r, raw)
        if fault and fault["kind"] == "omit" and isinstance(obj, list):
            names = set(fault.get("names", []))
            obj = [o for o in obj if o.get("PostgresInstanceName") not in names]
        body = json.dumps(obj).encode()
        with st.lock:
            st.recent.append({"method": method, "path": path, "status": status})
            del st.recent[:-200]
        if fault and fault["kind"] == "malformed":
            # The request takes effect; only the answer is garbage.
            return self.send_bytes(status, fault.get("raw_body",
                                                     '{"PostgresInstanceName": "x", oops').encode())
        if fault and fault["kind"] == "truncated":
            return self.send_bytes(status, body[: max(1, len(body) // 2)])
        if fault and fault["kind"] == "short":
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_json(status, obj)

    def handle_api(self, method, path, r, raw):
        st = self.server.state
        if r is None:
            return 404, self.error_obj(404, f"no route for {method} {path}")
        tmpl, fn, args = r
        try:
            if not tmpl.startswith("/oauth/"):
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or not st.token_ok(auth[7:]):
                    raise ApiError(401, "Unauthorized: invalid or expired token")
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    raise ApiError(400, "Content-Type must be application/json")
                if args and args[0] != st.org:
                    raise ApiError(403, f"user {st.user} is not a member of organization {args[0]}")
                args = args[1:]
            body = None
            if method in ("POST", "PUT") and not tmpl.startswith("/oauth/"):
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    raise ApiError(400, "request body is not JSON")
                if not isinstance(body, dict):
                    raise ApiError(400, "request body must be a JSON object")
            elif tmpl.startswith("/oauth/"):
                body = raw
            with st.lock:
                return fn(body, *args)
        except ApiError as e:
            return e.status, self.error_obj(e.status, e.message)

    # --- faults -----------------------------------------------------------------
    def take_fault(self, key):
        st = self.server.state
        with st.lock:
            for f in st.faults:
                if f.get("match", "*") in ("*", key):
                    times = f.get("times", 1)
                    if times == 0:
                        continue
                    if times > 0:
                        f["times"] = times - 1
                    return dict(f)
        return None

    def apply_simple_fault(self, f):
        st = self.server.state
        kind = f["kind"]
        if kind == "hang":
            st.stop.wait(float(f.get("delay", 3600)))
            self.close_connection = True
            return
        if kind == "close":
            self.close_connection = True
            return
        if kind == "status":
            status = int(f.get("status", 500))
            if "raw_body" in f:
                return self.send_bytes(status, f["raw_body"].encode(), ctype="text/html")
            obj = self.error_obj(status, f.get("message", f"injected failure {status}"))
            if "requestID" in f:
                obj["requestID"] = f["requestID"]
            return self.send_json(status, obj)
        if kind == "huge":
            size = int(f.get("size", 16 * 1024 * 1024))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                self.wfile.write(b"[")
                chunk = b" " * 65536
                left = size - 2
                while left > 0:
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
                self.wfile.write(b"]")
            except OSError:
                pass
            self.close_connection = True
            return

    # --- the API ---------------------------------------------------------------------
    def profile(self, body):
        st = self.server.state
        return 200, {"Name": st.user, "Email": f"{st.user}@example.com",
                     "Organization": st.org, "SubscriptionPlan": "free"}

    def oauth_form(self, raw):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype == "application/x-www-form-urlencoded":
            return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
        if ctype == "application/json":
            return json.loads(raw or b"{}")
        return None

    def device_code(self, raw):
        st = self.server.state
        form = self.oauth_form(raw)
        if form is None:
            return 400, {"error": "invalid_request", "error_description": "bad content type"}
        if form.get("client_id") not in CLIENT_IDS:
            return 401, {"error": "unauthorized_client", "error_description": "Unknown client"}
        if form.get("audience") != "dbos-cloud-api":
            return 403, {"error": "access_denied", "error_description": "Unknown audience"}
        plan = dict(st.device_plan)
        code = "dc-" + b64url(os.urandom(24))
        user_code = "ABCD-" + b64url(os.urandom(3)).upper().replace("-", "X").replace("_", "Y")
        st.devices[code] = {"polls": 0, "plan": plan, "scope": form.get("scope", ""),
                            "expires_at": time.time() + plan["expires_in"]}
        host = self.headers.get("Host", "localhost")
        return 200, {"device_code": code, "user_code": user_code,
                     "verification_uri": f"https://{host}/activate",
                     "verification_uri_complete": f"https://{host}/activate?user_code={user_code}",
                     "expires_in": plan["expires_in"], "interval": plan["interval"]}

    def device_token(self, form):
        st = self.server.state
        dev = st.devices.get(form.get("device_code"))
        if form.get("client_id") not in CLIENT_IDS:
            return 401, {"error": "unauthorized_client", "error_description": "Unknown client"}
        if dev is None:
            return 403, {"error": "invalid_grant", "error_description": "Invalid device code."}
        dev["polls"] += 1
        st.device_polls.append([form["device_code"][:8], time.monotonic()])
        plan = dev["plan"]
        if time.time() > dev["expires_at"]:
            return 403, {"error": "expired_token", "error_description": "Code expired"}
        if dev["polls"] in plan.get("slow_down", []):
            return 429, {"error": "slow_down", "error_description": "Slow down"}
        if dev["polls"] <= plan.get("after", 0):
            return 403, {"error": "authorization_pending",
                         "error_description": "User has yet to authorize device code."}
        if plan["outcome"] == "deny":
            return 403, {"error": "access_denied", "error_description": "User denied access"}
        if plan["outcome"] == "expire":
            return 403, {"error": "expired_token", "error_description": "Code expired"}
        del st.devices[form["device_code"]]
        reply = {"access_token": st.make_token(locked=True), "expires_in": 3600,
                 "token_type": "Bearer", "scope": dev["scope"]}
        if "offline_access" in dev["scope"].split():
            reply["refresh_token"] = st.refresh_token
        return 200, reply

    def oauth_token(self, raw):
        st = self.server.state
        form = self.oauth_form(raw)
        if form is None:
            return 400, {"error": "invalid_request", "error_description": "bad content type"}
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
            return self.device_token(form)
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "only refresh_token is supported here"}
        if form.get("client_id") not in CLIENT_IDS:
            return 401, {"error": "access_denied", "error_description": "Unauthorized client"}
        if not st.refresh_enabled or form.get("refresh_token") != st.refresh_token:
            return 403, {"error": "invalid_grant",
                         "error_description": "Unknown or invalid refresh token."}
        token = st.make_token(locked=True)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer",
                     "scope": "offline_access"}

    def list_apps(self, body):
        st = self.server.state
        return 200, list(st.apps)

    def list_dbs(self, body):
        st = self.server.state
        return 200, [st.public(i) for i in st.instances.values()]

    def info(self, body, name):
        st = self.server.state
        inst = st.instances.get(name)
        if inst is None:
            raise ApiError(404, f"database instance {name} not found")
        return 200, st.public(inst)

    def check_password(self, pw):
        if not isinstance(pw, str) or not 8 <= len(pw) <= 128 or set(pw) & BAD_PASSWORD_CHARS:
            raise ApiError(400, "invalid database password")

    def provision(self, body):
        st = self.server.state
        name, admin, pw = body.get("Name"), body.get("AdminName"), body.get("AdminPassword")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(400, f"invalid database instance name {name!r}")
        if not isinstance(admin, str) or not NAME_RE.match(admin):
            raise ApiError(400, "invalid admin name")
        self.check_password(pw)
        if name in st.instances:
            raise ApiError(409, f"database instance {name} already exists")
        st.instances[name] = {
            "PostgresInstanceName": name, "Status": "provisioning", "HostName": "",
            "Port": 5432, "DatabaseUsername": admin, "DBOSAdminName": "dbos_" + name[:8],
            "IsLinked": False, "SupabaseReference": None,
            "_password": pw, "_ready_at": time.time() + st.provision_delay,
            "_final_host": f"{name}.db.fake-dbos.test",
        }
        return 200, {"message": "provisioning started"}

    def destroy(self, body, name):
        st = self.server.state
        inst = st.instances.get(name)
        if inst is None:
            raise ApiError(404, f"database instance {name} not found")
        if inst.get("IsLinked"):
            raise ApiError(400, f"database instance {name} is linked; unlink it instead")
        del st.instances[name]
        return 200, {}

    def credentials(self, body, name):
        st = self.server.state
        inst = st.instances.get(name)
        if inst is None:
            raise ApiError(404, f"database instance {name} not found")
        if inst.get("IsLinked"):
            raise ApiError(400, "cannot reset the password of a linked database")
        st.settle(inst)
        if inst.get("Status") != "available":
            raise ApiError(409, f"database instance {name} is {inst.get('Status')}")
        self.check_password(body.get("Password"))
        inst["_password"] = body["Password"]
        inst["_password_resets"] = inst.get("_password_resets", 0) + 1
        return 200, {}

    def restore(self, body, name):
        st = self.server.state
        src = st.instances.get(name)
        if src is None:
            raise ApiError(404, f"database instance {name} not found")
        target = body.get("RestoreName")
        if not isinstance(target, str) or not NAME_RE.match(target):
            raise ApiError(400, "invalid RestoreName")
        if target in st.instances:
            raise ApiError(409, f"database instance {target} already exists")
        inst = dict(src)
        inst.update({"PostgresInstanceName": target, "Status": "provisioning", "HostName": "",
                     "_ready_at": time.time() + st.provision_delay,
                     "_final_host": f"{target}.db.fake-dbos.test"})
        st.instances[target] = inst
        return 200, {}

    def link(self, body):
        # Validated as the API's published contract says (the service is
        # closed source): {Name, HostName, Port: number, Password,
        # captureProvenance: bool} + optional supabaseReference, dbosAdminName.
        st = self.server.state
        known = {"Name", "HostName", "Port", "Password", "captureProvenance",
                 "supabaseReference", "dbosAdminName"}
        unknown = set(body) - known
        if unknown:
            raise ApiError(400, f"unknown fields {sorted(unknown)}")
        name, host, port = body.get("Name"), body.get("HostName"), body.get("Port")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(400, f"invalid database instance name {name!r}")
        if not isinstance(host, str) or not host or isinstance(port, bool) \
                or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ApiError(400, "HostName and a numeric Port are required")
        if not isinstance(body.get("captureProvenance"), bool):
            raise ApiError(400, "captureProvenance must be a boolean")
        ref = body.get("supabaseReference")
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise ApiError(400, "supabaseReference must be a non-empty string")
        admin = body.get("dbosAdminName", "dbosadmin")
        if not isinstance(admin, str) or not NAME_RE.match(admin):
            raise ApiError(400, "invalid dbosAdminName")
        self.check_password(body.get("Password"))
        if name in st.instances:
            raise ApiError(409, f"database instance {name} already exists")
        st.instances[name] = {
            "PostgresInstanceName": name, "Status": "available", "HostName": host,
            "Port": port, "DatabaseUsername": admin, "IsLinked": True,
            "SupabaseReference": ref, "_password": body["Password"],
            "_link_body": {k: v for k, v in body.items() if k != "Password"},
        }
        st.linked_servers[name] = {"HostName": host, "Port": port, "linked": True,
                                   "data_dropped": False}
        return 200, {}

    def unlink(self, body, name):
        st = self.server.state
        inst = st.instances.get(name)
        if inst is None or not inst.get("IsLinked"):
            raise ApiError(404, f"linked database {name} not found")
        del st.instances[name]
        if name in st.linked_servers:
            st.linked_servers[name]["linked"] = False  # its data stays where it is
        return 200, {}

    # --- admin ---------------------------------------------------------------------------
    def admin(self, method, what, raw):
        st = self.server.state
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self.send_json(400, {"error": "admin body is not JSON"})
        if method == "GET" and what == "stats":
            with st.lock:
                return self.send_json(200, {"counts": dict(st.counts),
                                            "connections": st.connections})
        if method == "POST" and what == "stats/reset":
            with st.lock:
                st.counts.clear()
                st.connections = 0
            return self.send_json(200, {})
        if what == "faults":
            with st.lock:
                if method == "DELETE":
                    st.faults.clear()
                else:
                    st.faults.extend(body.get("faults", []))
            return self.send_json(200, {})
        if method == "POST" and what == "instances":
            with st.lock:
                for obj in body.get("instances", []):
                    inst = dict(obj)
                    if "password" in body:
                        inst["_password"] = body["password"]
                    st.instances[inst["PostgresInstanceName"]] = inst
            return self.send_json(200, {})
        if method == "DELETE" and what.startswith("instances/"):
            # Another client (the CLI, a teammate) destroyed it.
            with st.lock:
                st.instances.pop(what[len("instances/"):], None)
            return self.send_json(200, {})
        if method == "POST" and what == "apps":
            with st.lock:
                st.apps = list(body.get("apps", []))
            return self.send_json(200, {})
        if method == "POST" and what == "bulk":
            prefix, count = body.get("prefix", "db"), int(body.get("count", 1000))
            with st.lock:
                for n in range(count):
                    name = f"{prefix}{n:05d}"
                    st.instances[name] = {
                        "PostgresInstanceName": name, "Status": "available",
                        "HostName": f"{name}.db.fake-dbos.test", "Port": 5432,
                        "DatabaseUsername": "dbos_user", "IsLinked": False,
                        "SupabaseReference": None,
                    }
            return self.send_json(200, {})
        if method == "GET" and what == "state":
            with st.lock:
                for i in st.instances.values():
                    st.settle(i)
                return self.send_json(200, {"instances": st.instances,
                                            "linked_servers": st.linked_servers,
                                            "tokens": len(st.tokens)})
        if method == "POST" and what == "token":
            token = st.make_token(float(body.get("expires_in", 3600)))
            return self.send_json(200, {"token": token, "refresh_token": st.refresh_token})
        if method == "POST" and what == "revoke":
            with st.lock:
                st.tokens.clear()
            return self.send_json(200, {})
        if method == "POST" and what == "config":
            with st.lock:
                if "provision_delay" in body:
                    st.provision_delay = float(body["provision_delay"])
                if "refresh_enabled" in body:
                    st.refresh_enabled = bool(body["refresh_enabled"])
            return self.send_json(200, {})
        if method == "POST" and what == "device":
            with st.lock:
                st.device_plan.update(body)
            return self.send_json(200, {})
        if method == "GET" and what == "device":
            with st.lock:
                return self.send_json(200, {"polls": list(st.device_polls)})
        if method == "GET" and what == "requests":
            with st.lock:
                return self.send_json(200, {"requests": list(st.recent)})
        return self.send_json(404, {"error": f"no admin route {method} {what}"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--org", default="acme")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--provision-delay", type=float, default=2.0)
    ap.add_argument("--credentials-out",
                    help="write a credentials file (token, refreshToken, userName, organization)")
    ap.add_argument("--token-expires-in", type=float, default=3600,
                    help="lifetime of the token in --credentials-out (negative: expired)")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="exit after this long even if nobody stops us")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    state = State(args.org, args.user, args.provision_delay)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server = Server((args.host, args.port), Handler, ctx, state)
    server.verbose = args.verbose

    if args.credentials_out:
        creds = {"token": state.make_token(args.token_expires_in),
                 "refreshToken": state.refresh_token,
                 "userName": args.user, "organization": args.org}
        fd = os.open(args.credentials_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f, separators=(",", ":"))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.rename(tmp, args.port_file)

    def stop(*_):
        state.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Bounded: never outlive a forgotten test run.
    timer = threading.Timer(args.max_seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        state.stop.set()
        server.server_close()
    os._exit(0)


if __name__ == "__main__":
    main()
