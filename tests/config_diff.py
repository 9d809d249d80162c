#!/usr/bin/env python3
"""Differential test of the Caddyfile parser: every good Caddyfile goes to
both `caddy adapt` and `psproxy validate -c FILE --dump`, and the facts that
psproxy implements must agree: listen ports and schemes, the sites on each
port (hosts, in matching order), and per site the handlers in order with
their path matcher, redirect and respond status/body/target, header
operations and upstream dial addresses.

Usage: config_diff.py --psproxy PATH [--caddy PATH] [FILE.conf ...]
Exits 0 when every file agrees, and prints "N passed, M failed".
"""

import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(HERE, "unit", "config", "good")


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def dial_norm(dial):
    # Go dials ":8080" on the local system; psproxy names it 127.0.0.1.
    return "127.0.0.1" + dial if dial.startswith(":") else dial


def caddy_headers(ops):
    """Caddy's headers "response"/"request" object as (op, name, value)."""
    out = []
    required = set((ops.get("require") or {}).get("headers") or {})
    for name, vals in (ops.get("set") or {}).items():
        op = "default" if name in required else "set"
        out += [(op, name, v) for v in vals]
    for name, vals in (ops.get("add") or {}).items():
        out += [("add", name, v) for v in vals]
    out += [("delete", name, None) for name in ops.get("delete") or []]
    if ops.get("replace"):
        out.append(("replace", "?", None))
    return sorted(out, key=repr)


def psproxy_headers(ops):
    return sorted(((o["op"], o["name"], o.get("value")) for o in ops), key=repr)


def caddy_handlers(routes):
    """Flattens one site's routes into psproxy's handler facts."""
    out = []
    for r in routes:
        match = None
        for m in r.get("match") or []:
            paths = m.get("path") or []
            if len(paths) == 1:
                match = paths[0]
        for h in r.get("handle") or []:
            kind = h.get("handler")
            if kind == "headers":
                ops = caddy_headers(h.get("response") or {})
                prev = out[-1] if out and out[-1].get("route") is r else None
                if prev and prev["kind"] == "header":
                    # Caddy splits "?Name" into a second handler of the same route
                    prev["ops"] = sorted(prev["ops"] + ops, key=repr)
                else:
                    out.append({"kind": "header", "match": match, "ops": ops, "route": r})
            elif kind == "static_response" and "Location" in (h.get("headers") or {}):
                out.append({"kind": "redir", "match": match,
                            "status": int(h.get("status_code", 302)),
                            "to": h["headers"]["Location"][0]})
            elif kind == "static_response":
                out.append({"kind": "respond", "match": match,
                            "status": int(h.get("status_code", 200)),
                            "body": h.get("body", ""), "close": bool(h.get("close"))})
            elif kind == "reverse_proxy":
                hdr = h.get("headers") or {}
                lb = ((h.get("load_balancing") or {}).get("selection_policy") or {})
                out.append({"kind": "reverse_proxy", "match": match,
                            "upstreams": [dial_norm(u["dial"]) for u in h.get("upstreams", [])],
                            # psproxy's default is round_robin (issue #6), Caddy's random
                            "lb_policy": lb.get("policy", "round_robin"),
                            "header_up": caddy_headers(hdr.get("request") or {}),
                            "header_down": caddy_headers(hdr.get("response") or {})})
            elif kind == "subroute":
                out += caddy_handlers(h.get("routes") or [])
            else:
                out.append({"kind": "unknown:" + str(kind), "match": match})
    return out


def strip_routes(handlers):
    for h in handlers:
        h.pop("route", None)
    return handlers


def caddy_facts(cfg):
    http = (cfg.get("apps") or {}).get("http") or {}
    http_port = http.get("http_port", 80)
    https_port = http.get("https_port", 443)
    listeners = []
    for srv in (http.get("servers") or {}).values():
        routes = srv.get("routes") or []
        sites = []
        site_routes = [r for r in routes if r.get("terminal") or any(
            h.get("handler") == "subroute" for h in r.get("handle") or [])]
        if len(site_routes) != len(routes) or not routes:
            # a lone catch-all site is flattened into the server's routes
            sites.append(([""], caddy_handlers(routes)))
        else:
            for r in routes:
                hosts = [""]
                for m in r.get("match") or []:
                    hosts = m.get("host", hosts)
                sites.append((hosts, caddy_handlers([{"handle": r.get("handle") or []}])))
        skip = set((srv.get("automatic_https") or {}).get("skip") or [])
        all_hosts = [h for hs, _ in sites for h in hs]
        for listen in srv["listen"]:
            port = port_of(listen)
            if port == http_port:
                scheme = "http"
            elif port == https_port or srv.get("tls_connection_policies"):
                scheme = "https"
            elif all(h == "" or h in skip for h in all_hosts):
                scheme = "http"
            else:
                scheme = "https"
            listeners.append({"port": port, "scheme": scheme,
                              "sites": [{"hosts": sorted(h), "handlers": strip_routes(hd)}
                                        for h, hd in sites]})
    return sorted(listeners, key=lambda l: l["port"])


def psproxy_facts(dump):
    listeners = []
    for ln in dump["listeners"]:
        if ln.get("redirect_https") and not ln["sites"]:
            continue  # Caddy adds its HTTP->HTTPS redirect server at run time, not in adapt
        sites = []
        for idx in ln["sites"]:
            s = dump["sites"][idx]
            hosts = sorted(a["host"] for a in s["addrs"] if a["port"] == ln["port"])
            hd = []
            for h in s["handlers"]:
                f = {"kind": h["kind"], "match": h["match"]}
                if h["kind"] == "header":
                    f["ops"] = psproxy_headers(h["ops"])
                elif h["kind"] == "redir":
                    f.update(status=h["status"], to=h["to"])
                elif h["kind"] == "respond":
                    f.update(status=h["status"], body=h["body"], close=h["close"])
                else:
                    f.update(upstreams=h["upstreams"], lb_policy=h["lb_policy"],
                             header_up=psproxy_headers(h["header_up"]),
                             header_down=psproxy_headers(h["header_down"]))
                hd.append(f)
            sites.append({"hosts": hosts, "handlers": hd})
        listeners.append({"port": ln["port"], "scheme": ln["scheme"], "sites": sites})
    return sorted(listeners, key=lambda l: l["port"])


def normalise(x):
    """JSON round trip so tuples and lists compare alike."""
    return json.loads(json.dumps(x))


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode,
                                                   p.stderr.strip()[-500:]))
    return json.loads(p.stdout)


def diff(a, b, path="facts"):
    """The first difference between A (caddy) and B (psproxy), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return "%s.%s: caddy %r, psproxy %r" % (path, k, a.get(k), b.get(k))
            d = diff(a[k], b[k], "%s.%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        if len(a) != len(b):
            return "%s: caddy has %d items, psproxy %d" % (path, len(a), len(b))
        return None
    return None if a == b else "%s: caddy %r, psproxy %r" % (path, a, b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--psproxy", required=True)
    ap.add_argument("--caddy", default="caddy")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    files = args.files or sorted(glob.glob(os.path.join(GOOD, "*.conf")))
    passed = failed = 0
    for f in files:
        name = os.path.relpath(f)
        try:
            want = normalise(caddy_facts(run([args.caddy, "adapt", "--adapter", "caddyfile",
                                               "--config", f])))
            got = normalise(psproxy_facts(run([args.psproxy, "validate", "-c", f, "--dump"])))
            d = diff(want, got)
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            d = "error: %s" % e
        if d:
            failed += 1
            print("FAIL %s: %s" % (name, d))
        else:
            passed += 1
            print("ok   %s" % name)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
