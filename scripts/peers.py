#!/usr/bin/env python3
"""Compare breachcheck with OpenMined PSI and Microsoft APSI on one synthetic workload (#13 item 3).

    python3 scripts/peers.py [--n 1000000] [--m 1,100,10000] [--out FILE]

Offline (a machine without a package index, as the device machine of docs/BENCHMARKS.md):
    python3 scripts/peers.py --wheels DIR --python PY310 --bin-dir DIR --om-parallel
with DIR holding the peers' wheels (`pip download` them elsewhere: openmined-psi, protobuf,
apsi for that Python); each peer's wheels are unpacked into a directory on its PYTHONPATH.

APSI built from source for this CPU (the wheel needs AVX-512; scripts/build-apsi.sh):
    python3 scripts/peers.py --apsi-dir target/apsi
builds APSI 0.12.0 and PyAPSI 0.2.3 into target/apsi first if it is not there, then runs them
under python3.

Workload: N distinct synthetic CN mobile numbers (`+86` + 11 digits, 13x-19x, fixed seed) on the
server side; for each M, a query of M numbers, half members of the set and half not (M = 1: one member).

* breachcheck: the release binaries in target/release (not rebuilt): `keygen`, `build-index`
  (timed: setup), `serve` on 127.0.0.1 with anonymous access and a huge quota, then
  `breachcheck check --format jsonl` per M (timed: online, process start included) through a
  byte-counting TCP proxy in this script.
* OpenMined PSI (`pip install openmined-psi`, CPython 3.11, temporary venv): GCS, fpr 1e-9,
  reveal_intersection; setup = `CreateSetupMessage` for num_client_inputs = M (timed once per M),
  online = `CreateRequest` + `ProcessRequest` + `GetIntersection`, in process, no network.
  Bytes: setup message + request up / response down (protobuf serialized sizes).
* APSI (`pip install apsi==0.1.2`, CPython 3.10, temporary venv): `UnlabeledServer`,
  parameters from microsoft/APSI's parameters/ directory (not shipped in the wheel, so copied
  below): 1M-1 for M = 1, 1M-256 for M = 100, 1M-11041 for M = 10,000; setup = `init_db` +
  `add_items` (timed once per parameter set), online = OPRF request + response + query +
  response + extract, in process, no network; bytes = OPRF request + query up, OPRF response +
  query response down. Thread count = the machine's cores. With --apsi-dir, the same worker
  runs PyAPSI 0.2.3 over APSI 0.12.0 built by scripts/build-apsi.sh instead of the wheel.

A peer whose install fails is reported as "not available: <reason>" and the run goes on.
Standard library only (the peers are pip-installed into temporary venvs).
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY311 = "python3"
PY310 = os.path.expanduser("~/.pyenv/versions/3.10.13/bin/python3")
SEED = 20261130

# microsoft/APSI parameters/*.json (tuned for a 1M-item database and the given query size).
APSI_PARAMS = {
    "1M-1": {
        "table_params": {"hash_func_count": 1, "table_size": 256, "max_items_per_bin": 72},
        "item_params": {"felts_per_item": 8},
        "query_params": {"ps_low_degree": 0, "query_powers": list(range(1, 73))},
        "seal_params": {"plain_modulus": 12289, "poly_modulus_degree": 2048,
                        "coeff_modulus_bits": [40]},
    },
    "1M-256": {
        "table_params": {"hash_func_count": 3, "table_size": 512, "max_items_per_bin": 180},
        "item_params": {"felts_per_item": 8},
        "query_params": {"ps_low_degree": 0,
                         "query_powers": [1, 3, 4, 6, 10, 13, 15, 21, 29, 37, 45, 53, 61, 69,
                                          77, 81, 83, 86, 87, 90, 92, 96]},
        "seal_params": {"plain_modulus": 40961, "poly_modulus_degree": 4096,
                        "coeff_modulus_bits": [40, 32, 32]},
    },
    "1M-11041": {
        "table_params": {"hash_func_count": 3, "table_size": 18432, "max_items_per_bin": 98},
        "item_params": {"felts_per_item": 4},
        "query_params": {"ps_low_degree": 8, "query_powers": [1, 3, 4, 9, 27]},
        "seal_params": {"plain_modulus": 2277377, "poly_modulus_degree": 8192,
                        "coeff_modulus_bits": [60, 60, 60, 20]},
    },
}


def apsi_params_for(m):
    if m <= 1:
        return "1M-1"
    if m <= 256:
        return "1M-256"
    return "1M-11041"


# ---------------------------------------------------------------- workload

def gen_number(rng):
    return "+861%d%09d" % (rng.randint(3, 9), rng.randrange(10**9))


def make_workload(n, ms, work):
    rng = random.Random(SEED)
    db = set()
    while len(db) < n:
        db.add(gen_number(rng))
    db = sorted(db)
    rng.shuffle(db)
    (work / "db.txt").write_text("\n".join(db) + "\n")
    queries = {}
    for m in ms:
        members = rng.sample(db, (m + 1) // 2)
        non = []
        dbset = set(db)
        while len(non) < m - len(members):
            x = gen_number(rng)
            if x not in dbset and x not in non:
                non.append(x)
        q = members + non
        rng.shuffle(q)
        queries[m] = {"items": q, "members": sorted(members)}
        (work / f"q{m}.txt").write_text("\n".join(q) + "\n")
        (work / f"q{m}.members.json").write_text(json.dumps(sorted(members)))
    return db, queries


# ---------------------------------------------------------------- byte-counting proxy

class Proxy:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.up = 0
        self.down = 0
        self.pumps = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.up = self.down = 0
            self.pumps = []

    def wait_idle(self, timeout=5.0):
        deadline = time.time() + timeout
        for t in list(self.pumps):
            t.join(max(0.0, deadline - time.time()))

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            for sock in (c, s):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            a = threading.Thread(target=self._pump, args=(c, s, "up"), daemon=True)
            b = threading.Thread(target=self._pump, args=(s, c, "down"), daemon=True)
            with self.lock:
                self.pumps += [a, b]
            a.start()
            b.start()

    def _pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if direction == "up":
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---------------------------------------------------------------- breachcheck

GENEROUS = """allow_anonymous = true
[anonymous]
elements_per_second = 1e12
burst = 1000000000000
elements_per_day = 1000000000000
bucket_bytes_per_day = 1000000000000000
requests_per_second = 1e9
request_burst = 1000000000
"""


def run_breachcheck(work, n, ms, queries, cores, rel):
    server_bin, client_bin = rel / "breachcheck-server", rel / "breachcheck"
    if not server_bin.exists() or not client_bin.exists():
        return {"error": f"not available: {rel}/breachcheck-server or breachcheck not built"}
    d = work / "bc"
    d.mkdir()
    subprocess.run([server_bin, "keygen", "--out", d / "k.key"], check=True,
                   stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    p = subprocess.run([server_bin, "build-index", "--key", d / "k.key", "--out", d / "i.idx",
                        "--breach", "peers", "--default-region", "CN", "--json",
                        work / "db.txt"], check=True, capture_output=True, text=True)
    setup = time.perf_counter() - t0
    try:
        summary = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
    index_bytes = (d / "i.idx").stat().st_size
    (d / "c.toml").write_text(GENEROUS)
    srv = subprocess.Popen([server_bin, "serve", "--index", d / "i.idx", "--key", d / "k.key",
                            "--listen", "127.0.0.1:0", "--config", d / "c.toml"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rows = []
    try:
        line = srv.stdout.readline().strip()
        prefix = "breachcheck-server listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"unexpected first line from serve: {line!r}")
        addr = line[len(prefix):]
        threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()
        host, port = addr.rsplit(":", 1)
        proxy = Proxy(host, int(port))
        # Warm the page cache and the server once (not counted).
        subprocess.run([client_bin, "check", "--server", f"http://127.0.0.1:{proxy.port}",
                        "--format", "jsonl", queries[ms[0]]["items"][0]],
                       capture_output=True)
        for m in ms:
            proxy.wait_idle()
            proxy.reset()
            t0 = time.perf_counter()
            r = subprocess.run([client_bin, "check", "--server",
                                f"http://127.0.0.1:{proxy.port}", "--format", "jsonl",
                                "--file", work / f"q{m}.txt"], capture_output=True, text=True)
            online = time.perf_counter() - t0
            proxy.wait_idle()
            found, nfound = set(), 0
            for out in r.stdout.splitlines():
                obj = json.loads(out)
                if obj.get("found"):
                    nfound += 1
                    found.add(obj["input"])
            members = queries[m]["members"]
            # exit status: 0 none found, 1 some found, 2 error
            correct = r.returncode in (0, 1) and nfound == len(found) and found == set(members)
            rows.append({"m": m, "online": online, "up": proxy.up, "down": proxy.down,
                         "found": nfound, "expected": len(members), "correct": correct,
                         "rc": r.returncode, "stderr": r.stderr[-300:]})
    finally:
        srv.terminate()
        srv.wait(10)
    return {"setup": setup, "threads": cores, "rows": rows, "index_bytes": index_bytes,
            "distinct": summary.get("distinct") or summary.get("entries") or n,
            "setup_note": f"build-index, {cores} threads (rayon, all cores); index "
                          f"{index_bytes / 1e6:.2f} MB"}


# ---------------------------------------------------------------- peers (run inside venvs)

OM_WORKER = r'''
import json, sys, time
import private_set_intersection.python as psi
work, ms, fpr = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], float(sys.argv[3])
shared = sys.argv[4] == "shared"
db = open(work + "/db.txt").read().split()
out = {"version": getattr(psi, "__version__", "?"), "rows": []}
server = psi.server.CreateWithNewKey(True)
setup_msg = None
for m in ms:
    if setup_msg is None or not shared:
        t0 = time.perf_counter()
        setup_msg = server.CreateSetupMessage(fpr, max(ms) if shared else m, db,
                                              psi.DataStructure.GCS)
        setup = time.perf_counter() - t0
        setup_bytes = len(setup_msg.SerializeToString())
    items = open(work + "/q%d.txt" % m).read().split()
    members = set(json.load(open(work + "/q%d.members.json" % m)))
    t0 = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    req = client.CreateRequest(items)
    resp = server.ProcessRequest(req)
    got = client.GetIntersection(setup_msg, resp)
    online = time.perf_counter() - t0
    found = {items[i] for i in got}
    out["rows"].append({"m": m, "setup": setup, "setup_bytes": setup_bytes,
                        "online": online, "up": len(req.SerializeToString()),
                        "down": len(resp.SerializeToString()), "found": len(found),
                        "expected": len(members), "correct": found == members})
    print(json.dumps(out["rows"][-1]), file=sys.stderr, flush=True)
print(json.dumps(out))
'''

APSI_WORKER = r'''
import json, sys, time
import apsi, apsi.utils
work, ms, threads = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
plan = json.loads(sys.argv[4])  # {param_name: [params, [m, ...]]}
apsi.utils.set_thread_count(threads)
apsi.utils.set_log_level("ERROR")
db = open(work + "/db.txt").read().split()
out = {"threads": apsi.utils.get_thread_count(), "rows": []}
for name, (params, group) in plan.items():
    pj = json.dumps(params)
    t0 = time.perf_counter()
    server = apsi.UnlabeledServer()
    server.init_db(pj)
    server.add_items(db)
    setup = time.perf_counter() - t0
    for m in group:
        items = open(work + "/q%d.txt" % m).read().split()
        members = set(json.load(open(work + "/q%d.members.json" % m)))
        t0 = time.perf_counter()
        client = apsi.UnlabeledClient(pj)
        oreq = client.oprf_request(items)
        oresp = server.handle_oprf_request(oreq)
        query = client.build_query(oresp)
        resp = server.handle_query(query)
        found = set(client.extract_result(resp))
        online = time.perf_counter() - t0
        out["rows"].append({"m": m, "params": name, "setup": setup, "online": online,
                            "up": len(oreq) + len(query), "down": len(oresp) + len(resp),
                            "found": len(found), "expected": len(members),
                            "correct": found == members})
        print(json.dumps(out["rows"][-1]), file=sys.stderr, flush=True)
print(json.dumps(out))
'''


def make_venv(python, package, vdir, log):
    """Create a venv and pip-install package; return (python path, version) or raise."""
    if not (shutil.which(python) or os.path.exists(python)):
        raise RuntimeError(f"{python} not found")
    r = subprocess.run([python, "-m", "venv", vdir], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"venv failed: {r.stderr.strip()[-200:]}")
    vpy = str(Path(vdir) / "bin" / "python")
    r = subprocess.run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        package], capture_output=True, text=True, timeout=900)
    if r.returncode:
        last = [x for x in r.stderr.strip().splitlines() if x.strip()]
        raise RuntimeError(f"pip install {package} failed: {(last or ['?'])[-1][:200]}")
    name = package.split("==")[0]
    r = subprocess.run([vpy, "-m", "pip", "show", name], capture_output=True, text=True)
    version = next((x.split(":", 1)[1].strip() for x in r.stdout.splitlines()
                    if x.startswith("Version:")), "?")
    log(f"installed {name} {version} in {vdir}")
    return vpy, version


def unpack_wheels(wheels, names, site, log):
    """Offline install: unpack the wheels in `wheels` whose names start with one of `names`
    into `site` (a directory for PYTHONPATH); return the first one's version."""
    import zipfile
    found = [w for w in sorted(Path(wheels).glob("*.whl"))
             if any(w.name.lower().startswith(x) for x in names)]
    missing = [x for x in names if not any(w.name.lower().startswith(x) for w in found)]
    if missing:
        raise RuntimeError(f"no wheel for {', '.join(missing)} in {wheels}")
    for w in found:
        with zipfile.ZipFile(w) as z:
            z.extractall(site)
        log(f"unpacked {w.name} into {site}")
    return found[0].name.split("-")[1]


def peer_python(args, default, package, names, work, tag, log):
    """The interpreter and environment a peer runs in: a venv with `package` pip-installed,
    or (with --wheels) `args.python` with the wheels unpacked on its PYTHONPATH."""
    if args.wheels:
        site = work / f"site-{tag}"
        version = unpack_wheels(args.wheels, names, site, log)
        return args.python or default, version, {**os.environ, "PYTHONPATH": str(site)}
    vpy, version = make_venv(args.python or default, package, str(work / f"venv-{tag}"), log)
    return vpy, version, None


def apsi_from_source(args, log):
    """The interpreter and environment for the `apsi` package scripts/build-apsi.sh builds in
    --apsi-dir (building it first when it is not there)."""
    python = args.python or PY311
    site = Path(args.apsi_dir).resolve()
    if not (site / "BUILT").exists():
        log(f"building APSI from source into {site} (scripts/build-apsi.sh; minutes)")
        r = subprocess.run([str(ROOT / "scripts" / "build-apsi.sh"), str(site)],
                           env={**os.environ, "PYTHON": python}, capture_output=True, text=True)
        if r.returncode:
            last = [x for x in r.stderr.strip().splitlines() if x.strip()]
            raise RuntimeError(f"scripts/build-apsi.sh failed: {(last or ['?'])[-1][:200]}")
    version = f"({(site / 'BUILT').read_text().strip()})"
    return python, version, {**os.environ, "PYTHONPATH": str(site)}


def run_worker(vpy, code, args, work, log, timeout, env=None, tag="main"):
    script = work / f"worker-{tag}.py"  # not the name of the module it imports
    script.write_text(code)
    p = subprocess.Popen([vpy, str(script), str(work), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    err = []

    def drain():
        for line in p.stderr:
            err.append(line)
            log("  " + line.rstrip())
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    # Read stdout here and stderr in the thread (communicate() would race the thread for it).
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        stdout = p.stdout.read()
        p.wait()
    finally:
        timer.cancel()
    t.join(5)
    if p.returncode < 0:
        import signal
        name = signal.Signals(-p.returncode).name
        hint = (" (the wheel's native code uses instructions this CPU lacks)"
                if name == "SIGILL" else "")
        raise RuntimeError(f"worker killed by {name}{hint}")
    if p.returncode:
        raise RuntimeError(f"worker exit {p.returncode}: {''.join(err).strip()[-200:]}")
    return json.loads(stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report

def fmt_bytes(b):
    if b is None:
        return "–"
    for unit, div in (("MB", 1e6), ("kB", 1e3)):
        if b >= div:
            return f"{b / div:.2f} {unit}"
    return f"{b} B"


def fmt_s(s):
    return "–" if s is None else (f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s")


def render(n, ms, cores, results, cpu):
    lines = [f"N = {n:,} synthetic CN mobiles, M half members; {cores} cores ({cpu}).", "",
             "| system | M | setup | threads | setup per core | online | bytes up | bytes down "
             "| of which setup message | correct |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results:
        if "error" in res:
            lines.append(f"| {name} | all | {res['error']} | | | | | | | |")
            continue
        for r in res["rows"]:
            setup = r.get("setup", res.get("setup"))
            thr = res["threads"]
            per_core = n / setup / thr if setup else None
            setup_msg = r.get("setup_bytes")
            down = r["down"] + (setup_msg or 0)
            label = name + (f" ({r['params']})" if "params" in r else "")
            ok = "yes" if r["correct"] else f"**NO** ({r['found']}/{r['expected']})"
            lines.append(
                f"| {label} | {r['m']:,} | {fmt_s(setup)} | {thr} | "
                f"{per_core:,.0f}/s | {fmt_s(r['online'])} | {fmt_bytes(r['up'])} | "
                f"{fmt_bytes(down)} | {fmt_bytes(setup_msg) if setup_msg else '–'} | {ok} |")
    lines.append("")
    for name, res in results:
        if "setup_note" in res:
            lines.append(f"* {name}: {res['setup_note']}.")
    lines.append("")
    lines += targets(results, n)
    return "\n".join(lines) + "\n"


def targets(results, n):
    res = dict(results)
    bc, om, ap = res.get("breachcheck"), res.get("OpenMined PSI"), res.get("APSI")

    def row(r, m):
        return next((x for x in r["rows"] if x["m"] == m), None) if r and "rows" in r else None
    out = ["| #13 target | measured | met? |", "|---|---|---|"]
    b, o = row(bc, 10000), row(om, 10000)
    if b and o:
        ratio = o["online"] / b["online"]
        out.append(f"| M = 10,000 end to end ≥ 5× faster than OpenMined online | "
                   f"{fmt_s(b['online'])} vs {fmt_s(o['online'])}: {ratio:.2f}× | "
                   f"{'yes' if ratio >= 5 else 'no'} |")
    if bc and "setup" in bc and ap and "rows" in ap:
        bpc = n / bc["setup"] / bc["threads"]
        for r in ap["rows"]:
            if r["m"] in (1, 10000):
                apc = n / r["setup"] / ap["threads"]
                out.append(f"| index build per core ≥ APSI setup per core ({r['params']}) | "
                           f"{bpc:,.0f}/s vs {apc:,.0f}/s: {bpc / apc:.2f}× | "
                           f"{'yes' if bpc >= apc else 'no'} |")
    b, o, a = row(bc, 1), row(om, 1), row(ap, 1)
    if b and o:
        ratio = o["setup_bytes"] / b["down"]
        out.append(f"| M = 1 download ≤ 1/100 of OpenMined's setup message | "
                   f"{fmt_bytes(b['down'])} vs {fmt_bytes(o['setup_bytes'])}: 1/{ratio:.0f} | "
                   f"{'yes' if ratio >= 100 else 'no'} |")
    if b and a:
        ratio = (a["up"] + a["down"]) / b["down"]
        out.append(f"| M = 1 download ≤ 1/50 of APSI's bytes (up + down) | "
                   f"{fmt_bytes(b['down'])} vs {fmt_bytes(a['up'] + a['down'])}: 1/{ratio:.0f} | "
                   f"{'yes' if ratio >= 50 else 'no'} |")
    return out


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--m", default="1,100,10000", help="comma-separated query sizes")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--only", default="breachcheck,openmined,apsi")
    ap.add_argument("--om-fpr", type=float, default=1e-9)
    ap.add_argument("--om-setup", choices=["per-m", "shared"], default="per-m",
                    help="OpenMined: one setup message per M (default) or one for max(M)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"),
                    help="where breachcheck-server and breachcheck are (not rebuilt)")
    ap.add_argument("--wheels", help="offline: a directory of the peers' wheels to unpack "
                    "instead of pip-installing into venvs")
    ap.add_argument("--python", help="the interpreter for both peers (default: python3 for "
                    "OpenMined, pyenv's CPython 3.10 for APSI)")
    ap.add_argument("--apsi-dir", help="APSI: run the `apsi` package that "
                    "scripts/build-apsi.sh builds in this directory (built first if missing), "
                    "under --python or python3, instead of pip's apsi==0.1.2 wheel")
    ap.add_argument("--om-parallel", action="store_true",
                    help="OpenMined: one single-threaded process per M, run at once "
                    "(each on its own core; for machines with more cores than M sizes)")
    args = ap.parse_args()
    ms = sorted(int(x) for x in args.m.split(","))
    only = set(args.only.split(","))
    cores = os.cpu_count() or 1

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="peers-"))
    results = []
    try:
        log(f"workload: N = {args.n}, M = {ms} in {work}")
        make_workload(args.n, ms, work)
        queries = {m: {"items": (work / f"q{m}.txt").read_text().split(),
                       "members": json.loads((work / f"q{m}.members.json").read_text())}
                   for m in ms}
        if "breachcheck" in only:
            log("breachcheck")
            try:
                results.append(("breachcheck", run_breachcheck(work, args.n, ms, queries, cores,
                                                               Path(args.bin_dir))))
            except Exception as e:  # noqa: BLE001 - reported in the table
                results.append(("breachcheck", {"error": f"failed: {e}"[:200]}))
        if "openmined" in only:
            log("OpenMined PSI")
            try:
                vpy, ver, env = peer_python(args, PY311, "openmined-psi",
                                            ["openmined_psi", "protobuf"], work, "om", log)
                shared = "shared" if args.om_setup == "shared" else "per-m"
                groups = [[m] for m in ms] if args.om_parallel else [ms]
                outs = [None] * len(groups)

                def om(i):
                    try:
                        outs[i] = run_worker(vpy, OM_WORKER, [",".join(map(str, groups[i])),
                                                              str(args.om_fpr), shared],
                                             work, log, 3600, env, f"om{i}")
                    except Exception as e:  # noqa: BLE001 - raised below
                        outs[i] = e
                threads = [threading.Thread(target=om, args=(i,)) for i in range(len(groups))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for o in outs:
                    if isinstance(o, Exception):
                        raise o
                rows = sorted((r for o in outs for r in o["rows"]), key=lambda r: r["m"])
                results.append(("OpenMined PSI", {
                    "threads": 1, "rows": rows,
                    "setup_note": f"openmined-psi {ver}, GCS, fpr {args.om_fpr:g}, 1 thread "
                                  f"(the library is single-threaded); setup = "
                                  f"CreateSetupMessage(num_client_inputs = "
                                  f"{'max M' if args.om_setup == 'shared' else 'M'}); "
                                  f"online in process, no network"
                                  + ("; one process per M, run at once"
                                     if args.om_parallel else "")}))
            except Exception as e:  # noqa: BLE001
                results.append(("OpenMined PSI", {"error": f"not available: {e}"[:240]}))
        if "apsi" in only:
            log("APSI")
            try:
                if args.apsi_dir:
                    vpy, ver, env = apsi_from_source(args, log)
                else:
                    vpy, ver, env = peer_python(args, PY310, "apsi==0.1.2", ["apsi"], work,
                                                "apsi", log)
                    ver = f"{ver} ({'wheel' if args.wheels else 'pip'})"
                plan = {}
                for m in ms:
                    name = apsi_params_for(m)
                    plan.setdefault(name, [APSI_PARAMS[name], []])[1].append(m)
                out = run_worker(vpy, APSI_WORKER, [",".join(map(str, ms)), str(cores),
                                                    json.dumps(plan)], work, log, 3600, env,
                                 "apsi")
                results.append(("APSI", {
                    "threads": out["threads"], "rows": out["rows"],
                    "setup_note": f"apsi {ver}, UnlabeledServer, {out['threads']} "
                                  f"threads; setup = init_db + add_items per parameter set "
                                  f"(microsoft/APSI parameters/1M-*.json); online in process, "
                                  f"no network"}))
            except Exception as e:  # noqa: BLE001
                results.append(("APSI", {"error": f"not available: {e}"[:240]}))
        md = render(args.n, ms, cores, results, cpu_model())
        print(md)
        if args.out:
            Path(args.out).write_text(md)
            log(f"wrote {args.out}")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
