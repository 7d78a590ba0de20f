//! The deployment artifacts (`Dockerfile`, `deploy/`): every reference in
//! them resolves, without a container engine or a cluster.
//!
//! [`check_tree`] parses every YAML file under `deploy/` (the Kubernetes
//! manifests, `compose.yaml`, `envoy.yaml`) and cross-checks them: one image
//! everywhere; probes, Service target ports and Envoy endpoints name ports
//! that exist; every volume mount has its volume and every ConfigMap, Secret
//! and claim a volume names is defined; Service, PDB and NetworkPolicy
//! selectors select pods; the HPA targets a Deployment; the kustomization
//! lists every manifest (and never the example Secret); compose secrets,
//! volumes and `depends_on` resolve; Envoy routes Evaluate to evaluators
//! only and buckets to every replica, with gRPC health checks. It also loads
//! `deploy/server.toml` with the server's own parser, checks that the
//! ConfigMap carries the same bytes, that every `BREACHCHECK_…` variable set
//! is one the binaries read, and that the Dockerfile runs as a non-root
//! user, builds `--locked` and exposes the gRPC port. Each failure names its
//! file and object; a broken copy of the tree shows that they are caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

/// The port every replica serves gRPC on (`listen` in deploy/server.toml).
const GRPC_PORT: i64 = 50051;
/// The service whose grpc.health.v1 status turns NOT_SERVING on drain.
const HEALTH_SERVICE: &str = "breachcheck.v1.BreachCheck";
const EVALUATE: &str = "/breachcheck.v1.BreachCheck/Evaluate";
const GET_BUCKETS: &str = "/breachcheck.v1.BreachCheck/GetBuckets";
const GET_INDEX_INFO: &str = "/breachcheck.v1.BreachCheck/GetIndexInfo";
/// The variable that makes a replica bucket-only (it must hold no key).
const BUCKETS_ONLY: &str = "BREACHCHECK_BUCKETS_ONLY";
const K8S: &str = "deploy/k8s";

/// Checks the deployment artifacts under `root` (a checkout of the
/// repository): `Ok` or every problem found, each naming its file and object.
fn check_tree(root: &Path) -> Result<(), Vec<String>> {
    let mut r = Report::default();
    let known_env = env_vars_read_by_binaries(root, &mut r);
    let server = ServerToml::load(root, &mut r);
    let compose = check_compose(root, &server, &known_env, &mut r);
    check_envoy(root, &compose, &mut r);
    let objects = load_k8s(root, &mut r);
    check_k8s(
        &objects,
        compose.image.as_deref(),
        &server,
        &known_env,
        &mut r,
    );
    check_kustomization(root, compose.image.as_deref(), &mut r);
    check_dockerfile(root, &mut r);
    if r.0.is_empty() { Ok(()) } else { Err(r.0) }
}

/// Every failed check, in the order found.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn fail(&mut self, at: &str, what: impl std::fmt::Display) {
        self.0.push(format!("{at}: {what}"));
    }
}

// --- YAML helpers ----------------------------------------------------------------

fn read(root: &Path, rel: &str, r: &mut Report) -> Option<String> {
    match std::fs::read_to_string(root.join(rel)) {
        Ok(text) => Some(text),
        Err(e) => {
            r.fail(rel, format_args!("cannot read: {e}"));
            None
        }
    }
}

/// The documents of a YAML file, `<<` merge keys resolved (compose uses them;
/// YAML 1.2 parsers leave them to the application).
fn parse_yaml(rel: &str, text: &str, r: &mut Report) -> Vec<Yaml> {
    match YamlLoader::load_from_str(text) {
        Ok(docs) => docs
            .into_iter()
            .map(merge_keys)
            .filter(|d| !d.is_null() && !d.is_badvalue())
            .collect(),
        Err(e) => {
            r.fail(rel, format_args!("not valid YAML: {e}"));
            Vec::new()
        }
    }
}

fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let mut merged = Vec::new();
            for (k, v) in h {
                if k.as_str() == Some("<<") {
                    merged.push(v);
                } else {
                    out.insert(k, merge_keys(v));
                }
            }
            for m in merged {
                let sources = match m {
                    Yaml::Array(a) => a,
                    one => vec![one],
                };
                for source in sources {
                    if let Yaml::Hash(sh) = merge_keys(source) {
                        for (k, v) in sh {
                            if !out.contains_key(&k) {
                                out.insert(k, v);
                            }
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn items(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], Vec::as_slice)
}

fn entries(y: &Yaml) -> Vec<(&str, &Yaml)> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

/// A scalar as the text Kubernetes and compose would see.
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    entries(y)
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), scalar(v)?)))
        .collect()
}

/// Whether `labels` carry every pair of a non-empty `selector`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether `path` is `dir` or lies below it.
fn under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

// --- what the binaries and the server config say -----------------------------------

/// Every `BREACHCHECK_…` name quoted in the server's and the client's
/// sources: the environment variables they read.
fn env_vars_read_by_binaries(root: &Path, r: &mut Report) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![root.join("server/src"), root.join("client/src")];
    while let Some(dir) = dirs.pop() {
        let Ok(list) = std::fs::read_dir(&dir) else {
            r.fail(&dir.display().to_string(), "cannot list the sources");
            continue;
        };
        for entry in list.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for piece in text.split("\"BREACHCHECK_").skip(1) {
                    if let Some(rest) = piece.split('"').next() {
                        names.insert(format!("BREACHCHECK_{rest}"));
                    }
                }
            }
        }
    }
    names
}

fn check_env_name(at: &str, name: &str, known: &BTreeSet<String>, r: &mut Report) {
    if name.starts_with("BREACHCHECK_") && !known.contains(name) {
        r.fail(at, format_args!("sets {name}, which neither binary reads"));
    }
}

/// deploy/server.toml: its text and the paths the containers must provide.
struct ServerToml {
    text: String,
    index: Option<String>,
    key: Option<String>,
}

impl ServerToml {
    const PATH: &'static str = "deploy/server.toml";

    fn load(root: &Path, r: &mut Report) -> Self {
        // The server's own parser and validation: the shipped file must start
        // a server (unknown keys, bad hashes and quota mistakes are refused).
        if let Err(e) = breachcheck_server::Config::load(&root.join(Self::PATH)) {
            r.fail(Self::PATH, format_args!("the server refuses it: {e}"));
        }
        let text = read(root, Self::PATH, r).unwrap_or_default();
        let index = top_level_string(&text, "index");
        let key = top_level_string(&text, "key");
        for (name, value) in [("index", &index), ("key", &key)] {
            if value.is_none() {
                r.fail(Self::PATH, format_args!("sets no `{name}` path"));
            }
        }
        ServerToml { text, index, key }
    }
}

/// A top-level `name = "value"` of a TOML file (before its first table).
fn top_level_string(toml: &str, name: &str) -> Option<String> {
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            break;
        }
        let Some(value) = line.strip_prefix(name).map(str::trim_start) else {
            continue;
        };
        if let Some(value) = value.strip_prefix('=') {
            return value
                .trim()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_owned);
        }
    }
    None
}

// --- compose ---------------------------------------------------------------------

/// What Envoy and the Kubernetes checks need to know of compose.yaml.
#[derive(Default)]
struct Compose {
    /// The image built from the Dockerfile: the one breachcheck image.
    image: Option<String>,
    /// Service name -> ports it listens on (`expose`, and `ports` targets).
    ports: BTreeMap<String, BTreeSet<i64>>,
    /// Breachcheck services that hold the key.
    evaluators: BTreeSet<String>,
    /// Breachcheck services without it.
    bucket_only: BTreeSet<String>,
}

/// `environment` as a map, from either compose spelling (map or `K=V` list).
fn compose_env(service: &Yaml) -> BTreeMap<String, String> {
    let env = &service["environment"];
    if let Some(list) = env.as_vec() {
        list.iter()
            .filter_map(|e| {
                let (k, v) = e.as_str()?.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    } else {
        string_map(env)
    }
}

/// The container port of a compose `ports` entry (`[IP:]HOST:CONTAINER[/proto]`).
fn published_port(p: &Yaml) -> Option<i64> {
    if let Some(t) = p["target"].as_i64() {
        return Some(t);
    }
    let text = scalar(p)?;
    let text = text.split('/').next()?;
    text.rsplit(':').next()?.parse().ok()
}

fn check_compose(
    root: &Path,
    server: &ServerToml,
    known_env: &BTreeSet<String>,
    r: &mut Report,
) -> Compose {
    const FILE: &str = "deploy/compose.yaml";
    let mut out = Compose::default();
    let Some(text) = read(root, FILE, r) else {
        return out;
    };
    let Some(doc) = parse_yaml(FILE, &text, r).into_iter().next() else {
        r.fail(FILE, "is empty");
        return out;
    };
    let services = entries(&doc["services"]);
    if services.is_empty() {
        r.fail(FILE, "defines no services");
    }
    let secrets: BTreeSet<&str> = entries(&doc["secrets"])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let volumes: BTreeSet<&str> = entries(&doc["volumes"])
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let names: BTreeSet<&str> = services.iter().map(|(k, _)| *k).collect();

    // The image built here is the breachcheck image.
    let built: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| !s["build"].is_badvalue())
        .filter_map(|(_, s)| s["image"].as_str().map(str::to_owned))
        .collect();
    match built.len() {
        1 => out.image = built.into_iter().next(),
        0 => r.fail(FILE, "no service with `build` names the image it builds"),
        _ => r.fail(
            FILE,
            format_args!("services build different images: {built:?}"),
        ),
    }

    for (k, s) in entries(&doc["secrets"]) {
        if s["file"].is_badvalue() && s["environment"].is_badvalue() && s["external"].is_badvalue()
        {
            r.fail(
                FILE,
                format_args!("secret {k} has no `file`, `environment` or `external`"),
            );
        }
    }
    for (name, svc) in &services {
        let at = format!("{FILE}: service {name}");
        for s in items(&svc["secrets"]) {
            let source = s.as_str().or_else(|| s["source"].as_str()).unwrap_or("");
            if !secrets.contains(source) {
                r.fail(
                    &at,
                    format_args!("uses secret {source:?}, which is not defined under `secrets`"),
                );
            }
        }
        for v in items(&svc["volumes"]) {
            let (kind, source) = match v.as_str() {
                Some(short) => {
                    let src = short.split(':').next().unwrap_or("");
                    let bind = src.starts_with(['.', '/', '~', '$']);
                    (if bind { "bind" } else { "volume" }, src.to_owned())
                }
                None => (
                    v["type"].as_str().unwrap_or("volume"),
                    v["source"].as_str().unwrap_or("").to_owned(),
                ),
            };
            match kind {
                "volume" if !volumes.contains(source.as_str()) => {
                    r.fail(
                        &at,
                        format_args!(
                            "mounts volume {source:?}, which is not defined under `volumes`"
                        ),
                    );
                }
                // A bind of a file of this folder must exist; interpolated
                // (`${…}`) or absolute sources are the operator's.
                "bind"
                    if source.starts_with("./")
                        && !source.contains('$')
                        && !root.join("deploy").join(&source).exists() =>
                {
                    r.fail(&at, format_args!("binds {source}, which is not in deploy/"));
                }
                _ => {}
            }
        }
        let depends: Vec<&str> = match svc["depends_on"].as_vec() {
            Some(list) => list.iter().filter_map(Yaml::as_str).collect(),
            None => entries(&svc["depends_on"])
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        for d in depends {
            if !names.contains(d) {
                r.fail(
                    &at,
                    format_args!("depends on {d:?}, which is not a service"),
                );
            }
        }
        let env = compose_env(svc);
        for k in env.keys() {
            check_env_name(&at, k, known_env, r);
        }
        let mut ports: BTreeSet<i64> = items(&svc["expose"])
            .iter()
            .filter_map(|p| scalar(p)?.split('/').next()?.parse().ok())
            .collect();
        ports.extend(items(&svc["ports"]).iter().filter_map(published_port));
        out.ports.insert((*name).to_owned(), ports.clone());

        // The breachcheck services: one image, the port, the key where due.
        if out.image.is_none() || svc["image"].as_str() != out.image.as_deref() {
            if svc["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("breachcheck"))
            {
                r.fail(
                    &at,
                    format_args!(
                        "runs {:?}, not the image built here",
                        svc["image"].as_str().unwrap_or("")
                    ),
                );
            }
            continue;
        }
        if !ports.contains(&GRPC_PORT) {
            r.fail(
                &at,
                format_args!("does not expose the gRPC port {GRPC_PORT}"),
            );
        }
        let holds_key = !items(&svc["secrets"]).is_empty();
        if env.get(BUCKETS_ONLY).is_some_and(|v| v == "true") {
            if holds_key {
                r.fail(
                    &at,
                    "is bucket-only but is given a secret (the key never goes to bucket replicas)",
                );
            }
            out.bucket_only.insert((*name).to_owned());
        } else {
            let targets: Vec<String> = items(&svc["secrets"])
                .iter()
                .map(|s| {
                    let t = s["target"]
                        .as_str()
                        .or_else(|| s.as_str())
                        .or_else(|| s["source"].as_str());
                    let t = t.unwrap_or("");
                    if t.starts_with('/') {
                        t.to_owned()
                    } else {
                        format!("/run/secrets/{t}")
                    }
                })
                .collect();
            if let Some(key) = &server.key
                && !targets.contains(key)
            {
                r.fail(
                    &at,
                    format_args!("evaluates but mounts no secret at {key} (server.toml `key`)"),
                );
            }
            out.evaluators.insert((*name).to_owned());
        }
    }
    if out.image.is_some() && out.evaluators.is_empty() {
        r.fail(
            FILE,
            "runs no evaluator (a breachcheck service holding the key)",
        );
    }
    out
}

// --- Envoy -----------------------------------------------------------------------

fn check_envoy(root: &Path, compose: &Compose, r: &mut Report) {
    const FILE: &str = "deploy/envoy.yaml";
    let Some(text) = read(root, FILE, r) else {
        return;
    };
    let Some(doc) = parse_yaml(FILE, &text, r).into_iter().next() else {
        r.fail(FILE, "is empty");
        return;
    };
    // Clusters: name -> endpoints (compose service, port).
    let mut clusters: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for c in items(&doc["static_resources"]["clusters"]) {
        let name = c["name"].as_str().unwrap_or("").to_owned();
        let at = format!("{FILE}: cluster {name}");
        let mut endpoints = Vec::new();
        for group in items(&c["load_assignment"]["endpoints"]) {
            for e in items(&group["lb_endpoints"]) {
                let sa = &e["endpoint"]["address"]["socket_address"];
                let (Some(host), Some(port)) = (sa["address"].as_str(), sa["port_value"].as_i64())
                else {
                    r.fail(&at, "has an endpoint without address and port_value");
                    continue;
                };
                match compose.ports.get(host) {
                    None => r.fail(
                        &at,
                        format_args!("sends to {host}, which is not a compose service"),
                    ),
                    Some(p) if !p.contains(&port) => r.fail(
                        &at,
                        format_args!("sends to {host}:{port}, but that service listens on {p:?}"),
                    ),
                    Some(_) => {}
                }
                endpoints.push((host.to_owned(), port));
            }
        }
        if endpoints.is_empty() {
            r.fail(&at, "has no endpoints");
        }
        // gRPC needs HTTP/2 upstream; health by grpc.health.v1.
        let h2 = !c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            ["explicit_http_config"]["http2_protocol_options"]
            .is_badvalue()
            || !c["http2_protocol_options"].is_badvalue();
        if !h2 {
            r.fail(
                &at,
                "does not speak HTTP/2 to its endpoints (gRPC needs it)",
            );
        }
        let grpc_checks: Vec<&Yaml> = items(&c["health_checks"])
            .iter()
            .map(|h| &h["grpc_health_check"])
            .filter(|g| !g.is_badvalue())
            .collect();
        if grpc_checks.is_empty() {
            r.fail(&at, "has no grpc_health_check (grpc.health.v1)");
        }
        for g in grpc_checks {
            if g["service_name"].as_str() != Some(HEALTH_SERVICE) {
                r.fail(
                    &at,
                    format_args!(
                        "health-checks service {:?}, not {HEALTH_SERVICE}",
                        g["service_name"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        clusters.insert(name, endpoints);
    }
    // Routes, in order, for each path the clients call.
    let mut routes: Vec<(String, String)> = Vec::new(); // (match, cluster)
    for l in items(&doc["static_resources"]["listeners"]) {
        for chain in items(&l["filter_chains"]) {
            for f in items(&chain["filters"]) {
                for vh in items(&f["typed_config"]["route_config"]["virtual_hosts"]) {
                    for route in items(&vh["routes"]) {
                        let rname = route["name"].as_str().unwrap_or("(unnamed)");
                        let m = &route["match"];
                        let matcher = match (m["path"].as_str(), m["prefix"].as_str()) {
                            (Some(p), _) => format!("={p}"),
                            (None, Some(p)) => p.to_owned(),
                            _ => continue,
                        };
                        let Some(cluster) = route["route"]["cluster"].as_str() else {
                            continue;
                        };
                        if !clusters.contains_key(cluster) {
                            r.fail(
                                &format!("{FILE}: route {rname}"),
                                format_args!("sends to cluster {cluster:?}, which is not defined"),
                            );
                        }
                        routes.push((matcher, cluster.to_owned()));
                    }
                }
            }
        }
    }
    let route_for = |path: &str| {
        routes.iter().find_map(|(m, c)| {
            let hit = match m.strip_prefix('=') {
                Some(exact) => exact == path,
                None => path.starts_with(m.as_str()),
            };
            hit.then_some(c.as_str())
        })
    };
    let hosts = |cluster: &str| -> BTreeSet<String> {
        clusters
            .get(cluster)
            .into_iter()
            .flatten()
            .map(|(h, _)| h.clone())
            .collect()
    };
    match route_for(EVALUATE) {
        None => r.fail(FILE, format_args!("has no route for {EVALUATE}")),
        Some(c) => {
            let hs = hosts(c);
            for h in hs.iter().filter(|h| !compose.evaluators.contains(*h)) {
                r.fail(
                    &format!("{FILE}: cluster {c}"),
                    format_args!(
                        "takes Evaluate but {h} is not an evaluator (it would answer UNIMPLEMENTED)"
                    ),
                );
            }
            for e in compose.evaluators.difference(&hs) {
                r.fail(
                    &format!("{FILE}: cluster {c}"),
                    format_args!("takes Evaluate but leaves out evaluator {e}"),
                );
            }
        }
    }
    for path in [GET_BUCKETS, GET_INDEX_INFO] {
        match route_for(path) {
            None => r.fail(FILE, format_args!("has no route for {path}")),
            Some(c) => {
                let hs = hosts(c);
                for s in compose
                    .evaluators
                    .union(&compose.bucket_only)
                    .filter(|s| !hs.contains(*s))
                {
                    r.fail(
                        &format!("{FILE}: cluster {c}"),
                        format_args!("takes {path} but leaves out replica {s}"),
                    );
                }
            }
        }
    }
}

// --- Kubernetes ------------------------------------------------------------------

/// One object of a manifest.
struct Obj {
    file: String,
    kind: String,
    name: String,
    y: Yaml,
}

impl Obj {
    fn at(&self) -> String {
        format!("{}: {}/{}", self.file, self.kind, self.name)
    }
}

/// The manifests of deploy/k8s (every YAML file but the kustomization).
fn k8s_files(root: &Path, r: &mut Report) -> Vec<String> {
    let Ok(list) = std::fs::read_dir(root.join(K8S)) else {
        r.fail(K8S, "cannot list the folder");
        return Vec::new();
    };
    let mut files: Vec<String> = list
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .filter(|n| n != "kustomization.yaml" && n != "kustomization.yml")
        .collect();
    files.sort();
    files
}

fn load_k8s(root: &Path, r: &mut Report) -> Vec<Obj> {
    let mut objects = Vec::new();
    for name in k8s_files(root, r) {
        let file = format!("{K8S}/{name}");
        let Some(text) = read(root, &file, r) else {
            continue;
        };
        for (i, doc) in parse_yaml(&file, &text, r).into_iter().enumerate() {
            let api = doc["apiVersion"].as_str();
            let kind = doc["kind"].as_str();
            let obj_name = doc["metadata"]["name"].as_str();
            let (Some(_), Some(kind), Some(obj_name)) = (api, kind, obj_name) else {
                r.fail(
                    &format!("{file}: document {}", i + 1),
                    "needs apiVersion, kind and metadata.name",
                );
                continue;
            };
            let (kind, name) = (kind.to_owned(), obj_name.to_owned());
            objects.push(Obj {
                file: file.clone(),
                kind,
                name,
                y: doc,
            });
        }
    }
    objects
}

/// A Deployment or StatefulSet: its pod template's labels and spec.
struct Workload<'a> {
    obj: &'a Obj,
    labels: BTreeMap<String, String>,
    pod: &'a Yaml,
}

fn workloads(objects: &[Obj]) -> Vec<Workload<'_>> {
    objects
        .iter()
        .filter(|o| o.kind == "Deployment" || o.kind == "StatefulSet")
        .map(|o| Workload {
            obj: o,
            labels: string_map(&o.y["spec"]["template"]["metadata"]["labels"]),
            pod: &o.y["spec"]["template"]["spec"],
        })
        .collect()
}

fn containers(pod: &Yaml) -> impl Iterator<Item = (&'static str, &Yaml)> {
    let init = items(&pod["initContainers"])
        .iter()
        .map(|c| ("init container", c));
    init.chain(items(&pod["containers"]).iter().map(|c| ("container", c)))
}

/// A container's ports: name -> number.
fn ports_of(c: &Yaml) -> Vec<(Option<String>, i64)> {
    items(&c["ports"])
        .iter()
        .filter_map(|p| {
            Some((
                p["name"].as_str().map(str::to_owned),
                p["containerPort"].as_i64()?,
            ))
        })
        .collect()
}

/// Whether a port reference (a name, a number, or a number as text) is one
/// of `ports`.
fn port_exists(p: &Yaml, ports: &[(Option<String>, i64)]) -> bool {
    match p {
        Yaml::Integer(n) => ports.iter().any(|(_, v)| v == n),
        Yaml::String(s) => match s.parse::<i64>() {
            Ok(n) => ports.iter().any(|(_, v)| *v == n),
            Err(_) => ports.iter().any(|(name, _)| name.as_deref() == Some(s)),
        },
        _ => false,
    }
}

fn find<'a>(objects: &'a [Obj], kind: &str, name: &str) -> Option<&'a Obj> {
    objects.iter().find(|o| o.kind == kind && o.name == name)
}

fn check_k8s(
    objects: &[Obj],
    image: Option<&str>,
    server: &ServerToml,
    known_env: &BTreeSet<String>,
    r: &mut Report,
) {
    let workloads = workloads(objects);
    for w in &workloads {
        check_workload(w, objects, image, server, known_env, r);
    }
    for o in objects {
        let at = o.at();
        match o.kind.as_str() {
            "Service" => {
                let selector = string_map(&o.y["spec"]["selector"]);
                let matched: Vec<&Workload<'_>> = workloads
                    .iter()
                    .filter(|w| selects(&selector, &w.labels))
                    .collect();
                if matched.is_empty() {
                    r.fail(
                        &at,
                        format_args!(
                            "selector {selector:?} matches no Deployment or StatefulSet pods"
                        ),
                    );
                }
                for p in items(&o.y["spec"]["ports"]) {
                    let target = if p["targetPort"].is_badvalue() {
                        &p["port"]
                    } else {
                        &p["targetPort"]
                    };
                    for w in &matched {
                        let all: Vec<_> = items(&w.pod["containers"])
                            .iter()
                            .flat_map(ports_of)
                            .collect();
                        if !port_exists(target, &all) {
                            r.fail(
                                &at,
                                format_args!(
                                    "targetPort {:?} is not a port of {}'s containers",
                                    scalar(target).unwrap_or_default(),
                                    w.obj.at()
                                ),
                            );
                        }
                    }
                }
            }
            "PodDisruptionBudget" => {
                let selector = string_map(&o.y["spec"]["selector"]["matchLabels"]);
                if !workloads.iter().any(|w| selects(&selector, &w.labels)) {
                    r.fail(&at, format_args!("selector {selector:?} matches no pods"));
                }
            }
            "NetworkPolicy" => {
                let selector = string_map(&o.y["spec"]["podSelector"]["matchLabels"]);
                if !workloads.iter().any(|w| selects(&selector, &w.labels)) {
                    r.fail(
                        &at,
                        format_args!("podSelector {selector:?} matches no pods"),
                    );
                }
                for rule in items(&o.y["spec"]["ingress"]) {
                    for from in items(&rule["from"]) {
                        let s = string_map(&from["podSelector"]["matchLabels"]);
                        if !s.is_empty() && !workloads.iter().any(|w| selects(&s, &w.labels)) {
                            r.fail(
                                &at,
                                format_args!("admits pods {s:?}, which no workload runs"),
                            );
                        }
                    }
                }
            }
            "HorizontalPodAutoscaler" => {
                let target = &o.y["spec"]["scaleTargetRef"];
                let (kind, name) = (
                    target["kind"].as_str().unwrap_or(""),
                    target["name"].as_str().unwrap_or(""),
                );
                match find(objects, kind, name) {
                    None => r.fail(
                        &at,
                        format_args!("scales {kind}/{name}, which is not defined in {K8S}"),
                    ),
                    Some(d) => {
                        if !d.y["spec"]["replicas"].is_badvalue() {
                            r.fail(&d.at(), "sets spec.replicas although an HPA owns the count (every apply would reset it)");
                        }
                        // A CPU-utilisation target needs a CPU request on
                        // every container, or the HPA cannot compute it.
                        for c in items(&d.y["spec"]["template"]["spec"]["containers"]) {
                            if c["resources"]["requests"]["cpu"].is_badvalue() {
                                let cname = c["name"].as_str().unwrap_or("?");
                                r.fail(
                                    &d.at(),
                                    format_args!(
                                        "container {cname} has no CPU request, which {at} needs"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            "ConfigMap" => {
                // The server config travels as a copy: it must be the file.
                if let Some(text) = o.y["data"]["server.toml"].as_str()
                    && text != server.text
                {
                    r.fail(
                        &at,
                        format_args!(
                            "data server.toml differs from {}: paste that file in",
                            ServerToml::PATH
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

fn check_workload(
    w: &Workload<'_>,
    objects: &[Obj],
    image: Option<&str>,
    server: &ServerToml,
    known_env: &BTreeSet<String>,
    r: &mut Report,
) {
    let at = w.obj.at();
    let pod = w.pod;
    let selector = string_map(&w.obj.y["spec"]["selector"]["matchLabels"]);
    if !selects(&selector, &w.labels) {
        r.fail(
            &at,
            format_args!("selector {selector:?} does not match its own pod labels"),
        );
    }
    // Volumes: name -> definition; claim templates count as volumes.
    let mut volumes: BTreeMap<String, &Yaml> = BTreeMap::new();
    for v in items(&pod["volumes"]) {
        volumes.insert(v["name"].as_str().unwrap_or("").to_owned(), v);
    }
    let templates: BTreeSet<String> = items(&w.obj.y["spec"]["volumeClaimTemplates"])
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for (name, v) in &volumes {
        let vat = format!("{at}: volume {name}");
        if let Some(cm) = v["configMap"]["name"].as_str()
            && find(objects, "ConfigMap", cm).is_none()
        {
            r.fail(
                &vat,
                format_args!("uses ConfigMap {cm}, which is not defined in {K8S}"),
            );
        }
        if let Some(secret) = v["secret"]["secretName"].as_str() {
            match find(objects, "Secret", secret) {
                None => r.fail(
                    &vat,
                    format_args!("uses Secret {secret}, which is not defined in {K8S}"),
                ),
                Some(s) => {
                    for item in items(&v["secret"]["items"]) {
                        let key = item["key"].as_str().unwrap_or("");
                        if s.y["data"][key].is_badvalue() && s.y["stringData"][key].is_badvalue() {
                            r.fail(
                                &vat,
                                format_args!(
                                    "takes key {key:?}, which Secret {secret} does not have"
                                ),
                            );
                        }
                    }
                }
            }
            // Nothing for others, and stated: the kubelet's default is 0644.
            match v["secret"]["defaultMode"].as_i64() {
                Some(mode) if mode & 0o007 == 0 => {}
                Some(mode) => r.fail(
                    &vat,
                    format_args!("needs a defaultMode without access for others (got {mode:#o})"),
                ),
                None => r.fail(
                    &vat,
                    "needs a defaultMode without access for others (the default is 0644)",
                ),
            }
        }
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str()
            && find(objects, "PersistentVolumeClaim", claim).is_none()
        {
            r.fail(
                &vat,
                format_args!("uses claim {claim}, which is not defined in {K8S}"),
            );
        }
        let mounted = containers(pod).any(|(_, c)| {
            items(&c["volumeMounts"])
                .iter()
                .any(|m| m["name"].as_str() == Some(name.as_str()))
        });
        if !mounted {
            r.fail(&vat, "is mounted by no container");
        }
    }

    let pod_non_root = pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true);
    for (what, c) in containers(pod) {
        let cname = c["name"].as_str().unwrap_or("?");
        let cat = format!("{at}: {what} {cname}");
        let cimage = c["image"].as_str().unwrap_or("");
        if w.obj.kind == "Deployment" {
            match image {
                Some(i) if cimage != i => r.fail(
                    &cat,
                    format_args!("runs image {cimage:?}, not {i:?} (compose.yaml)"),
                ),
                _ => {}
            }
        }
        // The restricted Pod Security Standard, and a read-only root.
        let sc = &c["securityContext"];
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            r.fail(
                &cat,
                "needs securityContext.allowPrivilegeEscalation: false",
            );
        }
        if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
            r.fail(&cat, "needs securityContext.readOnlyRootFilesystem: true");
        }
        if !items(&sc["capabilities"]["drop"])
            .iter()
            .any(|d| d.as_str() == Some("ALL"))
        {
            r.fail(&cat, "needs securityContext.capabilities.drop: [ALL]");
        }
        if !pod_non_root && sc["runAsNonRoot"].as_bool() != Some(true) {
            r.fail(&cat, "needs runAsNonRoot: true (pod or container)");
        }
        // Probes name ports the container has; gRPC probes ask our service.
        let ports = ports_of(c);
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let p = &c[probe];
            if p.is_badvalue() {
                continue;
            }
            let grpc = &p["grpc"];
            if !grpc.is_badvalue() {
                // grpc.port is a number (Kubernetes has no named gRPC port).
                if !matches!(grpc["port"], Yaml::Integer(_)) || !port_exists(&grpc["port"], &ports)
                {
                    r.fail(
                        &cat,
                        format_args!(
                            "{probe} probes gRPC port {}, which is not a containerPort",
                            scalar(&grpc["port"]).unwrap_or_default()
                        ),
                    );
                }
                if let Some(s) = grpc["service"].as_str()
                    && !s.is_empty()
                    && s != HEALTH_SERVICE
                {
                    r.fail(
                        &cat,
                        format_args!(
                            "{probe} asks the health of {s:?}, which the server does not report"
                        ),
                    );
                }
            }
            for kind in ["httpGet", "tcpSocket"] {
                let port = &p[kind]["port"];
                if !port.is_badvalue() && !port_exists(port, &ports) {
                    r.fail(
                        &cat,
                        format_args!(
                            "{probe} {kind} port {} is not a port of the container",
                            scalar(port).unwrap_or_default()
                        ),
                    );
                }
            }
        }
        // Mounts: each has its volume; note where paths come from.
        let mounts: Vec<(&str, &str, bool)> = items(&c["volumeMounts"])
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or(""),
                    m["mountPath"].as_str().unwrap_or(""),
                    m["readOnly"].as_bool() == Some(true),
                )
            })
            .collect();
        for (name, _, _) in &mounts {
            if !volumes.contains_key(*name) && !templates.contains(*name) {
                r.fail(
                    &cat,
                    format_args!("mounts {name:?}, which is not a volume of the pod"),
                );
            }
        }
        let env: BTreeMap<String, String> = items(&c["env"])
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    scalar(&e["value"]).unwrap_or_default(),
                ))
            })
            .collect();
        for k in env.keys() {
            check_env_name(&cat, k, known_env, r);
        }

        // A breachcheck server: its config, index and key are where the
        // config says, read-only, and a bucket-only one holds no secret.
        let args: Vec<String> = items(&c["command"])
            .iter()
            .chain(items(&c["args"]))
            .filter_map(scalar)
            .collect();
        if Some(cimage) != image || !args.iter().any(|a| a == "serve") {
            continue;
        }
        let mount_of = |path: &str| {
            mounts
                .iter()
                .filter(|m| under(path, m.1))
                .max_by_key(|m| m.1.len())
                .copied()
        };
        match args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1))
        {
            None => r.fail(&cat, "serves without --config"),
            Some(config) => match mount_of(config) {
                None => r.fail(
                    &cat,
                    format_args!("reads {config}, which no volume provides"),
                ),
                Some((vol, dir, _)) => {
                    let file = config.trim_start_matches(dir).trim_start_matches('/');
                    if let Some(cm) = volumes
                        .get(vol)
                        .and_then(|v| v["configMap"]["name"].as_str())
                        && find(objects, "ConfigMap", cm)
                            .is_some_and(|o| o.y["data"][file].is_badvalue())
                    {
                        r.fail(
                            &cat,
                            format_args!("reads {config}, but ConfigMap {cm} has no key {file}"),
                        );
                    }
                }
            },
        }
        if let Some(index) = &server.index {
            match mount_of(index) {
                None => r.fail(
                    &cat,
                    format_args!("has no volume at {index} (server.toml `index`)"),
                ),
                Some((vol, _, read_only)) => {
                    let claim_ro = volumes.get(vol).is_some_and(|v| {
                        v["persistentVolumeClaim"]["readOnly"].as_bool() == Some(true)
                    });
                    if !read_only || !claim_ro {
                        r.fail(&cat, format_args!("mounts the index volume {vol} writable (mount and claim need readOnly: true)"));
                    }
                }
            }
        }
        let bucket_only = env.get(BUCKETS_ONLY).is_some_and(|v| v == "true");
        let secrets: Vec<&String> = volumes
            .iter()
            .filter(|(_, v)| !v["secret"].is_badvalue())
            .map(|(k, _)| k)
            .collect();
        if bucket_only && !secrets.is_empty() {
            r.fail(&at, format_args!("is bucket-only but has Secret volumes {secrets:?} (the key never goes to bucket replicas)"));
        }
        if let (false, Some(key)) = (bucket_only, &server.key)
            && mount_of(key).is_none()
        {
            r.fail(
                &cat,
                format_args!("evaluates but nothing is mounted at {key} (server.toml `key`)"),
            );
        }
    }
}

fn check_kustomization(root: &Path, image: Option<&str>, r: &mut Report) {
    let file = format!("{K8S}/kustomization.yaml");
    let Some(text) = read(root, &file, r) else {
        return;
    };
    let Some(doc) = parse_yaml(&file, &text, r).into_iter().next() else {
        r.fail(&file, "is empty");
        return;
    };
    let listed: BTreeSet<String> = items(&doc["resources"])
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = k8s_files(root, r).into_iter().collect();
    for f in &present {
        // An example (placeholder) object must never be applied over the
        // real one: the example Secret would replace the key.
        let example = f.ends_with(".example.yaml");
        match (example, listed.contains(f)) {
            (false, false) => r.fail(&file, format_args!("does not list {f}")),
            (true, true) => r.fail(
                &file,
                format_args!(
                    "lists {f}: applying it would overwrite the real object with a placeholder"
                ),
            ),
            _ => {}
        }
    }
    for f in listed.difference(&present) {
        r.fail(&file, format_args!("lists {f}, which is not in {K8S}"));
    }
    if let Some((repo, tag)) = image.and_then(|i| i.rsplit_once(':')) {
        let entry = items(&doc["images"])
            .iter()
            .find(|i| i["name"].as_str() == Some(repo));
        match entry {
            None => r.fail(&file, format_args!("has no `images` entry for {repo}")),
            Some(e) => {
                if let Some(t) = scalar(&e["newTag"])
                    && t != tag
                {
                    r.fail(
                        &file,
                        format_args!("tags {repo} as {t}, compose.yaml as {tag}"),
                    );
                }
            }
        }
    }
}

// --- Dockerfile ------------------------------------------------------------------

fn check_dockerfile(root: &Path, r: &mut Report) {
    const FILE: &str = "Dockerfile";
    let Some(text) = read(root, FILE, r) else {
        return;
    };
    // Instructions, with continuation lines joined and comments dropped.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (kw, rest) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((kw.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    // The final stage: from the last FROM on.
    let last_from = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or(0);
    let runtime = &instructions[last_from..];
    match runtime.iter().rev().find(|(k, _)| k == "USER") {
        None => r.fail(FILE, "the runtime stage sets no USER: it would run as root"),
        Some((_, user)) => {
            let name = user.split(':').next().unwrap_or("");
            if name == "root" || name == "0" {
                r.fail(FILE, format_args!("the runtime stage runs as {user}"));
            }
        }
    }
    let builds: Vec<&String> = instructions
        .iter()
        .filter(|(k, rest)| k == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest)
        .collect();
    if builds.is_empty() {
        r.fail(FILE, "has no RUN … cargo build");
    }
    if builds.iter().any(|b| !b.contains("--locked")) {
        r.fail(
            FILE,
            "builds without --locked (Cargo.lock must be what is built)",
        );
    }
    let exposed: BTreeSet<&str> = runtime
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    if !exposed.contains(GRPC_PORT.to_string().as_str()) {
        r.fail(FILE, format_args!("does not EXPOSE {GRPC_PORT}"));
    }
    if !runtime
        .iter()
        .any(|(k, rest)| k == "ENTRYPOINT" && rest.contains("breachcheck-server"))
    {
        r.fail(FILE, "ENTRYPOINT is not breachcheck-server");
    }
    let ignore = read(root, ".dockerignore", r).unwrap_or_default();
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for must in ["target/", "fuzz/"] {
        if !ignored.contains(must) {
            r.fail(".dockerignore", format_args!("does not exclude {must}"));
        }
    }
}

// --- tests -----------------------------------------------------------------------

/// The checkout: this crate's parent folder.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn deploy_manifests_resolve_every_reference() {
    if let Err(errors) = check_tree(&repo_root()) {
        panic!(
            "{} problem(s) in the deployment artifacts:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
}

/// A directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (path, dest) = (entry.path(), to.join(entry.file_name()));
        if path.is_dir() {
            copy_tree(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest)?;
        }
    }
    Ok(())
}

/// Replaces the one occurrence of `from` in `root/rel`.
fn edit(root: &Path, rel: &str, from: &str, to: &str) -> std::io::Result<()> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path)?;
    assert_eq!(
        text.matches(from).count(),
        1,
        "{rel}: expected {from:?} exactly once (update this test)"
    );
    std::fs::write(&path, text.replacen(from, to, 1))
}

/// Each kind of broken reference, made in a copy of the tree, is reported
/// with its file and object; the checker does not stop at the first.
#[test]
fn a_broken_copy_of_deploy_names_each_broken_reference() -> std::io::Result<()> {
    let src = repo_root();
    let dir =
        Scratch(std::env::temp_dir().join(format!("breachcheck-deploy-{}", std::process::id())));
    let root = dir.0.as_path();
    let _ = std::fs::remove_dir_all(root);
    for d in ["deploy", "server/src", "client/src"] {
        copy_tree(&src.join(d), &root.join(d))?;
    }
    for f in ["Dockerfile", ".dockerignore"] {
        std::fs::copy(src.join(f), root.join(f))?;
    }
    assert_eq!(check_tree(root), Ok(()), "the unbroken copy must pass");

    let k8s = |f: &str| format!("{K8S}/{f}");
    edit(
        root,
        &k8s("evaluator.yaml"),
        "claimName: breachcheck-index",
        "claimName: breachcheck-indx",
    )?;
    edit(
        root,
        &k8s("buckets.yaml"),
        "periodSeconds: 5\n            failureThreshold: 60",
        "periodSeconds: 5\n            failureThreshold: 60\n            tcpSocket: { port: grcp }",
    )?;
    edit(
        root,
        &k8s("redis.yaml"),
        "      targetPort: redis\n      protocol: TCP\n---\n# The StatefulSet",
        "      targetPort: rediss\n      protocol: TCP\n---\n# The StatefulSet",
    )?;
    edit(
        root,
        &k8s("hpa.yaml"),
        "name: breachcheck-evaluator\n  minReplicas",
        "name: breachcheck-evaluatr\n  minReplicas",
    )?;
    edit(root, &k8s("kustomization.yaml"), "  - hpa.yaml\n", "")?;
    edit(
        root,
        "deploy/compose.yaml",
        "source: oprf_key\n        target: oprf.key\n    depends_on:\n      redis:\n        condition: service_healthy\n\n  evaluator-2",
        "source: oprf-key\n        target: oprf.key\n    depends_on:\n      redis:\n        condition: service_healthy\n\n  evaluator-2",
    )?;
    edit(
        root,
        "deploy/envoy.yaml",
        "cluster: evaluators\n",
        "cluster: evaluator\n",
    )?;
    edit(
        root,
        "deploy/envoy.yaml",
        "address: buckets-1, port_value: 50051",
        "address: buckets-2, port_value: 50051",
    )?;
    edit(root, "Dockerfile", "USER 10001:10001\n", "")?;

    let errors = check_tree(root).expect_err("a broken tree must fail");
    let expected: [&[&str]; 9] = [
        &[
            "deploy/k8s/evaluator.yaml",
            "Deployment/breachcheck-evaluator",
            "breachcheck-indx",
        ],
        &[
            "deploy/k8s/buckets.yaml",
            "Deployment/breachcheck-buckets",
            "startupProbe tcpSocket",
            "grcp",
        ],
        &["deploy/k8s/redis.yaml", "Service/redis", "rediss"],
        &[
            "deploy/k8s/hpa.yaml",
            "HorizontalPodAutoscaler/breachcheck-evaluator",
            "breachcheck-evaluatr",
        ],
        &["deploy/k8s/kustomization.yaml", "does not list hpa.yaml"],
        &["deploy/compose.yaml", "service evaluator-1", "oprf-key"],
        &["deploy/envoy.yaml", "route evaluate", "\"evaluator\""],
        &["deploy/envoy.yaml", "cluster replicas", "buckets-2"],
        &["Dockerfile", "USER"],
    ];
    for parts in expected {
        assert!(
            errors.iter().any(|e| parts.iter().all(|p| e.contains(p))),
            "no error mentions all of {parts:?}; got:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}
