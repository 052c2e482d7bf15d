//! A kubeconfig's `proxy-url` (corporate clusters reached through an HTTP
//! proxy): certpin's operator and its cluster commands talk to the API
//! server through it. The proxy here is a small CONNECT proxy on loopback
//! that records each tunnel it opens.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(90);

/// A CONNECT proxy on loopback; `tunnels` lists each target it connected.
struct Proxy {
    port: u16,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        Proxy { port, tunnels }
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

/// Answers one CONNECT, then copies bytes both ways until either side ends.
fn tunnel(client: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let Some(target) = request
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split(' ').next())
    else {
        let _ = (&client).write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n");
        return;
    };
    seen.lock().unwrap().push(target.to_string());
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = (&client).write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut up_read, mut client_write) = (upstream.try_clone().unwrap(), client);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut (&upstream));
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
}

/// The test bed's kubeconfig with every cluster reached through `proxy`,
/// and the API server's host:port.
fn proxied_kubeconfig(proxy: &Proxy, tag: &str) -> (std::path::PathBuf, String) {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG (eval \"$(scripts/testbed env)\")");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut config: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    let mut server = String::new();
    for c in config["clusters"].as_sequence_mut().unwrap() {
        let cluster = c["cluster"].as_mapping_mut().unwrap();
        server = cluster["server"].as_str().unwrap().to_string();
        cluster.insert(
            "proxy-url".into(),
            format!("http://127.0.0.1:{}", proxy.port).into(),
        );
    }
    let out = std::env::temp_dir().join(format!(
        "certpin-proxied-{tag}-{}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&out, yaml_serde::to_string(&config).unwrap()).unwrap();
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    (out, host_port.to_string())
}

#[tokio::test]
async fn the_operator_reaches_the_api_server_through_the_kubeconfigs_proxy() {
    let ns = TestNamespace::new("proxy").await;
    install_crd(&ns.client).await;
    put_cert_secret(&ns).await;
    create_deployment(&ns, &deployment("app", 1, &["main"])).await;
    let proxy = Proxy::start();
    let (kubeconfig, api_server) = proxied_kubeconfig(&proxy, &ns.name);
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    let _op = Operator::start_with_env(&ns.name, "", &[], &[("KUBECONFIG", &kubeconfig)]);
    let set: ClientCertificateSet = serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": "s"},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "client",
            "pkcs12": {"secretName": "cert", "key": "certificate.pfx"},
            "password": {"secretName": "cert", "key": "password"},
            "pinTo": ["api.example.com"]}]}
    }))
    .unwrap();
    ns.api::<ClientCertificateSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap();
    wait_until(&ns.api::<ClientCertificateSet>(), "s", T, "Ready", ready).await;
    let wired = ns.api::<Deployment>().get("app").await.unwrap();
    assert!(template_hash(&wired).is_some(), "the app is wired");
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == api_server),
        "every connection to {api_server} through the proxy: {tunnels:?}"
    );

    // certpin's cluster commands read the same kubeconfig.
    let before = proxy.tunnels().len();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_certpin"))
        .args(["status", "-n", &ns.name])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(
        proxy.tunnels().len() > before,
        "certpin status bypassed the proxy"
    );

    // A proxy that is not there: the command fails rather than going direct.
    let dead = Proxy {
        port: free_port(),
        tunnels: Arc::default(),
    };
    let (unreachable, _) = proxied_kubeconfig(&dead, &format!("{}-dead", ns.name));
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_certpin"))
        .args(["status", "-n", &ns.name])
        .env("KUBECONFIG", &unreachable)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
}
