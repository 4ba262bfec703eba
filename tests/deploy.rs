//! The deployment files, checked without a Docker engine or a Kubernetes cluster:
//! - `docker-compose.yml` is valid against the Compose Specification's schema, and the topology
//!   it describes runs: the same commands, environment and health checks started as real
//!   processes on loopback (HAProxy from Debian with `deploy/haproxy.cfg`, PostgreSQL, mutual TLS
//!   from the `certs` service's `gatehouse cert`), and a chat client talks through HAProxy over
//!   `wss://`;
//! - `deploy/Dockerfile` passes hadolint and has the shape the compose file relies on.
//!
//! The validators come from `scripts/services` (a virtualenv with check-jsonschema,
//! kubernetes-validate and hadolint; promtool): the tests that need them are in
//! `needs_deploytools`, so they fail under `CI` without them and are reported as skipped
//! elsewhere (`gatehouse_testkit::services`).

use std::process::Command;

use anyhow::{Context, Result};

/// Every check of a deployment file runs a validator of `scripts/services` (the tools'
/// virtualenv, promtool): runners skip them where those are missing
/// (`gatehouse_testkit::services`).
mod needs_deploytools {
    use std::process::Command;

    use anyhow::{Context, Result, ensure};
    use gatehouse_testkit::compose::{Kind, read_yaml, repo_root, tool};
    use gatehouse_testkit::process::gatehouse_bin;
    use gatehouse_testkit::{ChatClient, Compose};
    use serde_json::Value;

    /// The variables an operator exports before `docker compose up` (see the file's header).
    const VARS: [(&str, &str); 2] = [
        ("GATEHOUSE_JWT_SECRET", "a-deploy-test-secret-of-at-least-32-bytes"),
        ("POSTGRES_PASSWORD", "unused-here-the-local-server-trusts-loopback"),
    ];

    /// Runs a validator; its output is the failure message.
    fn run_tool(name: &str, args: &[&str]) -> Result<String> {
        let output = Command::new(tool(name)?)
            .args(args)
            .current_dir(repo_root())
            .output()
            .with_context(|| format!("running {name}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(output.status.success(), "{name} {args:?} failed:\n{text}");
        Ok(text)
    }

    fn compose_file() -> Result<Value> {
        read_yaml(&repo_root().join("docker-compose.yml"))?
            .into_iter()
            .next()
            .context("empty compose file")
    }

    #[test]
    fn the_compose_file_is_valid_against_the_compose_specification() -> Result<()> {
        run_tool(
            "check-jsonschema",
            &["--schemafile", "deploy/schema/compose-spec.json", "docker-compose.yml"],
        )?;
        // The validator itself must be able to fail: a broken copy is refused.
        let broken = std::env::temp_dir().join(format!("gatehouse-broken-compose-{}.yml", std::process::id()));
        let text = std::fs::read_to_string(repo_root().join("docker-compose.yml"))?;
        std::fs::write(
            &broken,
            text.replacen("stop_grace_period: 40s", "stop_grace_period: [40]", 1),
        )?;
        let refused = run_tool(
            "check-jsonschema",
            &[
                "--schemafile",
                "deploy/schema/compose-spec.json",
                &broken.display().to_string(),
            ],
        );
        let _ = std::fs::remove_file(&broken);
        ensure!(refused.is_err(), "a stop_grace_period list passed the schema");
        Ok(())
    }

    #[test]
    fn every_long_running_service_has_a_health_check_and_gateways_outlast_their_drain() -> Result<()> {
        let compose = compose_file()?;
        let services = compose["services"].as_object().context("services")?;
        for (name, service) in services {
            let one_shot = service["restart"] == "no";
            assert!(
                one_shot || service["healthcheck"]["test"].is_array(),
                "{name} has no health check"
            );
        }
        for gateway in ["gateway-1", "gateway-2"] {
            let service = &services[gateway];
            let drain = humantime(service["environment"]["GATEHOUSE_DRAIN"].as_str().context("a drain")?)?;
            let grace = humantime(service["stop_grace_period"].as_str().context("a grace period")?)?;
            assert!(
                grace > drain,
                "{gateway}: stop_grace_period {grace}s within the {drain}s drain"
            );
            assert_eq!(
                service["healthcheck"]["test"][4], "/readyz",
                "{gateway} is healthy only when ready"
            );
        }
        // The workers keep their history in PostgreSQL, whose data lives in a volume.
        let postgres = &services["postgres"];
        assert!(
            postgres["volumes"][0]
                .as_str()
                .is_some_and(|v| v.starts_with("pgdata:")),
            "{postgres}"
        );
        Ok(())
    }

    /// Seconds of a `30s` / `1m` duration.
    fn humantime(text: &str) -> Result<u64> {
        let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
        let number: u64 = number.parse()?;
        Ok(match unit {
            "s" => number,
            "m" => number * 60,
            other => anyhow::bail!("unit {other:?}"),
        })
    }

    #[test]
    fn the_dockerfile_passes_hadolint_builds_in_stages_and_runs_unprivileged_with_a_health_check() -> Result<()> {
        run_tool("hadolint", &["deploy/Dockerfile"])?;
        let text = std::fs::read_to_string(repo_root().join("deploy/Dockerfile"))?;
        let instructions: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let stages = instructions.iter().filter(|l| l.starts_with("FROM ")).count();
        assert!(stages >= 2, "a build stage and a small runtime stage");
        let runtime = instructions
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .map(|at| &instructions[at..])
            .unwrap_or_default();
        assert!(runtime[0].contains("-slim"), "runtime from a slim base: {}", runtime[0]);
        let user = runtime
            .iter()
            .rfind(|l| l.starts_with("USER "))
            .context("the runtime stage sets a USER")?;
        assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
        let health = runtime
            .iter()
            .find(|l| l.starts_with("HEALTHCHECK "))
            .context("the runtime stage has a HEALTHCHECK")?;
        assert!(health.contains(r#"["gatehouse", "probe"]"#), "{health}");
        let ignore = std::fs::read_to_string(repo_root().join(".dockerignore"))?;
        assert!(
            ignore.lines().any(|l| l.trim() == "target/"),
            "the build context leaves target/ out"
        );

        // The health check's command exists in the binary, and fails where nothing listens.
        let probe = Command::new(gatehouse_bin())
            .args(["probe", "--timeout", "1s"])
            .env("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:1")
            .output()?;
        assert!(!probe.status.success(), "a probe of a closed port succeeded");
        Ok(())
    }

    mod needs_haproxy_and_postgres {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_compose_topology_runs_and_a_chat_client_talks_through_haproxy_over_wss() -> Result<()> {
            let mut compose = Compose::load(&VARS)?;
            let order = compose.start_order()?;
            assert_eq!(order.first().map(String::as_str), Some("certs"), "{order:?}");
            assert_eq!(order.last().map(String::as_str), Some("haproxy"), "{order:?}");
            compose.up().await?;

            // Members are admitted by their certificates: no process holds a cluster secret, and every
            // gRPC listener speaks TLS.
            let members: Vec<String> = compose.processes.keys().cloned().collect();
            assert_eq!(
                members.len(),
                6,
                "two registries, two gateways, two workers: {members:?}"
            );
            for name in &members {
                let env = compose.environment(name)?;
                assert!(
                    !env.iter().any(|(k, _)| k == "GATEHOUSE_CLUSTER_SECRET"),
                    "{name} has a cluster secret"
                );
                assert!(env.iter().any(|(k, _)| k == "GATEHOUSE_CLUSTER_TLS_DIR"), "{name}");
            }
            for name in ["registry-1", "registry-2", "gateway-1", "gateway-2"] {
                let log = compose.processes[name].log_text();
                assert!(
                    log.lines().any(|l| l.contains("grpc") && l.contains("\"tls\":true")),
                    "{name} does not say its gRPC listener is TLS:\n{log}"
                );
            }

            // The documented way to get a token: `gatehouse token` with a worker's environment.
            let env = compose.environment("worker-1")?;
            let token = |uid: &str| -> Result<String> {
                let output = Command::new(gatehouse_bin())
                    .args(["token", "--uid", uid])
                    .envs(env.iter().cloned())
                    .output()?;
                ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                Ok(String::from_utf8(output.stdout)?.trim().to_owned())
            };
            let balancer = compose.addr("haproxy", 8443)?;
            let url = |uid: &str| -> Result<String> {
                Ok(format!("wss://localhost:{}/ws?token={}", balancer.port(), token(uid)?))
            };
            let mut bob = ChatClient::connect_tls(&url("bob")?, compose.tls()).await?;
            let mut alice = ChatClient::connect_tls(&url("alice")?, compose.tls()).await?;
            let ack = alice.send_to("bob", "through the balancer", "c1").await?;
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(bob.next_message().await?["text"], "through the balancer");
            let db = compose.database().context("the workers' database")?;
            assert_eq!(db.query("SELECT count(*) FROM messages")?, "1");

            // HAProxy spreads clients over both gateways (least connections).
            for gateway in ["gateway-1", "gateway-2"] {
                let admin = compose.admin_addr(gateway)?;
                let open = gatehouse_testkit::cluster::metric(admin, "gatehouse_gateway_connections").await?;
                assert_eq!(open, 1, "{gateway} holds one of the two clients");
            }
            // The alert rules and the dashboard name only metrics the roles export.
            let mut exported = std::collections::BTreeSet::new();
            for role in ["registry-1", "gateway-1", "worker-1"] {
                let (_, body) = gatehouse_testkit::cluster::http_get(compose.admin_addr(role)?, "/metrics").await?;
                exported.extend(metric_names(&body));
            }
            for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/dashboard.json"] {
                let used = metric_names(&std::fs::read_to_string(repo_root().join(file))?);
                assert!(used.len() >= 8, "{file} uses {used:?}");
                let unknown: Vec<&String> = used.difference(&exported).collect();
                assert!(unknown.is_empty(), "{file} names metrics no role exports: {unknown:?}");
            }

            // Every service still passes its own health check.
            for service in compose.start_order()? {
                if compose.kind(&service)? != Kind::Init
                    && let Err(why) = compose.check_health(&service).await?
                {
                    anyhow::bail!("{service} is unhealthy: {why}");
                }
            }
            Ok(())
        }
    }

    /// Every document of every file in `deploy/kubernetes`, with its file name.
    fn kubernetes_documents() -> Result<Vec<(String, Value)>> {
        let mut files: Vec<_> = std::fs::read_dir(repo_root().join("deploy/kubernetes"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        let mut documents = Vec::new();
        for file in files {
            let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
            for document in read_yaml(&file)? {
                documents.push((name.clone(), document));
            }
        }
        Ok(documents)
    }

    fn find<'a>(documents: &'a [(String, Value)], kind: &str, name: &str) -> Result<&'a Value> {
        documents
            .iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} {name}"))
    }

    #[test]
    fn the_kubernetes_manifests_are_valid_against_the_kubernetes_schemas() -> Result<()> {
        let mut files: Vec<String> = std::fs::read_dir(repo_root().join("deploy/kubernetes"))?
            .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|name| name.ends_with(".yaml"))
            .map(|name| format!("deploy/kubernetes/{name}"))
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        let mut args = vec!["--strict", "--quiet"];
        args.extend(files.iter().map(String::as_str));
        run_tool("kubernetes-validate", &args)?;
        // The validator must be able to fail: a misspelt field is refused in strict mode.
        let broken = std::env::temp_dir().join(format!("gatehouse-broken-k8s-{}.yaml", std::process::id()));
        let text = std::fs::read_to_string(repo_root().join("deploy/kubernetes/30-gateway.yaml"))?;
        std::fs::write(
            &broken,
            text.replacen("terminationGracePeriodSeconds", "terminationGracePeriod", 1),
        )?;
        let refused = run_tool(
            "kubernetes-validate",
            &["--strict", "--quiet", &broken.display().to_string()],
        );
        let _ = std::fs::remove_file(&broken);
        ensure!(refused.is_err(), "a misspelt field passed the schema");
        Ok(())
    }

    /// The value of env variable `name` of a container.
    fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
    }

    /// The port number of the container port called `name`.
    fn port_named(container: &Value, name: &str) -> Option<u64> {
        container["ports"].as_array()?.iter().find(|p| p["name"] == name)?["containerPort"].as_u64()
    }

    #[test]
    fn kubernetes_gateways_drain_within_their_grace_period_and_every_role_probes_its_admin_listener() -> Result<()> {
        let documents = kubernetes_documents()?;
        let registry = find(&documents, "StatefulSet", "gatehouse-registry")?;
        let headless = find(&documents, "Service", "gatehouse-registry")?;
        assert_eq!(
            headless["spec"]["clusterIP"], "None",
            "the registries' Service is headless"
        );
        assert_eq!(registry["spec"]["serviceName"], "gatehouse-registry");
        let replicas = registry["spec"]["replicas"].as_u64().context("registry replicas")?;
        let registries: Vec<String> = (0..replicas)
            .map(|i| format!("gatehouse-registry-{i}.gatehouse-registry:7000"))
            .collect();

        let roles = [
            ("StatefulSet", "gatehouse-registry", "gatehouse-tls-registry"),
            ("Deployment", "gatehouse-gateway", "gatehouse-tls-gateway"),
            ("Deployment", "gatehouse-worker", "gatehouse-tls-worker"),
        ];
        for (kind, name, tls_secret) in roles {
            let workload = find(&documents, kind, name)?;
            let pod = &workload["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            // Probes on the admin port, which is where the role's admin listener binds.
            let admin = env_of(container, "GATEHOUSE_ADMIN_LISTEN").context("an admin listener")?;
            let admin_port: u64 = admin.rsplit(':').next().unwrap_or_default().parse()?;
            assert_eq!(port_named(container, "admin"), Some(admin_port), "{name}");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
            assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin", "{name}");
            // Unprivileged, and only its own role's key.
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            let secrets: Vec<&str> = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["secret"]["secretName"].as_str())
                .collect();
            assert!(secrets.contains(&tls_secret), "{name} mounts {secrets:?}");
            assert!(
                !secrets
                    .iter()
                    .any(|s| s.starts_with("gatehouse-tls-") && *s != tls_secret),
                "{name} mounts another role's key: {secrets:?}"
            );
            find(&documents, "Secret", tls_secret)?;
            // Members attach to every registry replica by its stable name.
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if kind == "Deployment" {
                let list = args
                    .iter()
                    .position(|a| *a == "--registry")
                    .and_then(|at| args.get(at + 1))
                    .context("a registry list")?;
                assert_eq!(*list, registries.join(","), "{name}");
            }
        }

        let gateway = find(&documents, "Deployment", "gatehouse-gateway")?;
        let pod = &gateway["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let pause: u64 = container["lifecycle"]["preStop"]["exec"]["command"][1]
            .as_str()
            .context("a pre-stop pause")?
            .parse()?;
        let drain = humantime(env_of(container, "GATEHOUSE_DRAIN").context("a drain")?)?;
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .context("a grace period")?;
        assert!(
            grace > pause + drain,
            "grace {grace}s ≤ pause {pause}s + drain {drain}s"
        );
        let budget = find(&documents, "PodDisruptionBudget", "gatehouse-gateway")?;
        assert_eq!(
            budget["spec"]["selector"]["matchLabels"],
            gateway["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
                .as_str()
                .map(|n| serde_json::json!({"app.kubernetes.io/name": n}))
                .unwrap_or_default(),
            "the budget covers the gateway pods"
        );
        let scaler = find(&documents, "HorizontalPodAutoscaler", "gatehouse-worker")?;
        assert_eq!(scaler["spec"]["scaleTargetRef"]["name"], "gatehouse-worker");
        // The worker takes its keys from the secrets, never from the manifest.
        let worker = &find(&documents, "Deployment", "gatehouse-worker")?["spec"]["template"]["spec"]["containers"][0];
        for variable in ["GATEHOUSE_JWT_SECRET", "GATEHOUSE_DATABASE_URL"] {
            let entry = worker["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == variable)
                .with_context(|| format!("worker sets {variable}"))?;
            let secret = entry["valueFrom"]["secretKeyRef"]["name"]
                .as_str()
                .context("from a secret")?;
            find(&documents, "Secret", secret)?;
        }
        Ok(())
    }

    #[test]
    fn the_alert_rules_pass_promtool_and_their_unit_tests() -> Result<()> {
        let promtool = tool("promtool")?;
        for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
            let output = Command::new(&promtool)
                .args(args)
                .current_dir(repo_root().join("deploy/prometheus"))
                .output()?;
            ensure!(
                output.status.success(),
                "promtool {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    #[test]
    fn the_grafana_dashboard_is_what_its_generator_writes() -> Result<()> {
        let committed = std::fs::read_to_string(repo_root().join("deploy/grafana/dashboard.json"))?;
        let output = Command::new(tool("python3")?)
            .arg(repo_root().join("deploy/grafana/dashboard.py"))
            .output()?;
        ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let written = std::fs::read_to_string(repo_root().join("deploy/grafana/dashboard.json"))?;
        assert_eq!(
            committed, written,
            "deploy/grafana/dashboard.json is stale: run dashboard.py"
        );
        let dashboard: Value = serde_json::from_str(&written)?;
        let queries = dashboard["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .count();
        assert!(queries >= 20, "{queries} queries");
        Ok(())
    }

    /// Every `gatehouse_…` metric name in a text, histogram series reduced to their family.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("gatehouse_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_owned();
            names.insert(family);
        }
        names
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_certificate_is_rotated_in_place_with_sighup_and_clients_stay_connected() -> Result<()> {
    // docs/operations.md, "Certificate rotation": overwrite the files the gateway was started
    // with, then SIGHUP (or wait for the file check); nothing restarts.
    let old = gatehouse_testkit::TestTls::generate()?;
    let new = gatehouse_testkit::TestTls::generate()?;
    let live = gatehouse_testkit::TestTls::generate()?;
    for name in ["server.pem", "server-key.pem"] {
        std::fs::copy(old.file(name), live.file(name))?;
    }
    let mut cluster = gatehouse_testkit::Cluster::builder()
        .gateways(1)
        .workers("echo", 1)
        .tls(&live)
        .start()
        .await?;
    let url = cluster.ws_url(0);
    let mut before = gatehouse_testkit::WsClient::connect_tls(&url, &old).await?;
    before.send_text("old certificate").await?;
    assert_eq!(before.recv_text().await?, "old certificate");

    // The documented rotation: write the new files in place, then `kill -HUP <gateway pid>`.
    for name in ["server.pem", "server-key.pem"] {
        let staged = live.dir().join(format!("{name}.new"));
        std::fs::copy(new.file(name), &staged)?;
        std::fs::rename(&staged, live.file(name))?;
    }
    let pid = cluster.gateways[0].pid().context("gateway running")?;
    let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
    assert!(status.success());
    cluster.gateways[0]
        .wait_for_log("certificate reloaded", std::time::Duration::from_secs(10))
        .await?;

    let mut after = gatehouse_testkit::WsClient::connect_tls(&url, &new).await?;
    after.send_text("new certificate").await?;
    assert_eq!(after.recv_text().await?, "new certificate");
    assert!(
        gatehouse_testkit::WsClient::connect_tls(&url, &old).await.is_err(),
        "a client trusting only the old CA still got through"
    );
    // The connection made before the rotation was not touched.
    before.send_text("still here").await?;
    assert_eq!(before.recv_text().await?, "still here");
    Ok(())
}
